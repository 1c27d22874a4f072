"""Sample listing, the dataset registry, the data root and SegmentationDataset (incl. real CamVid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stego_core.data import (
    DATASETS,
    LABEL_MAPS,
    DataError,
    DatasetSpec,
    Sample,
    SegmentationDataset,
    dataset_samples,
    list_datasets,
    list_samples,
    load_image,
    resize_center_crop_image,
    resolve_data_root,
)
from stego_core.data.layouts import PairedFolders

CAMVID = Path("/work/shared/data/camvid")
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid not available")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(path: Path, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def _label(path: Path, size=(6, 4), value=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)


def test_list_samples_pairs_by_stem_sorted(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.webp", "d.tiff", "notes.txt", ".hidden.jpg"]:
        if name.endswith(".txt"):
            (tmp_path / "img" / name).write_text("x")
        else:
            _image(tmp_path / "img" / name)
    (tmp_path / "img" / "sub").mkdir()
    _label(tmp_path / "lab" / "a.png")
    _label(tmp_path / "lab" / "c.png")
    samples = list_samples(tmp_path / "img", tmp_path / "lab")
    assert [s.stem for s in samples] == ["a", "b", "c", "d"]
    assert samples[0] == Sample("a", tmp_path / "img" / "a.PNG", tmp_path / "lab" / "a.png")
    assert samples[1].label is None and samples[2].label == tmp_path / "lab" / "c.png"
    assert [s.stem for s in list_samples(tmp_path / "img", limit=2)] == ["a", "b"]
    assert all(s.label is None for s in list_samples(tmp_path / "img"))


def test_list_samples_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"image folder .*empty holds no images"):
        list_samples(tmp_path / "empty")
    with pytest.raises(DataError, match=r"image folder .*missing does not exist"):
        list_samples(tmp_path / "missing")
    for stem in ["x1", "x2", "x3"]:
        _image(tmp_path / "img" / f"{stem}.jpg")
    _label(tmp_path / "lab" / "x2.png")
    with pytest.raises(DataError, match=r"2 of 3 images .* have no label .*\(x1, x3\)"):
        list_samples(tmp_path / "img", tmp_path / "lab", require_labels=True)
    with pytest.raises(DataError, match=r"label folder .*nolabels does not exist"):
        list_samples(tmp_path / "img", tmp_path / "nolabels")
    with pytest.raises(ValueError, match="require_labels=True needs labels_dir"):
        list_samples(tmp_path / "img", require_labels=True)
    with pytest.raises(ValueError, match="limit must be a positive"):
        list_samples(tmp_path / "img", limit=0)
    _image(tmp_path / "img" / "x1.png")
    with pytest.raises(DataError, match=r"two image files share the stem 'x1'"):
        list_samples(tmp_path / "img")


def test_registry_specs_are_consistent():
    assert list_datasets() == ["camvid", "cityscapes27", "cocostuff27", "labelmefacade", "labelmefacade9", "potsdam3"]
    assert "folder" not in DATASETS
    for spec in DATASETS.values():
        assert len(spec.class_names) == len(spec.colors) == spec.num_classes
        assert spec.label_map in LABEL_MAPS and spec.download_hint and spec.splits
        assert all(spec.label_map and LABEL_MAPS[spec.label_map](np.array([v])).item() in
                   set(range(spec.num_classes)) | {spec.ignore_index} for v in spec.raw_ids), spec.name
        assert len(set(spec.colors)) == spec.num_classes, spec.name
    camvid = DATASETS["camvid"]
    assert camvid.num_classes == 11 and camvid.label_map == "camvid11"
    assert camvid.class_names[0] == "Sky" and camvid.colors[4] == (60, 40, 222)
    assert set(camvid.splits) == {"train", "val", "test"}
    assert DATASETS["cocostuff27"].num_classes == DATASETS["cityscapes27"].num_classes == 27
    assert DATASETS["potsdam3"].num_classes == 3


def test_dataset_spec_validation():
    base = dict(name="x", num_classes=2, class_names=("a", "b"), colors=((0, 0, 0), (1, 1, 1)),
                layout=PairedFolders(("train",)), folder="x", label_map="identity", raw_ids=frozenset({0, 1}),
                download_hint="h")
    DatasetSpec(**base)
    with pytest.raises(ValueError, match="num_classes=3 but 2 class_names"):
        DatasetSpec(**{**base, "num_classes": 3})
    with pytest.raises(ValueError, match="unknown label_map 'nope'"):
        DatasetSpec(**{**base, "label_map": "nope"})
    with pytest.raises(ValueError, match="class_names must be unique"):
        DatasetSpec(**{**base, "class_names": ("a", "a")})
    with pytest.raises(ValueError, match=r"colors must be \(R, G, B\) triples"):
        DatasetSpec(**{**base, "colors": ((0, 0, 0), (0, 0, 300))})


def test_resolve_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("STEGO_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="pass data_root.*STEGO_DATA_ROOT"):
        resolve_data_root(None)
    assert resolve_data_root(tmp_path) == tmp_path
    monkeypatch.setenv("STEGO_DATA_ROOT", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    monkeypatch.setenv("STEGO_DATA_ROOT", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"data root .*gone \(from the \$STEGO_DATA_ROOT\) does not exist"):
        resolve_data_root(None)


def test_dataset_samples_errors(tmp_path):
    with pytest.raises(DataError, match=rf"not found: {tmp_path}/cocostuff/images/train2017, "
                                        r".*cocodataset\.org"):
        dataset_samples("cocostuff27", "train", tmp_path)
    with pytest.raises(ValueError, match=r"unknown dataset 'folder'; known datasets: \['camvid'"):
        dataset_samples("folder", "train", tmp_path)
    with pytest.raises(ValueError, match=r"has no split 'test'; choose one of \['train', 'unlabelled_train', 'val'\]"):
        dataset_samples("potsdam3", "test", tmp_path)


def test_dataset_samples_without_label_folder(tmp_path):
    _image(tmp_path / "camvid" / "images" / "val" / "t1.png")
    samples = dataset_samples("camvid", "val", tmp_path)
    assert samples == [Sample("t1", tmp_path / "camvid/images/val/t1.png", None)]
    _image(tmp_path / "camvid" / "labels" / "val" / "other.png")  # a labelled split: each image names its label
    assert dataset_samples("camvid", "val", tmp_path)[0].label == tmp_path / "camvid/labels/val/t1.png"


@needs_camvid
def test_dataset_samples_real_camvid():
    root = CAMVID.parent
    counts = {split: len(dataset_samples("camvid", split, root)) for split in ("train", "val", "test")}
    assert counts == {"train": 367, "val": 101, "test": 233}
    first = dataset_samples("camvid", "val", root, limit=1)[0]
    assert first.image.parent == CAMVID / "images/val" and first.label.name == f"{first.stem}.png"


@needs_camvid
def test_segmentation_dataset_on_real_camvid():
    samples = dataset_samples("camvid", "val", CAMVID.parent, limit=3)
    ds = SegmentationDataset(samples, resolution=64, mean=MEAN, std=STD, num_classes=11,
                             label_map="camvid11")
    assert len(ds) == 3
    item = ds[1]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["label"].shape == (64, 64) and item["label"].dtype == torch.int64
    assert item["index"] == 1 and item["has_label"] is True
    assert set(item["label"].unique().tolist()) <= set(range(11)) | {255}
    # undoing the normalisation gives back the resized-cropped pixels
    expected = np.asarray(resize_center_crop_image(load_image(samples[1].image), 64), dtype=np.float32)
    restored = item["image"] * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    torch.testing.assert_close(restored.permute(1, 2, 0) * 255, torch.from_numpy(expected),
                               atol=1e-3, rtol=0)
    # label: mapped raw ids, nearest-sampled at the same geometry (480x360 -> 85x64, left 10)
    raw = np.asarray(Image.open(samples[1].label)).astype(np.int64)
    rows = np.floor((np.arange(64) + 0.5) * 360 / 64).astype(int)
    cols = np.floor((np.arange(10, 74) + 0.5) * 480 / 85).astype(int)
    np.testing.assert_array_equal(item["label"].numpy(), raw[np.ix_(rows, cols)])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["label"].shape == (3, 64, 64)
    assert batch["index"].tolist() == [0, 1, 2] and batch["has_label"].tolist() == [True] * 3


def test_unlabelled_items_are_all_ignore(tmp_path):
    _image(tmp_path / "a.png", size=(10, 8))
    ds = SegmentationDataset([Sample("a", tmp_path / "a.png", None)], resolution=4, mean=MEAN, std=STD)
    item = ds[-1]
    assert item["has_label"] is False and item["index"] == 0
    assert torch.equal(item["label"], torch.full((4, 4), 255, dtype=torch.int64))
    with pytest.raises(IndexError, match="index 1 out of range for 1 samples"):
        ds[1]


def test_dataset_getitem_names_bad_files(tmp_path):
    _image(tmp_path / "a.png")
    _label(tmp_path / "a_label.png", value=40)
    ds = SegmentationDataset([Sample("a", tmp_path / "a.png", tmp_path / "a_label.png")],
                             resolution=4, mean=MEAN, std=STD, num_classes=11)
    with pytest.raises(DataError, match=r"a_label\.png holds ids \[40\]"):
        ds[0]


def test_dataset_validation(tmp_path):
    s = [Sample("a", tmp_path / "a.png", None)]
    with pytest.raises(ValueError, match="at least one sample"):
        SegmentationDataset([], resolution=4, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="resolution must be a positive"):
        SegmentationDataset(s, resolution=0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        SegmentationDataset(s, resolution=4, mean=MEAN, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown label_map 'x'"):
        SegmentationDataset(s, resolution=4, mean=MEAN, std=STD, label_map="x")
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        SegmentationDataset(s, resolution=4, mean=MEAN, std=STD, num_classes=0)
