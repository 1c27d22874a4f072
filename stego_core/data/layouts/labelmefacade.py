"""LabelMeFacade (Fröhlich, Rodner, Denzler, ICPR 2010), re-packed with class-id labels.

::

    labelmefacade/images/{train,test}/<id>.jpg   the source's JPEGs (512 px on the short side)
    labelmefacade/labels/{train,test}/<id>.png   8-bit ids: 0 various, 1 building, 2 car, 3 door,
                                                 4 pavement, 5 road, 6 sky, 7 vegetation, 8 window

The source (``cvjena/labelmefacade``) ships colour PNGs and ``train.txt`` / ``test.txt``; its two
splits are ``train`` (100 images) and ``test`` (845). It has no validation split. Derived splits:

* ``all``: train and test images together (945), **without labels**: the transductive protocol of
  unsupervised segmentation papers, which train on every image unlabelled. A head trained on it has
  seen the test images, so its test numbers are not comparable with a ``train``-trained head's, and
  the pipeline trains no linear probe on it (no labels).
* ``tune_train`` / ``tune_val``: the 100 train images split 80 / 20 for choosing settings without
  touching test: ``tune_val`` is every ``TUNE_EVERY``-th image of the train split sorted by stem
  (stems 0, 5, 10, ...), ``tune_train`` the others. The stems group by LabelMe collection, so
  neighbouring shots of one street can fall on both sides: fine for ranking settings, not a clean
  generalisation estimate.
"""

from __future__ import annotations

from pathlib import Path

from ..samples import Sample
from .base import Layout, PairedFolders, sorted_unique

__all__ = ["LabelMeFacadeLayout", "TUNE_EVERY"]

TUNE_EVERY = 5  # every 5th train image (by sorted stem) is held out as tune_val: 20 of 100
_EXPECTED = {"train": 100, "test": 845, "all": 945, "tune_train": 80, "tune_val": 20}
_SOURCES = {"train": ("train",), "test": ("test",), "all": ("train", "test"),
            "tune_train": ("train",), "tune_val": ("train",)}


class LabelMeFacadeLayout(Layout):
    splits = ("train", "test", "all", "tune_train", "tune_val")
    labelled = ("train", "test", "tune_train", "tune_val")

    def __init__(self) -> None:
        self._folders = PairedFolders(("train", "test"))

    def markers(self, split: str, subset: str | None) -> list[str]:
        return [f"images/{s}" for s in _SOURCES[split]]

    def expected_count(self, split: str, subset: str | None) -> int | None:
        return _EXPECTED.get(split)

    def listed_by(self, split: str, subset: str | None) -> str:
        if split in ("tune_train", "tune_val"):
            return f"images/train, every {TUNE_EVERY}th stem -> tune_val"
        return super().listed_by(split, subset)

    def list_split(self, folder: Path, split: str, subset: str | None) -> list[Sample]:
        if split == "all":
            unlabelled = [Sample(s.stem, s.image, None)
                          for source in _SOURCES["all"] for s in self._folders.list_split(folder, source, None)]
            return sorted_unique(unlabelled, folder / "images")
        samples = self._folders.list_split(folder, _SOURCES[split][0], None)
        if split == "tune_val":
            return samples[::TUNE_EVERY]
        if split == "tune_train":
            return [s for i, s in enumerate(samples) if i % TUNE_EVERY]
        return samples
