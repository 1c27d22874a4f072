"""Resize-and-centre-crop for images and labels (same geometry), and image normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .label_maps import IGNORE

__all__ = ["resize_center_crop_geometry", "resize_center_crop_image", "resize_center_crop_label",
           "image_to_tensor"]


def resize_center_crop_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where a ``W x H`` image lands when its shorter side is resized to ``size``, then cropped.

    The scale is ``s = size / min(W, H)``; the resized image is ``W' x H'`` with
    ``W' = max(size, round(W * s))`` (same for H, the shorter side gets exactly ``size``), and the
    crop starts at ``left = (W' - size) // 2``, ``top = (H' - size) // 2``.

    Returns:
        ``(W', H', left, top)``.

    Raises:
        ValueError: a non-positive size or dimension.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    short = min(width, height)
    new_w = size if width == short else max(size, round(width * size / short))
    new_h = size if height == short else max(size, round(height * size / short))
    return new_w, new_h, (new_w - size) // 2, (new_h - size) // 2


def resize_center_crop_image(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic), then take the centred ``size x size`` crop.

    Raises:
        ValueError: ``size`` < 1.
    """
    new_w, new_h, left, top = resize_center_crop_geometry(img.width, img.height, size)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return img.crop((left, top, left + size, top + size))


def _nearest_indices(src: int, dst: int) -> np.ndarray:
    """Nearest source index for each of ``dst`` output pixels: ``floor((j + 0.5) * src / dst)``.

    Pixel centres are aligned as in PIL's resize, so a label stays registered with its image.
    """
    idx = np.floor((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64)
    return np.clip(idx, 0, src - 1)


def resize_center_crop_label(
    label: np.ndarray, size: int, ignore_index: int = IGNORE
) -> np.ndarray:
    """Nearest-neighbour version of `resize_center_crop_image` for an (H, W) label map.

    Nearest sampling never blends ids, so ``ignore_index`` pixels stay void and no new id appears.
    The geometry (scale, crop offsets) is exactly the image's.

    Args:
        label: (H, W) integer array.
        size: output side.
        ignore_index: the void value; only checked for being an integer (kept for symmetry with
            the other label functions).

    Returns:
        (size, size) array of the input dtype.

    Raises:
        ValueError: ``label`` is not a 2-D integer array, or ``size`` < 1.
    """
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype.kind not in "iub":
        raise ValueError(f"label must be an (H, W) integer array, got shape {label.shape} "
                         f"dtype {label.dtype}")
    if int(ignore_index) != ignore_index:
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
    height, width = label.shape
    new_w, new_h, left, top = resize_center_crop_geometry(width, height, size)
    rows = _nearest_indices(height, new_h)[top:top + size]
    cols = _nearest_indices(width, new_w)[left:left + size]
    return label[np.ix_(rows, cols)]


def image_to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB PIL image -> normalised (3, H, W) float32 tensor: ``(x / 255 - mean[c]) / std[c]``.

    Raises:
        ValueError: the image is not RGB, or ``mean``/``std`` do not have 3 entries, or a std <= 0.
    """
    if img.mode != "RGB":
        raise ValueError(f"image_to_tensor needs an RGB image, got mode {img.mode}; "
                         "load it with load_image()")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (R, G, B), got {list(mean)} and {list(std)}")
    if min(std) <= 0:
        raise ValueError(f"std values must be > 0, got {list(std)}")
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
    return (tensor - mean_t) / std_t
