"""LabelMeFacade: its splits (official and derived), its two label readings by hand, the CLI, the real data."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_fixtures import build_labelmefacade, by_hand
from flows.cli import app
from stego_core.config import ExperimentConfig
from stego_core.data import DATASETS, DataError, dataset_samples, load_image, load_label
from stego_core.stages import split_info

# Raw id -> class id, read off the dataset's README (0 various, 1 building, ..., 8 window): the default
# reading makes "various" (also the unlabelled canvas) void and shifts the others down by one.
BY_HAND_8 = {0: 255, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7}
BY_HAND_9 = {i: i for i in range(9)}
NAMES = ["various", "building", "car", "door", "pavement", "road", "sky", "vegetation", "window"]


def mapped(sample, name):
    spec = DATASETS[name]
    return load_label(sample.label, size=load_image(sample.image).size, num_classes=spec.num_classes,
                      label_map=spec.label_map, ignore_index=spec.ignore_index)


def stego(*args):
    return CliRunner().invoke(app, ["data", *map(str, args)])


def test_official_and_derived_splits(tmp_path):
    fx = build_labelmefacade(tmp_path, train=10, test=3)
    train, test = dataset_samples("labelmefacade", "train", tmp_path), dataset_samples("labelmefacade", "test", tmp_path)
    assert [s.image for s in train] == fx.images["train"] and [s.label for s in train] == fx.labels["train"]
    assert [s.image for s in test] == fx.images["test"] and [s.label for s in test] == fx.labels["test"]
    every = dataset_samples("labelmefacade", "all", tmp_path)
    assert sorted(s.image for s in every) == sorted(fx.images["train"] + fx.images["test"])
    assert all(s.label is None for s in every)  # trained on unlabelled: no probe ever sees a test label
    tune_val = dataset_samples("labelmefacade", "tune_val", tmp_path)
    tune_train = dataset_samples("labelmefacade", "tune_train", tmp_path)
    assert [s.stem for s in tune_val] == ["train_street_000", "train_street_005"]  # every 5th by sorted stem
    assert [s.stem for s in tune_train] == [f"train_street_{i:03d}" for i in (1, 2, 3, 4, 6, 7, 8, 9)]
    assert all(s.label is not None for s in tune_val + tune_train)
    assert not {s.stem for s in tune_val + tune_train} & {s.stem for s in test}  # tuning never touches test
    assert DATASETS["labelmefacade9"].splits == DATASETS["labelmefacade"].splits


@pytest.mark.parametrize("name,table", [("labelmefacade", BY_HAND_8), ("labelmefacade9", BY_HAND_9)])
def test_labels_map_by_hand(tmp_path, name, table):
    fx = build_labelmefacade(tmp_path, train=2, test=2)
    spec = DATASETS[name]
    for sample in dataset_samples(name, "train", tmp_path) + dataset_samples(name, "test", tmp_path):
        assert np.array_equal(mapped(sample, name), by_hand(fx.raw[sample.label], table))
    for raw, cls in table.items():  # the class each raw id lands on is the one the README names
        assert (cls == 255 and raw == 0) or spec.class_names[cls] == NAMES[raw]
    assert spec.colors[table[7]] == (0, 128, 0) and spec.colors[table[1]] == (128, 0, 0)  # the source's colours


def test_an_id_outside_the_nine_is_named_by_the_check_and_the_loader(tmp_path):
    fx = build_labelmefacade(tmp_path, train=5, test=2)
    ok = stego("check", "labelmefacade", "--root", tmp_path)
    assert ok.exit_code == 0, ok.output
    rows = {line.split()[0]: line.split() for line in ok.output.splitlines()[2:7]}
    assert rows["train"][1:4] == ["-", "5", "100"] and rows["test"][1:4] == ["-", "2", "845"]  # found vs the source's
    assert rows["all"][2:4] == ["7", "945"] and rows["tune_val"][2:4] == ["1", "20"]
    assert "-> void" in ok.output  # raw 0 is reported as void in the default reading
    from PIL import Image

    bad = fx.labels["test"][1]
    raw = fx.raw[bad].copy()
    raw[:8, :8] = 9
    Image.fromarray(raw).save(bad)
    out = stego("check", "labelmefacade", "--root", tmp_path, "--split", "test")
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and f"unknown ids: {bad}" in text and "[9]" in text and "(known: 0..8, 255)" in text
    with pytest.raises(DataError, match=rf"{bad.name}.*9"):
        mapped(dataset_samples("labelmefacade", "test", tmp_path)[1], "labelmefacade")


def test_missing_data_says_it_is_installed_by_hand(tmp_path):
    with pytest.raises(DataError, match=r"labelmefacade/images/test missing.*github\.com/cvjena/labelmefacade"):
        dataset_samples("labelmefacade", "test", tmp_path)
    out = stego("download", "labelmefacade", "--to", tmp_path)
    text = " ".join(out.output.split())
    assert out.exit_code == 2 and "cannot be downloaded automatically" in text and "research use only" in text
    build_labelmefacade(tmp_path, train=1, test=1)
    listing = stego("list", "--root", tmp_path)
    row = next(line for line in listing.output.splitlines() if line.startswith("labelmefacade "))
    assert "train, test, all, tune_train, tune_val" in row and "by hand" in row
    described = stego("describe", "labelmefacade", "--split", "all", "--root", tmp_path)
    assert described.exit_code == 2 and "split 'all' of 'labelmefacade' has no labels to count" in described.output


def test_the_preset_trains_on_train_and_reports_test_and_all_trains_without_labels(tmp_path):
    from stego_core.presets import build_config

    build_labelmefacade(tmp_path, train=10, test=3)
    cfg = build_config("labelmefacade-dinov2s14", overrides=[f"data.data_root={tmp_path}"])
    assert (cfg.data.dataset, cfg.data.train_split, cfg.data.eval_split) == ("labelmefacade", "train", "test")
    assert (cfg.embed.backbone, cfg.embed.eval_resolution, cfg.data.five_crop) == ("dinov2_vits14", 322, True)
    assert cfg.loss.shift_mode == build_config("camvid-dinov2s14").loss.shift_mode  # the same dinov2 recipe
    train, test = split_info(cfg, "train"), split_info(cfg, "eval")
    assert (len(train.samples), len(test.samples), test.num_classes, test.label_map) == (10, 3, 8, "labelmefacade8")
    transductive = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_split": "all"})})
    assert len(split_info(transductive, "train").samples) == 13
    assert all(s.label is None for s in split_info(transductive, "train").samples)
    from stego_core.validation import preflight

    assert preflight(cfg).sizes == {"train": 10, "eval": 3} and preflight(transductive).sizes == {"train": 13, "eval": 3}
    with pytest.raises(ValueError, match=r"has no split 'val'; choose one of \['all', 'test', 'train', 'tune_train'"):
        split_info(ExperimentConfig.model_validate({"data": {"dataset": "labelmefacade", "data_root": str(tmp_path)}}),
                   "eval")  # the config's default eval split is val, which LabelMeFacade lacks


def test_the_real_data_reads_as_registered(labelmefacade_root):
    counts = {split: len(dataset_samples("labelmefacade", split, labelmefacade_root))
              for split in ("train", "test", "all", "tune_train", "tune_val")}
    assert counts == {"train": 100, "test": 845, "all": 945, "tune_train": 80, "tune_val": 20}
    for split in ("train", "test"):
        for sample in dataset_samples("labelmefacade", split, labelmefacade_root)[::300]:
            image = load_image(sample.image)
            raw = np.asarray(load_label(sample.label, size=image.size, num_classes=9, label_map="identity"))
            assert raw.shape == (image.size[1], image.size[0]) and min(image.size) == 512
            assert set(np.unique(raw)) <= set(range(9))  # the README: no pixel is 255
            label = mapped(sample, "labelmefacade")
            assert np.array_equal(label == 255, raw == 0) and np.array_equal(label[raw > 0], raw[raw > 0] - 1)


def test_the_pipelines_readers_take_its_samples(tmp_path):
    """The crop stage's writer (five crops, unlabelled `all` or labelled `train`) and the evaluation dataset."""
    from stego_core.data import SegmentationDataset, write_crops

    build_labelmefacade(tmp_path, train=3, test=2)
    spec = DATASETS["labelmefacade"]
    for split, labelled in (("train", True), ("all", False)):
        samples = dataset_samples("labelmefacade", split, tmp_path)
        out = tmp_path / f"crops-{split}"
        n = write_crops(samples, out, resolution=16, five_crop=True, crop_ratio=0.5, num_classes=spec.num_classes,
                        label_map=spec.label_map, ignore_index=255, workers=1)
        labels = np.load(out / "labels.npy")
        assert n == 5 * len(samples) and set(np.unique(labels)) <= set(range(8)) | {255}
        assert bool((labels != 255).any()) == labelled
    ds = SegmentationDataset(dataset_samples("labelmefacade", "test", tmp_path), resolution=16, mean=(0.5,) * 3,
                             std=(0.5,) * 3, num_classes=spec.num_classes, label_map=spec.label_map)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["has_label"] and (item["label"] != 255).any()
