"""Five-crop a training set (STEGO stage 1): the four corners and the centre, stored losslessly."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import DataError
from .io import load_image, load_label
from .label_maps import IGNORE
from .samples import Sample

__all__ = ["five_crop_boxes", "five_crop_dataset"]

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


def five_crop_boxes(width: int, height: int, crop_ratio: float = 0.5) -> list[Box]:
    """Boxes ``(left, top, right, bottom)`` of the five crops of a ``width x height`` image.

    Each crop is ``w x h`` with ``w = max(1, round(crop_ratio * width))`` and
    ``h = max(1, round(crop_ratio * height))`` (Python's ``round``: half to even). Order: top-left
    ``(0, 0, w, h)``, top-right ``(W - w, 0, W, h)``, bottom-left ``(0, H - h, w, H)``, bottom-right
    ``(W - w, H - h, W, H)``, centre ``(l, t, l + w, t + h)`` with ``l = (W - w) // 2``,
    ``t = (H - h) // 2``. The corner crops touch the image corners exactly; boxes follow PIL's
    ``Image.crop`` convention (right/bottom exclusive), so ``array[top:bottom, left:right]`` is
    the same crop.

    Example:
        >>> five_crop_boxes(4, 2)
        [(0, 0, 2, 1), (2, 0, 4, 1), (0, 1, 2, 2), (2, 1, 4, 2), (1, 0, 3, 1)]

    Raises:
        ValueError: ``crop_ratio`` outside (0, 1], or a non-positive dimension.
    """
    if not 0.0 < crop_ratio <= 1.0:
        raise ValueError(f"crop_ratio must be in (0, 1] (fraction of the width and height), "
                         f"got {crop_ratio}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    w = max(1, round(crop_ratio * width))
    h = max(1, round(crop_ratio * height))
    left, top = (width - w) // 2, (height - h) // 2
    return [
        (0, 0, w, h),
        (width - w, 0, width, h),
        (0, height - h, w, height),
        (width - w, height - h, width, height),
        (left, top, left + w, top + h),
    ]


def _crop_one(sample: Sample, tmp: Path, *, crop_ratio: float, num_classes: int | None,
              label_map: str, ignore_index: int) -> list[Sample]:
    """Write the five image (and label) crops of ``sample`` under ``tmp``; return their samples."""
    image = load_image(sample.image)
    label = None
    if sample.label is not None:
        label = load_label(sample.label, size=image.size, num_classes=num_classes,
                           label_map=label_map, ignore_index=ignore_index, image=sample.image)
        if label.max() > 255:
            raise DataError(f"label {sample.label} holds ids up to {int(label.max())} after "
                            f"mapping {label_map!r}; five-crop stores labels as 8-bit PNGs "
                            "(ids 0..255): pass num_classes and the right label_map")
    crops = []
    boxes = five_crop_boxes(image.width, image.height, crop_ratio)
    for i, (left, top, right, bottom) in enumerate(boxes):
        stem = f"{sample.stem}_c{i}"
        image.crop((left, top, right, bottom)).save(tmp / "images" / f"{stem}.png",
                                                    compress_level=1)
        label_path = None
        if label is not None:
            label_path = tmp / "labels" / f"{stem}.png"
            Image.fromarray(label[top:bottom, left:right].astype(np.uint8), mode="L").save(
                label_path, compress_level=1)
        crops.append(Sample(stem=stem, image=Path("images") / f"{stem}.png",
                            label=None if label_path is None else Path("labels") / f"{stem}.png"))
    return crops


def five_crop_dataset(
    samples: list[Sample],
    out_dir: str | os.PathLike,
    *,
    crop_ratio: float = 0.5,
    num_classes: int | None = None,
    label_map: str = "identity",
    ignore_index: int = IGNORE,
    progress: bool = True,
    overwrite: bool = False,
) -> list[Sample]:
    """Cut every image (and label) into its five crops and store them as lossless PNGs.

    Writes ``out_dir/images/<stem>_c{0..4}.png`` (RGB) and, for labelled samples,
    ``out_dir/labels/<stem>_c{0..4}.png`` (uint8 class ids after ``label_map``, void =
    ``ignore_index``), crop order as in `five_crop_boxes`. Everything is written to a temporary
    sibling folder that is renamed to ``out_dir`` only when all crops are done, so an interrupted
    run never leaves a half-filled ``out_dir``.

    Args:
        samples: the images to crop (e.g. from `list_samples`); stems must be unique.
        out_dir: destination folder; must not exist unless ``overwrite``.
        crop_ratio: crop side as a fraction of the image side (STEGO: 0.5).
        num_classes: K for the label range check; None skips it (ids must still fit 8 bits).
        label_map, ignore_index: as in `load_label`.
        progress: show a tqdm progress bar.
        overwrite: replace an existing ``out_dir`` (only after the new crops are complete).

    Returns:
        The ``5 * len(samples)`` new samples, in input order, with absolute paths under ``out_dir``.

    Raises:
        DataError: an image or label cannot be read or is inconsistent (the file is named);
            ``out_dir`` exists and ``overwrite`` is False.
        ValueError: empty ``samples``, duplicate stems, bad ``crop_ratio``.
    """
    if not samples:
        raise ValueError("five_crop_dataset needs at least one sample; check the input folder")
    five_crop_boxes(1, 1, crop_ratio)  # validates crop_ratio before any work
    stems = [s.stem for s in samples]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:5]
        raise ValueError(f"sample stems must be unique to name the crops, duplicated: {dup}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DataError(f"five-crop output {out_dir} already exists; delete it, choose another "
                        "folder, or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        (tmp / "images").mkdir()
        if any(s.label is not None for s in samples):
            (tmp / "labels").mkdir()
        relative: list[Sample] = []
        for sample in tqdm(samples, desc="five-crop", unit="img", disable=not progress):
            relative.extend(_crop_one(sample, tmp, crop_ratio=crop_ratio, num_classes=num_classes,
                                      label_map=label_map, ignore_index=ignore_index))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("five-cropped %d images into %s (%d crops)", len(samples), out_dir, len(relative))
    root = out_dir.resolve()
    return [Sample(stem=s.stem, image=root / s.image,
                   label=None if s.label is None else root / s.label) for s in relative]
