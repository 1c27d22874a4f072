"""Reading images and label maps from disk, with errors that name the file and the fix."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .label_maps import IGNORE, apply_label_map

__all__ = ["load_image", "load_label", "check_label_ids"]

logger = logging.getLogger(__name__)

_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError,
                Image.DecompressionBombError)
_SINGLE_CHANNEL = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_SHOW = 10  # how many offending ids an error lists


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` (PIL is lazy), applying its EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. corrupt EXIF: not fatal
            with Image.open(path) as img:
                img.load()
                return ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; check the path or re-list the samples"
                        ) from None
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {what} {path}: {exc}; fix or remove it") from exc


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit/32-bit integer or float grayscale -> 8-bit RGB.

    Integer modes (``I;16*``, ``I``) are taken as 16-bit data:
    ``v8 = round(clip(v, 0, 65535) / 257)``.
    Float mode ``F`` is taken as intensities in [0, 1]: ``v8 = round(255 * clip(v, 0, 1))``.
    """
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        scaled = np.clip(values, 0.0, 1.0) * 255.0
    else:
        scaled = np.clip(values, 0.0, 65535.0) / 257.0
    gray = np.rint(scaled).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, upright according to its EXIF orientation.

    Conversions: L / 1 / P / CMYK / YCbCr -> RGB (PIL's colour conversion); RGBA, LA, PA -> RGB by
    dropping the alpha (4th) band, which also drops the infrared band of 4-band RGB-IR tiles such as
    ISPRS Potsdam; 16-bit grayscale (``I;16``, ``I``) -> ``round(v / 257)`` in each channel;
    float (``F``) -> ``round(255 * clip(v, 0, 1))``.

    Raises:
        DataError: the file is missing, empty, truncated, corrupt or not an image; the message is
            ``cannot read image <path>: <reason>; fix or remove it``.
    """
    path = Path(path)
    img = _open(path, "image")
    if img.mode == "RGB":
        return img
    if img.mode in {"I", "F"} or img.mode.startswith("I;16"):
        return _high_bit_depth_to_rgb(img)
    if img.mode in {"RGBA", "RGBa", "LA", "La", "PA", "RGBX"}:
        return img.convert("RGBA").convert("RGB") if img.mode == "PA" else img.convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read image {path}: cannot convert mode {img.mode} to RGB ({exc}); "
                        "save it as an 8-bit RGB image") from exc


def check_label_ids(
    label: np.ndarray, *, num_classes: int, ignore_index: int, source: str | os.PathLike
) -> None:
    """Raise DataError if ``label`` has an id outside ``[0, num_classes) ∪ {ignore_index}``."""
    bad = (label < 0) | ((label >= num_classes) & (label != ignore_index))
    if bad.any():
        ids = np.unique(label[bad])
        shown = ", ".join(str(int(v)) for v in ids[:_SHOW]) + (", ..." if len(ids) > _SHOW else "")
        raise DataError(
            f"label {source} holds ids [{shown}] outside the expected range 0..{num_classes - 1} "
            f"(plus {ignore_index} = ignore); check num_classes and label_map for this dataset, "
            "or fix the label file"
        )


def load_label(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None,
    num_classes: int | None,
    label_map: str = "identity",
    ignore_index: int = IGNORE,
) -> np.ndarray:
    """Read a single-channel label PNG and map its raw values to class ids.

    The label is turned upright by its EXIF orientation like its image (labels rarely carry one).
    The raw values (palette indices for mode ``P``) go through ``LABEL_MAPS[label_map]``; void
    pixels come out as ``ignore_index`` (mappings emit 255, rewritten to ``ignore_index`` when it
    differs). The result is checked to lie in ``[0, num_classes) ∪ {ignore_index}``.

    Args:
        path: label file (PNG; any single-channel mode: 1, L, P, I, I;16).
        size: expected ``(W, H)`` (the image's ``PIL.Image.size``), or None to skip the check.
        num_classes: K; None skips the range check (only negative ids are rejected).
        label_map: a name in `LABEL_MAPS`.
        ignore_index: value that marks void pixels in the result; must not be a class id.

    Returns:
        (H, W) int64 array of class ids or ``ignore_index``.

    Raises:
        DataError: unreadable file; more than one channel; size differs from ``size`` (both sizes
            are named); ids out of range after mapping (the offending ids and the range are named).
        ValueError: ``num_classes`` < 1, ``ignore_index`` inside ``[0, num_classes)``, unknown
            ``label_map``.
    """
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} collides with class ids "
                         f"0..{num_classes - 1}; use a value >= num_classes "
                         "(255 is the convention)")
    path = Path(path)
    img = _open(path, "label")
    if img.mode not in _SINGLE_CHANNEL:
        raise DataError(
            f"label {path} has {len(img.getbands())} channels (mode {img.mode}); labels must be "
            "single-channel PNGs of class ids: convert colour-coded labels to ids first"
        )
    if size is not None and img.size != tuple(size):
        raise DataError(f"label {path} is {img.size[0]}x{img.size[1]} (WxH) but its image is "
                        f"{size[0]}x{size[1]}; labels must have the size of their image")
    raw = np.asarray(img)
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    label = apply_label_map(raw, label_map)
    if ignore_index != IGNORE and label_map != "identity":
        label = np.where(label == IGNORE, ignore_index, label)
    if num_classes is None:
        if (label < 0).any():
            raise DataError(f"label {path} holds negative ids after mapping {label_map!r}; "
                            "fix the label file")
    else:
        check_label_ids(label, num_classes=num_classes, ignore_index=ignore_index, source=path)
    return label.astype(np.int64, copy=False)
