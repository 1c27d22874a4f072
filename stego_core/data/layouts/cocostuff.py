"""COCO-Stuff as the reference STEGO lays it out (and its published ``cocostuff.zip`` holds it).

::

    cocostuff/images/{train2017,val2017}/<id>.jpg         COCO 2017 images
    cocostuff/annotations/{train2017,val2017}/<id>.png    stuffthingmaps: fine ids 0..181, 255 unlabeled
    cocostuff/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse_7.txt   one image id per line

Subsets: ``curated`` (default) lists the images of IIC's curated COCO-Stuff split that STEGO trains
and evaluates on, 49,629 train / 2,175 val; ``full`` is every image of the 2017 folders (118,287 /
5,000), whose numbers are not comparable with the paper's.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..samples import Sample
from .base import Layout, read_id_list, sorted_unique

__all__ = ["CURATED_LIST", "CocoStuffLayout"]

CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
_DIRS = {"train": "train2017", "val": "val2017"}
_EXPECTED = {("train", "curated"): 49_629, ("val", "curated"): 2_175, ("train", "full"): 118_287, ("val", "full"): 5_000}


class CocoStuffLayout(Layout):
    splits = labelled = ("train", "val")
    subsets = ("curated", "full")

    def list_path(self, split: str) -> str:
        return f"curated/{_DIRS[split]}/{CURATED_LIST}"

    def markers(self, split: str, subset: str | None) -> list[str]:
        found = [f"images/{_DIRS[split]}", f"annotations/{_DIRS[split]}"]
        return found + ([self.list_path(split)] if subset == "curated" else [])

    def expected_count(self, split: str, subset: str | None) -> int | None:
        return _EXPECTED.get((split, subset))

    def listed_by(self, split: str, subset: str | None) -> str:
        return self.list_path(split) if subset == "curated" else f"the files in images/{_DIRS[split]}"

    def list_split(self, folder: Path, split: str, subset: str | None) -> list[Sample]:
        images, labels = folder / "images" / _DIRS[split], folder / "annotations" / _DIRS[split]
        if subset == "curated":
            ids = read_id_list(folder / self.list_path(split))
            where = folder / self.list_path(split)
        else:
            ids = [p.stem for p in images.iterdir() if p.suffix.lower() == ".jpg" and not p.name.startswith(".")]
            where = images
        if not ids:
            raise DataError(f"{where} lists no images; re-download the dataset or fix the path")
        return sorted_unique([Sample(i, images / f"{i}.jpg", labels / f"{i}.png") for i in ids], where)
