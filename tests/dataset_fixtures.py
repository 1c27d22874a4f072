"""Tiny copies of the paper's datasets in their official layouts, built by the tests.

Each builder writes a few images and label maps with the real id conventions (COCO-Stuff fine ids
with 255 = unlabeled, Cityscapes labelIds with the void ids 0..6, Potsdam's 4-band .mat tiles and
ids 0..5) and returns what it wrote, so tests can compute the expected class ids by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 48  # large enough for a five-crop run of a patch-8 backbone at 32 px


@dataclass
class Fixture:
    root: Path  # the data root
    folder: Path  # the dataset folder under it
    images: dict[str, list[Path]] = field(default_factory=dict)  # split -> images the split lists
    labels: dict[str, list[Path]] = field(default_factory=dict)
    raw: dict[Path, np.ndarray] = field(default_factory=dict)  # label path -> raw ids written


def blocky(ids: list[int], seed: int) -> np.ndarray:
    """An (H, W) uint8 label of 8 x 8 blocks drawn from ``ids`` (each id at least once)."""
    rng = np.random.default_rng(seed)
    base = rng.choice(ids, size=(H // 8, W // 8))
    base.flat[: len(ids)] = ids
    return np.kron(base, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)


def pixels_for(label: np.ndarray, seed: int, bands: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    tone = (label.astype(np.int64) * 37) % 200
    return (tone[..., None] + rng.integers(0, 50, size=(*label.shape, bands))).astype(np.uint8)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _jpg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


COCO_IDS = [0, 2, 105, 148, 255]  # person, car, clouds, road, unlabeled


def build_cocostuff(root: Path, *, train: int = 5, val: int = 3, extra: int = 2) -> Fixture:
    """``cocostuff/`` as the reference lays it out: ``train`` / ``val`` curated images plus ``extra``
    images per split that are in the 2017 folders but not in the curated lists."""
    fx = Fixture(root, root / "cocostuff")
    for split, folder, count, offset in (("train", "train2017", train, 1), ("val", "val2017", val, 500)):
        listed = []
        for i in range(count + extra):
            stem = f"{offset + i:012d}"
            label = blocky(COCO_IDS, seed=offset + i)
            image = _jpg(fx.folder / "images" / folder / f"{stem}.jpg", pixels_for(label, offset + i))
            lab = _png(fx.folder / "annotations" / folder / f"{stem}.png", label)
            fx.raw[lab] = label
            if i < count:
                listed.append(stem)
                fx.images.setdefault(split, []).append(image)
                fx.labels.setdefault(split, []).append(lab)
        lst = fx.folder / "curated" / folder / "Coco164kFull_Stuff_Coarse_7.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("\n".join(reversed(listed)) + "\n")  # any order: the listing sorts
    return fx


CITYSCAPES_IDS = [0, 4, 7, 23, 26, 33]  # unlabeled, static (void), road, sky, car, bicycle


def build_cityscapes(root: Path) -> Fixture:
    """``cityscapes/`` as the official zips unpack: two train cities, one val city."""
    fx = Fixture(root, root / "cityscapes")
    cities = {"train": {"aachen": 2, "bremen": 2}, "val": {"frankfurt": 3}}
    seed = 0
    for split, per_city in cities.items():
        for city, count in per_city.items():
            for i in range(count):
                seed += 1
                stem = f"{city}_{i:06d}_{19 + i:06d}"
                label = blocky(CITYSCAPES_IDS, seed)
                image = _png(fx.folder / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", pixels_for(label, seed))
                lab = _png(fx.folder / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
                colour = _png(fx.folder / "gtFine" / split / city / f"{stem}_gtFine_color.png", pixels_for(label, seed))
                assert colour.exists()  # shipped beside the ids; never read as a label
                fx.images.setdefault(split, []).append(image)
                fx.labels.setdefault(split, []).append(lab)
                fx.raw[lab] = label
    return fx


POTSDAM_IDS = [0, 1, 2, 3, 4, 5]  # impervious, building, low vegetation, tree, car, clutter


def build_potsdam(root: Path) -> Fixture:
    """``potsdam/`` as IIC's preprocessing and the reference's zip hold it: 4-band .mat tiles."""
    from scipy.io import savemat

    fx = Fixture(root, root / "potsdam")
    (fx.folder / "imgs").mkdir(parents=True)
    (fx.folder / "gt").mkdir()
    lists = {"train": [3, 11, 7, 20], "val": [5, 9, 14], "unlabelled_train": [2, 8]}
    files = {"train": "labelled_train.txt", "val": "labelled_test.txt", "unlabelled_train": "unlabelled_train.txt"}
    for split, ids in lists.items():
        for i in ids:
            label = blocky(POTSDAM_IDS, seed=i)
            image = fx.folder / "imgs" / f"{i}.mat"
            savemat(image, {"img": pixels_for(label, i, bands=4)})
            fx.images.setdefault(split, []).append(image)
            if split != "unlabelled_train":
                lab = fx.folder / "gt" / f"{i}.mat"
                savemat(lab, {"gt": label.astype(np.int32)})
                fx.labels.setdefault(split, []).append(lab)
                fx.raw[lab] = label
        (fx.folder / files[split]).write_text("".join(f"{i}\n" for i in ids))
    return fx


LABELMEFACADE_IDS = [0, 1, 2, 3, 4, 5, 6, 7, 8]  # various, building, car, door, pavement, road, sky, vegetation, window


def build_labelmefacade(root: Path, *, train: int = 10, test: int = 3) -> Fixture:
    """``labelmefacade/`` as the re-packed source lies: JPEG images, 8-bit id PNGs, train and test folders.
    Stems are ``<split>_street_<i>`` so their sorted order is the order written."""
    fx = Fixture(root, root / "labelmefacade")
    for split, count, offset in (("train", train, 0), ("test", test, 100)):
        for i in range(count):
            stem, seed = f"{split}_street_{i:03d}", offset + i
            label = blocky(LABELMEFACADE_IDS, seed)
            image = _jpg(fx.folder / "images" / split / f"{stem}.jpg", pixels_for(label, seed))
            lab = _png(fx.folder / "labels" / split / f"{stem}.png", label)
            fx.images.setdefault(split, []).append(image)
            fx.labels.setdefault(split, []).append(lab)
            fx.raw[lab] = label
    return fx


def by_hand(raw: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """``raw`` ids mapped through a hand-written ``table`` (raw id -> class id); every id must be in it."""
    out = np.full(raw.shape, -1, dtype=np.int64)
    for value, cls in table.items():
        out[raw == value] = cls
    assert (out >= 0).all(), "the fixture holds an id the hand table lacks"
    return out
