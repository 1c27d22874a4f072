"""Potsdam-3 as IIC preprocessed it and the reference STEGO publishes it (``potsdam.zip``).

::

    potsdam/imgs/<id>.mat   'img': (200, 200, 4) uint8 RGB-IR (the IR band is dropped)
    potsdam/gt/<id>.mat     'gt': (200, 200) ids 0 impervious, 1 building, 2 low vegetation,
                            3 tree, 4 car, 5 clutter
    potsdam/{labelled_train,labelled_test,unlabelled_train}.txt   one id per line

Splits as STEGO reads them: ``train`` = labelled_train.txt (4,545 tiles), ``val`` =
labelled_test.txt (855), ``unlabelled_train`` = unlabelled_train.txt (3,150, no ground truth).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..samples import Sample
from .base import Layout, read_id_list, sorted_unique

__all__ = ["PotsdamLayout"]

_LISTS = {"train": "labelled_train.txt", "val": "labelled_test.txt", "unlabelled_train": "unlabelled_train.txt"}
_EXPECTED = {"train": 4_545, "val": 855, "unlabelled_train": 3_150}


class PotsdamLayout(Layout):
    splits = ("train", "val", "unlabelled_train")
    labelled = ("train", "val")

    def markers(self, split: str, subset: str | None) -> list[str]:
        return [_LISTS[split], "imgs"] + (["gt"] if split in self.labelled else [])

    def listed_by(self, split: str, subset: str | None) -> str:
        return _LISTS[split]

    def expected_count(self, split: str, subset: str | None) -> int | None:
        return _EXPECTED.get(split)

    def list_split(self, folder: Path, split: str, subset: str | None) -> list[Sample]:
        ids = read_id_list(folder / _LISTS[split])
        if not ids:
            raise DataError(f"{folder / _LISTS[split]} lists no tiles; re-download the dataset")
        labelled = split in self.labelled
        return sorted_unique([Sample(i, folder / "imgs" / f"{i}.mat", folder / "gt" / f"{i}.mat" if labelled else None)
                              for i in ids], folder / _LISTS[split])
