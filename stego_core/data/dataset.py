"""A torch Dataset of resized, centre-cropped, normalised images with their labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stego_core.access import open_table, read_index

from .io import load_label, load_resized_image
from .label_maps import IGNORE, LABEL_MAPS
from .samples import Sample
from .transforms import resize_center_crop_label

__all__ = ["CropArrays", "SegmentationDataset", "normalize_pixels"]

logger = logging.getLogger(__name__)


class SegmentationDataset(Dataset):
    """Images (and labels) prepared for the backbone and for evaluation.

    Item ``i``: the image is resized so its shorter side is ``resolution`` (bicubic) and
    centre-cropped to ``R x R`` (a very large JPEG is decoded at a reduced scale first, see
    `load_resized_image`), then normalised ``(x / 255 - mean) / std``; the label goes through
    ``label_map`` and the same resize-crop with nearest sampling. Unlabelled samples get an
    all-``ignore_index`` label and ``has_label=False`` so they batch with labelled ones.

    Returns per item:
        ``{"image": (3, R, R) float32, "label": (R, R) int64, "index": i, "has_label": bool}``.
        With ``normalize=False`` the image is the ``(3, R, R)`` uint8 pixels instead, to be
        normalised later in batches (e.g. on the GPU) by :meth:`normalize_images`, bit for bit
        the same numbers.

    Raises:
        ValueError (constructor): empty samples, ``resolution`` < 1, bad mean/std, unknown
            label_map.
        DataError (``__getitem__``): unreadable or inconsistent files (the file is named).

    Example:
        >>> ds = SegmentationDataset(samples, resolution=224, mean=(0.485, 0.456, 0.406),
        ...                          std=(0.229, 0.224, 0.225), num_classes=11,
        ...                          label_map="camvid11")
        >>> ds[0]["image"].shape
        torch.Size([3, 224, 224])
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        resolution: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int | None = None,
        label_map: str = "identity",
        ignore_index: int = IGNORE,
        normalize: bool = True,
    ) -> None:
        if len(samples) == 0:
            raise ValueError("SegmentationDataset needs at least one sample; "
                             "check the image folder")
        if resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (R, G, B) with std > 0, got {list(mean)} "
                             f"and {list(std)}")
        if label_map not in LABEL_MAPS:
            raise ValueError(f"unknown label_map {label_map!r}; choose one of {sorted(LABEL_MAPS)}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        self.samples = list(samples)
        self.resolution = resolution
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.num_classes = num_classes
        self.label_map = label_map
        self.ignore_index = ignore_index
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        sample = self.samples[index]
        size = self.resolution
        image, full_size = load_resized_image(sample.image, size)  # big JPEGs: reduced decode
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # np.array: writable
        tensor = self.normalize_images(pixels) if self.normalize else pixels
        has_label = sample.label is not None
        if has_label:
            raw = load_label(sample.label, size=full_size, num_classes=self.num_classes,
                             label_map=self.label_map, ignore_index=self.ignore_index,
                             image=sample.image)
            label = torch.from_numpy(resize_center_crop_label(raw, size, self.ignore_index))
        else:
            label = torch.full((size, size), self.ignore_index, dtype=torch.int64)
        return {"image": tensor, "label": label, "index": index, "has_label": has_label}

    def normalize_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize_pixels(pixels, self.mean, self.std)


def normalize_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float32 ``(x / 255 - mean) / std`` on the pixels' device.

    The same correctly rounded float32 operations as :func:`image_to_tensor` (the 255 is a
    tensor on that device: CUDA would turn a Python scalar divisor into a reciprocal multiply).
    """
    dev = pixels.device
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32, device=dev).view(3, 1, 1)
    std_t = torch.tensor(tuple(std), dtype=torch.float32, device=dev).view(3, 1, 1)
    return (pixels.float() / torch.tensor(255.0, device=dev) - mean_t) / std_t


class CropArrays:
    """The training crops of a crop folder (:func:`~stego_core.data.write_crops`, sharded or not) as a pixel
    source for the backbone: batches of stored uint8 pixels and labels, no decoding.

    ``read_batch(start, stop)`` gives ``{"image": (B, 3, R, R) uint8, "label": (B, R, R) uint8}`` tensors;
    :meth:`normalize_images` is :class:`SegmentationDataset`'s formula, so features are bit for bit those
    of the same crops decoded from image files.
    """

    def __init__(self, folder, *, mean: Sequence[float], std: Sequence[float]) -> None:
        self.folder = folder
        self.pixels = open_table(folder, "pixels.npy")
        self.labels = open_table(folder, "labels.npy")
        if len(self.pixels) == 0:
            raise ValueError(f"the crop folder {folder} holds no crops")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.resolution = int(self.pixels.shape[-1])

    def __len__(self) -> int:
        return len(self.pixels)

    def index(self) -> list[dict]:
        return read_index(self.folder)

    def read_batch(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(np.array(self.pixels[start:stop])),
                "label": torch.from_numpy(np.array(self.labels[start:stop]))}

    def normalize_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize_pixels(pixels, self.mean, self.std)
