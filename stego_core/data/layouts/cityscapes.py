"""Cityscapes in its official layout (``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``).

::

    cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

read as shipped: every city folder, the label of an image found by its stem. The stem of a sample
is ``<city>_<seq>_<frame>``. 2,975 train / 500 val images.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..samples import Sample
from .base import Layout, sorted_unique

__all__ = ["CityscapesLayout"]

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
_EXPECTED = {"train": 2_975, "val": 500}


class CityscapesLayout(Layout):
    splits = labelled = ("train", "val")

    def markers(self, split: str, subset: str | None) -> list[str]:
        return [f"leftImg8bit/{split}", f"gtFine/{split}"]

    def expected_count(self, split: str, subset: str | None) -> int | None:
        return _EXPECTED.get(split)

    def list_split(self, folder: Path, split: str, subset: str | None) -> list[Sample]:
        images, labels = folder / "leftImg8bit" / split, folder / "gtFine" / split
        samples = []
        for city in sorted(p for p in images.iterdir() if p.is_dir()):
            for image in sorted(city.glob(f"*{IMAGE_SUFFIX}")):
                stem = image.name[: -len(IMAGE_SUFFIX)]
                samples.append(Sample(stem, image, labels / city.name / f"{stem}{LABEL_SUFFIX}"))
        if not samples:
            raise DataError(f"{images} holds no <city>/*{IMAGE_SUFFIX} images; extract leftImg8bit_trainvaltest.zip "
                            "into the dataset folder as shipped")
        return sorted_unique(samples, images)
