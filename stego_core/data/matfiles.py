"""MATLAB ``.mat`` tiles (the Potsdam tiles IIC and STEGO ship) read as PIL images.

An image tile holds an ``(H, W, C)`` uint8 array under ``img`` (C = 4 for Potsdam's RGB-IR: the
4th, infrared, band is dropped; C = 3 is RGB; a 2-D array is grayscale); a ground-truth tile holds
an ``(H, W)`` integer array of label ids under ``gt``. A file with a single array under another name
is read too. The result goes through the same checks as any PNG (`stego_core.data.io`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError

__all__ = ["MAT_KEYS", "read_mat"]

MAT_KEYS = {"image": "img", "label": "gt"}  # what -> the variable the reference's tiles use


def _array(path: Path, what: str) -> np.ndarray:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        contents = loadmat(path)
    except FileNotFoundError:
        raise
    except (MatReadError, ValueError, TypeError, OSError, EOFError, KeyError, IndexError, zlib.error) as exc:
        raise DataError(f"cannot read {what} {path}: not a readable .mat file ({exc or type(exc).__name__}); "
                        "fix or remove it") from exc
    arrays = {k: v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    key = MAT_KEYS[what]
    if key in arrays:
        return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(f"cannot read {what} {path}: it holds no {key!r} array (found: {sorted(arrays) or 'none'}); "
                    f"save the {what} under {key!r}")


def read_mat(path: str | Path, what: str) -> Image.Image:
    """The ``img`` (``what="image"``) or ``gt`` (``what="label"``) array of ``path`` as a PIL image.

    Images become 8-bit RGB (the first three bands; IR dropped) or L (2-D); labels become L (ids
    0..255) or I (32-bit ids, e.g. negative ones, which the label checks then report).

    Raises:
        DataError: unreadable or truncated file, no such array, wrong shape or dtype (file named).
    """
    path = Path(path)
    arr = _array(path, what)
    if what == "label":
        arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
        if arr.ndim != 2 or arr.dtype.kind not in "iub":
            raise DataError(f"label {path} holds a {arr.dtype} array of shape {arr.shape}; ground truth must "
                            "be an (H, W) array of integer ids")
        if arr.size and 0 <= arr.min() and arr.max() <= 255:
            return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="L")
        return Image.fromarray(np.ascontiguousarray(arr, dtype=np.int32), mode="I")
    if arr.dtype.kind not in "iub" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise DataError(f"image {path} holds {arr.dtype} values outside 0..255; tiles must be 8-bit")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L")
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]), mode="RGB")
    raise DataError(f"image {path} holds an array of shape {arr.shape}; expected (H, W, 3 or 4) bands")
