"""Pairing image files with label files by stem."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "LABEL_EXTENSION", "Sample", "exclude_samples", "list_samples"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
LABEL_EXTENSION = ".png"
_SHOW = 5  # how many stems an error message lists


@dataclass(frozen=True)
class Sample:
    """One image and its optional label map.

    Attributes:
        stem: file name without extension; unique within a dataset split.
        image: path to the RGB image.
        label: path to a single-channel PNG of raw label values, or None when unlabelled.
    """

    stem: str
    image: Path
    label: Path | None = None


def _files_by_stem(folder: Path, extensions: frozenset[str], what: str) -> dict[str, Path]:
    """Map stem -> file for the files in ``folder`` with a lower-cased suffix in ``extensions``."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        hidden = entry.name.startswith(".")
        if hidden or not entry.is_file() or entry.suffix.lower() not in extensions:
            continue
        if entry.stem in found:
            raise DataError(
                f"two {what} files share the stem {entry.stem!r}: {found[entry.stem]} and {entry}; "
                "rename or remove one of them (labels are matched to images by stem)"
            )
        found[entry.stem] = entry
    return found


def exclude_samples(samples: Iterable[Sample], exclude: Iterable[str]) -> list[Sample]:
    """``samples`` without those whose image or label path (``str(path)``) is in ``exclude``."""
    drop = set(exclude)
    if not drop:
        return list(samples)
    return [s for s in samples
            if str(s.image) not in drop and (s.label is None or str(s.label) not in drop)]


def list_samples(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    require_labels: bool = False,
    exclude: Iterable[str] = (),
) -> list[Sample]:
    """List the images of a folder, sorted by stem, each with the label PNG of the same stem.

    Images are files ending in .jpg, .jpeg, .png, .bmp, .tif, .tiff or .webp (any case); hidden
    files and sub-folders are skipped. A label is ``labels_dir/<stem>.png``; images without one get
    ``label=None`` unless ``require_labels``.

    Args:
        images_dir: folder of images.
        labels_dir: folder of label PNGs, or None for an unlabelled set.
        limit: keep only the first ``limit`` samples (after sorting), for quick runs.
        require_labels: raise if any image has no label.
        exclude: image or label paths to leave out (see `exclude_samples`), e.g. the bad files
            preflight found under ``data.bad_files=skip``; applied after ``limit``, before the
            label check.

    Raises:
        DataError: a folder is missing or not a folder, holds no images, two images share a stem,
            or (``require_labels``) some images have no label (the first few stems are listed).
        ValueError: ``limit`` < 1, or ``require_labels`` without ``labels_dir``.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples or None, got {limit}")
    if require_labels and labels_dir is None:
        raise ValueError("require_labels=True needs labels_dir; pass the folder of label PNGs")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"image folder {images_dir} does not exist or is not a folder; "
                        "check the path (and the data root)")
    images = _files_by_stem(images_dir, IMAGE_EXTENSIONS, "image")
    if not images:
        raise DataError(f"image folder {images_dir} holds no images "
                        f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                        "add images or fix the path")
    labels: dict[str, Path] = {}
    if labels_dir is not None:
        labels_dir = Path(labels_dir)
        if not labels_dir.is_dir():
            raise DataError(f"label folder {labels_dir} does not exist or is not a folder; "
                            "check the path, or pass no label folder for an unlabelled set")
        labels = _files_by_stem(labels_dir, frozenset({LABEL_EXTENSION}), "label")
    stems = sorted(images)
    if limit is not None:
        stems = stems[:limit]
    samples = exclude_samples(
        [Sample(stem=s, image=images[s], label=labels.get(s)) for s in stems], exclude)
    missing = [s.stem for s in samples if s.label is None]
    if labels_dir is not None and missing:
        shown = ", ".join(missing[:_SHOW]) + (", ..." if len(missing) > _SHOW else "")
        if require_labels:
            raise DataError(f"{len(missing)} of {len(samples)} images in {images_dir} have no label "
                            f"<stem>{LABEL_EXTENSION} in {labels_dir} ({shown}); add the labels, "
                            "remove those images, or set data.bad_files=skip to leave them out")
        logger.warning("%d of %d images in %s have no label in %s (%s)",
                       len(missing), len(samples), images_dir, labels_dir, shown)
    return samples
