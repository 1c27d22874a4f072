"""The training crops (STEGO stage 1): five crops per image (the four corners and the centre) or the
whole image, resized and centre-cropped to the training resolution, stored losslessly as uint8 arrays.

The arrays hold exactly the pixels the backbone sees: the bytes :class:`SegmentationDataset` gives
for the same crop, so the embed stage (and ``train.features=recompute``) reads them without decoding.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from .dataset import SegmentationDataset
from .errors import DataError
from .io import load_image, load_label
from .label_maps import IGNORE
from .samples import Sample
from .transforms import resize_center_crop_image, resize_center_crop_label

__all__ = ["CROP_FILES", "five_crop_boxes", "write_crops"]

#: The files of a crop folder: pixels ``(N, 3, R, R)`` uint8, labels ``(N, R, R)`` uint8 (255 = void or
#: unlabelled), and one ``{"stem", "image", "box"}`` row per crop.
CROP_FILES = ("pixels.npy", "labels.npy", "index.json")

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


Crop = tuple[str, np.ndarray, np.ndarray, list[int] | None]  # stem, (3, R, R) pixels, (R, R) label, box


def _five_crops(sample: Sample, *, resolution: int, crop_ratio: float, num_classes: int | None,
                label_map: str, ignore_index: int) -> list[Crop]:
    """The five crops of ``sample``, each resized and centre-cropped to ``resolution`` (bicubic / nearest)."""
    image = load_image(sample.image)
    label = None
    if sample.label is not None:
        label = load_label(sample.label, size=image.size, num_classes=num_classes,
                           label_map=label_map, ignore_index=ignore_index, image=sample.image)
        if label.max() > 255:
            raise DataError(f"label {sample.label} holds ids up to {int(label.max())} after "
                            f"mapping {label_map!r}; crops store labels as 8-bit ids (0..255): "
                            "pass num_classes and the right label_map")
    crops = []
    for i, (left, top, right, bottom) in enumerate(five_crop_boxes(image.width, image.height, crop_ratio)):
        pixels = np.array(resize_center_crop_image(image.crop((left, top, right, bottom)), resolution))
        if label is None:
            lab = np.full((resolution, resolution), ignore_index, dtype=np.uint8)
        else:
            lab = resize_center_crop_label(label[top:bottom, left:right], resolution, ignore_index).astype(np.uint8)
        crops.append((f"{sample.stem}_c{i}", pixels.transpose(2, 0, 1), lab, [left, top, right, bottom]))
    return crops


def _whole_image(dataset: SegmentationDataset, i: int) -> list[Crop]:
    item = dataset[i]
    return [(dataset.samples[i].stem, item["image"].numpy(), item["label"].clamp(0, 255).numpy().astype(np.uint8), None)]


def write_crops(
    samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    *,
    resolution: int,
    five_crop: bool = True,
    crop_ratio: float = 0.5,
    num_classes: int | None = None,
    label_map: str = "identity",
    ignore_index: int = IGNORE,
    workers: int = 2,
    progress: bool = True,
) -> int:
    """Write the training crops of ``samples`` into ``out_dir`` (see :data:`CROP_FILES`); returns their count.

    With ``five_crop`` each image gives its five crops (order of `five_crop_boxes`), each resized so its
    shorter side is ``resolution`` (bicubic) and centre-cropped, with its label cut and resized the same
    way (nearest); otherwise each image is resized and centre-cropped whole, exactly as
    :class:`SegmentationDataset` reads it (large JPEGs at a reduced decode). ``workers`` threads decode
    ahead, in order. Unlabelled images get all-``ignore_index`` labels.

    Raises:
        DataError: an image or label cannot be read or is inconsistent (the file is named).
        ValueError: empty ``samples``, duplicate stems, bad ``crop_ratio`` or ``resolution``.
    """
    if not samples:
        raise ValueError("write_crops needs at least one sample; check the input folder")
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
    five_crop_boxes(1, 1, crop_ratio)  # validates crop_ratio before any work
    stems = [s.stem for s in samples]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:5]
        raise ValueError(f"sample stems must be unique to name the crops, duplicated: {dup}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per = 5 if five_crop else 1
    n = per * len(samples)
    if five_crop:
        def crops_of(i: int) -> list[Crop]:
            return _five_crops(samples[i], resolution=resolution, crop_ratio=crop_ratio, num_classes=num_classes,
                               label_map=label_map, ignore_index=ignore_index)
    else:
        dataset = SegmentationDataset(samples, resolution=resolution, mean=(0, 0, 0), std=(1, 1, 1),
                                      num_classes=num_classes, label_map=label_map, ignore_index=ignore_index,
                                      normalize=False)

        def crops_of(i: int) -> list[Crop]:
            return _whole_image(dataset, i)

    pixels = open_memmap(out / "pixels.npy", mode="w+", dtype=np.uint8, shape=(n, 3, resolution, resolution))
    labels = open_memmap(out / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, resolution, resolution))
    index, row = [], 0
    for i, crops in enumerate(tqdm(_in_order(crops_of, len(samples), workers), total=len(samples),
                                   desc="crops", unit="img", disable=not progress, leave=False)):
        for stem, px, lab, box in crops:
            pixels[row], labels[row] = px, lab
            index.append({"stem": stem, "image": str(samples[i].image), "box": box})
            row += 1
    pixels.flush()
    labels.flush()
    (out / "index.json").write_text(json.dumps(index, indent=1))
    logger.info("wrote %d training crops of %d images at %d px into %s", n, len(samples), resolution, out)
    return n


def _in_order(fn, n: int, workers: int, lookahead: int = 8) -> Iterator:
    """``fn(0), fn(1), ...`` computed by ``workers`` threads up to ``lookahead`` items ahead (PIL releases the GIL)."""
    if workers <= 1:
        yield from (fn(i) for i in range(n))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(fn, i) for i in range(min(n, lookahead)))
        for i in range(n):
            result = pending.popleft().result()
            if i + lookahead < n:
                pending.append(pool.submit(fn, i + lookahead))
            yield result
