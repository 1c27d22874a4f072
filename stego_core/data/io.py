"""Reading images and label maps from disk, with errors that name the file and the fix."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .label_maps import IGNORE, apply_label_map
from .matfiles import read_mat
from .transforms import resize_center_crop_geometry

__all__ = ["check_image", "check_label", "check_label_ids", "label_value_counts", "load_image", "load_label",
           "load_resized_image", "read_id_map"]

logger = logging.getLogger(__name__)

_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError)
_SINGLE_CHANNEL = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_SHOW = 10  # how many offending ids an error lists
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_SWAPS_AXES = {5, 6, 7, 8}
LARGE_IMAGE_PIXELS = 4096 * 4096  # `load_resized_image` decodes larger JPEGs at a reduced scale


@dataclass(frozen=True)
class _Decoded:
    """A decoded file in its stored orientation, possibly at a reduced JPEG scale.

    ``size``: the full stored ``(W, H)``; ``box``: the part of ``image`` that covers the whole
    file (``image`` may be a few pixels larger after DCT scaling); ``orientation``: EXIF 1..8.
    """

    image: Image.Image
    size: tuple[int, int]
    box: tuple[float, float, float, float]
    orientation: int

    @property
    def upright_size(self) -> tuple[int, int]:
        return self.size[::-1] if self.orientation in _SWAPS_AXES else self.size

    def upright(self, img: Image.Image) -> Image.Image:
        method = _TRANSPOSE.get(self.orientation)
        return img if method is None else img.transpose(method)


def _decode(path: Path, what: str, *, min_side: int | None = None, above_pixels: int = 0) -> _Decoded:
    """Open and fully decode ``path`` (PIL is lazy); errors name the file and the fix.

    With ``min_side``, a JPEG of more than ``above_pixels`` pixels is decoded at the smallest DCT
    scale (1/2, 1/4 or 1/8) that keeps both sides >= ``min_side`` (libjpeg still reads every byte,
    so a truncated file is still found).
    Images above PIL's decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels,
    ~179 MP by default) are refused before any pixel is decoded.
    """
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"cannot read {what} {path}: the file is empty (0 bytes); "
                            "fix or remove it")
        if path.suffix.lower() == ".mat":  # Potsdam tiles: an array, no EXIF, no lazy decoding
            img = read_mat(path, what)
            return _Decoded(img, img.size, (0.0, 0.0, float(img.width), float(img.height)), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. corrupt EXIF: not fatal
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # below the limit
            with Image.open(path) as img:
                size = img.size
                box = (0.0, 0.0, float(size[0]), float(size[1]))
                if min_side is not None and img.format in ("JPEG", "MPO") and size[0] * size[1] > above_pixels:
                    drafted = img.draft(img.mode, (min_side, min_side))
                    if drafted is not None:
                        box = tuple(float(v) for v in drafted[1])
                img.load()
                orientation = img.getexif().get(_ORIENTATION, 1)
                return _Decoded(img, size, box, orientation if orientation in _TRANSPOSE else 1)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; check the path or re-list the samples"
                        ) from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read {what} {path}: it is too large to decode safely ({exc}); "
                        "downscale it or remove it") from exc
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


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Any decoded mode -> 8-bit RGB (see `load_image` for the rules)."""
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


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, upright according to its EXIF orientation.

    Conversions: L / 1 / P / CMYK / YCbCr -> RGB (PIL's colour conversion); RGBA, LA, PA -> RGB by
    dropping the alpha (4th) band, which also drops the infrared band of 4-band RGB-IR tiles such as
    ISPRS Potsdam; 16-bit grayscale (``I;16``, ``I``) -> ``round(v / 257)`` in each channel;
    16-bit RGB(A) PNGs keep their high byte (PIL's reader); float (``F``) ->
    ``round(255 * clip(v, 0, 1))``.

    Raises:
        DataError: the file is missing, empty, truncated, corrupt, not an image, or above the
            decompression-bomb limit; the message is ``cannot read image <path>: <reason>; ...``.
    """
    path = Path(path)
    decoded = _decode(path, "image")
    return decoded.upright(_to_rgb(decoded.image, path))


def load_resized_image(path: str | os.PathLike, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """``resize_center_crop_image(load_image(path), size)`` in bounded memory, and the full size.

    A JPEG of more than `LARGE_IMAGE_PIXELS` (4096 x 4096) pixels whose shorter side is at least
    twice ``size`` is decoded at a reduced DCT scale (1/2, 1/4 or 1/8, see ``PIL.Image.draft``), so
    a 12000 x 12000 photo costs ~7 MB instead of ~430 MB; the crop geometry still comes from the
    full size (the resize reads exactly the part of the reduced image that covers the file), so a
    label resized with `resize_center_crop_label` stays registered. Every other image is decoded
    in full (up to the decompression-bomb limit) and the result is exactly
    ``resize_center_crop_image(load_image(path), size)``.

    Returns:
        The ``size x size`` RGB crop, and the upright full ``(W, H)`` (what a label must match).
    """
    path = Path(path)
    decoded = _decode(path, "image", min_side=size, above_pixels=LARGE_IMAGE_PIXELS)
    upright = decoded.upright_size
    new_w, new_h, left, top = resize_center_crop_geometry(*upright, size)
    target = (new_h, new_w) if decoded.orientation in _SWAPS_AXES else (new_w, new_h)
    img = _to_rgb(decoded.image, path)
    full_box = (0.0, 0.0, float(img.width), float(img.height))
    if target != img.size or decoded.box != full_box:
        img = img.resize(target, Image.Resampling.BICUBIC, box=decoded.box)
    return decoded.upright(img).crop((left, top, left + size, top + size)), upright


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """Prove that ``path`` decodes to an RGB image, cheaply; return its upright ``(W, H)``.

    JPEGs are decoded at 1/8 scale (every byte is still read, so a truncated or corrupt file is
    found); other formats in full. Memory: that decode, not a copy of it.

    Raises:
        DataError: as `load_image`.
    """
    path = Path(path)
    decoded = _decode(path, "image", min_side=1)
    _to_rgb(decoded.image.crop((0, 0, 1, 1)), path)  # the mode converts
    return decoded.upright_size


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
            f"of {num_classes} classes (plus {ignore_index} = ignore); check num_classes and "
            "label_map for this dataset, or fix the label file"
        )


def _check_label_args(num_classes: int | None, ignore_index: int) -> None:
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} collides with class ids "
                         f"0..{num_classes - 1}; use a value >= num_classes "
                         "(255 is the convention)")


def read_id_map(path: str | os.PathLike, what: str = "label") -> np.ndarray:
    """The raw (H, W) values of a single-channel PNG of ids (a label, a prediction), upright.

    Raises:
        DataError: the file is missing, empty, truncated or not an image, or has colour channels;
            the message names ``what`` and the file.
    """
    path = Path(path)
    decoded = _decode(path, what)
    img = decoded.upright(decoded.image)
    if img.mode not in _SINGLE_CHANNEL:
        raise DataError(
            f"{what} {path} has {len(img.getbands())} channels (mode {img.mode}); {what}s must be "
            "single-channel PNGs of class ids: convert colour-coded images to ids first"
        )
    raw = np.asarray(img)
    return raw.astype(np.uint8) if raw.dtype == bool else raw


def _read_label(path: Path, size: tuple[int, int] | None,
                image: str | os.PathLike | None) -> np.ndarray:
    """The raw (H, W) values of a single-channel label, upright, checked against ``size``."""
    raw = read_id_map(path, "label")
    img_size = raw.shape[::-1]
    if size is not None and img_size != tuple(size):
        named = f" ({image})" if image is not None else ""
        hint = ""
        if img_size == tuple(size)[::-1]:
            hint = (" (the transpose: labels must match the image as displayed, i.e. after the "
                    "rotation its EXIF orientation asks for; rotate the label or strip the "
                    "image's orientation tag)")
        raise DataError(f"label {path} is {img_size[0]}x{img_size[1]} (WxH) but its image is "
                        f"{size[0]}x{size[1]}{named}{hint}; labels must have the size of their image: fix "
                        "the label or remove the pair")
    return raw


def _map_label(raw: np.ndarray, path: Path, num_classes: int | None, label_map: str,
               ignore_index: int) -> np.ndarray:
    """``raw`` through ``label_map``, void rewritten to ``ignore_index``, ids range-checked."""
    label = apply_label_map(raw, label_map)
    if ignore_index != IGNORE and label_map != "identity":
        label = np.where(label == IGNORE, ignore_index, label)
    if num_classes is None:
        if (label < 0).any():
            raise DataError(f"label {path} holds negative ids after mapping {label_map!r}; "
                            "fix the label file")
    else:
        check_label_ids(label, num_classes=num_classes, ignore_index=ignore_index, source=path)
    return label


def load_label(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None,
    num_classes: int | None,
    label_map: str = "identity",
    ignore_index: int = IGNORE,
    image: str | os.PathLike | None = None,
) -> np.ndarray:
    """Read a single-channel label PNG and map its raw values to class ids.

    The label is turned upright by its own EXIF orientation (labels rarely carry one) and must
    then have the size of its image *as displayed*, i.e. after the image's EXIF orientation (the
    rule for photos whose EXIF says "rotate": draw the label on the upright picture).
    The raw values (palette indices for mode ``P``) go through ``LABEL_MAPS[label_map]``; void
    pixels come out as ``ignore_index`` (mappings emit 255, rewritten to ``ignore_index`` when it
    differs). The result is checked to lie in ``[0, num_classes) ∪ {ignore_index}``.

    Args:
        path: label file (PNG; any single-channel mode: 1, L, P, I, I;16).
        size: expected ``(W, H)`` (the upright image's ``PIL.Image.size``), or None to skip the
            check.
        num_classes: K; None skips the range check (only negative ids are rejected).
        label_map: a name in `LABEL_MAPS`.
        ignore_index: value that marks void pixels in the result; must not be a class id.
        image: the image file, named in the size error.

    Returns:
        (H, W) int64 array of class ids or ``ignore_index``.

    Raises:
        DataError: unreadable file; more than one channel; size differs from ``size`` (both files
            and sizes are named); ids out of range after mapping (the file, the offending ids and
            the class count are named).
        ValueError: ``num_classes`` < 1, ``ignore_index`` inside ``[0, num_classes)``, unknown
            ``label_map``.
    """
    _check_label_args(num_classes, ignore_index)
    path = Path(path)
    raw = _read_label(path, size, image)
    label = _map_label(raw, path, num_classes, label_map, ignore_index)
    return label.astype(np.int64, copy=False)


def check_label(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None,
    num_classes: int | None,
    label_map: str = "identity",
    ignore_index: int = IGNORE,
    image: str | os.PathLike | None = None,
) -> None:
    """`load_label`'s checks in less memory: only the distinct raw values are mapped and checked.

    Raises:
        DataError, ValueError: as `load_label`, with the same messages.
    """
    _check_label_args(num_classes, ignore_index)
    path = Path(path)
    raw = _read_label(path, size, image)
    if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
        values = np.flatnonzero(np.bincount(raw.ravel()))
    else:
        values = np.unique(raw)
    _map_label(values, path, num_classes, label_map, ignore_index)


def label_value_counts(path: str | os.PathLike, *, size: tuple[int, int] | None,
                       image: str | os.PathLike | None = None) -> dict[int, int]:
    """The raw values stored in a label file (before any mapping) and their pixel counts.

    The file is read as `load_label` reads it (single channel, ``size`` checked when given).

    Raises:
        DataError: as `load_label` (unreadable, more than one channel, size differs).
    """
    path = Path(path)
    raw = _read_label(path, size, image)
    if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
        counts = np.bincount(raw.ravel())
        values = np.flatnonzero(counts)
        return {int(v): int(counts[v]) for v in values}
    values, counts = np.unique(raw, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}
