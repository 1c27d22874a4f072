"""Class maps as pictures: cluster ids -> matched class ids, class colours, blends and a legend.

Shared by the run figures (:mod:`tasks.figures`) and the predictions of new images
(:mod:`stego_core.inference`), so both show a class in the same colour.

* :func:`palette`: ``n`` fixed colours (custom folders, raw cluster ids).
* :func:`class_colours`: a registered dataset's colours, else the fixed palette.
* :func:`class_ids_from_clusters`: ``assignment[cluster ids]`` with unmatched clusters as void.
* :func:`colorize` / :func:`blend`: ids -> RGB, and RGB over an image.
* :func:`with_legend`: an image with a strip below it naming each listed colour.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VOID_COLOUR = np.array([0, 0, 0], dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours ``(n, 3)`` uint8 (deterministic)."""
    rng = np.random.default_rng(12345)
    return rng.integers(40, 256, size=(max(n, 1), 3), dtype=np.uint8)


def class_colours(dataset: str, num_classes: int) -> np.ndarray:
    """The registered dataset's class colours ``(C, 3)``; a fixed palette for custom folders."""
    from stego_core.data import DATASETS

    spec = DATASETS.get(dataset)
    if spec is not None and len(spec.colors) == num_classes:
        return np.asarray(spec.colors, dtype=np.uint8)
    return palette(num_classes)


def class_ids_from_clusters(pred: np.ndarray, assignment: Sequence[int] | None, ignore_index: int = 255) -> np.ndarray:
    """Map cluster ids to matched class ids: ``out[p] = assignment[pred[p]]``; unmatched clusters
    (assignment ``-1``) become ``ignore_index``. ``assignment=None`` (a linear probe) keeps ``pred``.

    Raises:
        ValueError: a predicted id has no entry in ``assignment``.
    """
    pred = np.asarray(pred, dtype=np.int64)
    if assignment is None:
        return pred
    table = np.asarray(assignment, dtype=np.int64)
    if pred.size and pred.max() >= len(table):
        raise ValueError(f"class_ids_from_clusters: cluster id {int(pred.max())} but the assignment has "
                         f"{len(table)} entries; pass the assignment of the same method's metrics")
    out = table[pred]
    out[out < 0] = ignore_index
    return out


def colorize(ids: np.ndarray, colours: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 colours; void / out-of-range ids are black.

    Raises:
        ValueError: ``colours`` is not ``(C, 3)``.
    """
    colours = np.asarray(colours, dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"colorize: colours must be (C, 3) RGB, got shape {colours.shape}")
    ids = np.asarray(ids, dtype=np.int64)
    table = np.concatenate([colours, VOID_COLOUR[None]])
    idx = np.where((ids >= 0) & (ids < len(colours)) & (ids != ignore_index), ids, len(colours))
    return table[idx]


def blend(image: np.ndarray, colour_map: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colour_map`` as uint8 (both ``(H, W, 3)``)."""
    if image.shape != colour_map.shape:
        raise ValueError(f"blend: image {image.shape} and colour map {colour_map.shape} differ; resize one first")
    return ((1 - alpha) * image.astype(np.float32) + alpha * colour_map.astype(np.float32)).round().astype(np.uint8)


def palette_image(ids: np.ndarray, colours: np.ndarray) -> Image.Image:
    """``(H, W)`` uint8 ids as a palette ("P") PNG image: the pixel values stay the ids, viewers show
    ``colours[id]`` (ids without a colour, e.g. void 255, show black)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(colours, dtype=np.uint8)[:255]
    table[:len(colours)] = colours
    img = Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="P")
    img.putpalette(table.reshape(-1).tolist())
    return img


def with_legend(image: np.ndarray, entries: Sequence[tuple[str, Sequence[int]]]) -> np.ndarray:
    """``image`` ``(H, W, 3)`` with a white strip below it: a swatch and a label per ``(label, rgb)``
    entry, laid out left to right and wrapped to the image's width (text scaled with the width; a
    narrow image gets a strip as wide as its longest label).
    No entries: the image unchanged."""
    if not entries:
        return np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    size = int(np.clip(round(width / 45), 11, 40))  # readable on a thumbnail and on a 4000-px photo
    font = ImageFont.load_default(size=size)  # Pillow's bundled font (a bitmap one without FreeType)
    row_h, swatch, gap = size + 6, size, size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    spans = [swatch + 6 + int(probe.textlength(label, font=font)) for label, _ in entries]
    strip = max(width, max(spans) + 8)  # a narrow image gets a wider strip: every label is whole
    rows, x = [[]], 0
    for entry, span in zip(entries, spans):
        if rows[-1] and x + span > strip - 4:
            rows.append([])
            x = 0
        rows[-1].append((entry, x))
        x += span + gap
    canvas = Image.new("RGB", (strip, height + row_h * len(rows) + 6), "white")
    canvas.paste(Image.fromarray(np.asarray(image, dtype=np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = height + 3 + r * row_h
        for (label, rgb), x in row:
            draw.rectangle([x + 2, y + 3, x + 2 + swatch, y + 3 + swatch], fill=tuple(int(v) for v in rgb), outline="black")
            draw.text((x + 6 + swatch, y + 3), label, fill="black", font=font)
    return np.asarray(canvas)
