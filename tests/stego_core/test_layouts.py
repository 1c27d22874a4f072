"""The paper's datasets read in their official layouts: listing, curated lists, class ids by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.io import loadmat

from dataset_fixtures import build_cityscapes, build_cocostuff, build_potsdam, by_hand
from stego_core.config import ExperimentConfig
from stego_core.data import DataError, dataset_samples, dataset_subset, load_image, load_label
from stego_core.stages import split_info


def mapped(sample, name):
    image = load_image(sample.image)
    return load_label(sample.label, size=image.size, num_classes=27 if name != "potsdam3" else 3, label_map=name)


# Raw id -> class id, read off the reference's tables (COCO-Stuff fine_to_coarse; Cityscapes id - 7 with
# ids < 7 void; Potsdam's 6 -> 3 merge), not computed by the code under test.
COCO_BY_HAND = {0: 9, 2: 11, 105: 23, 148: 21, 255: 255}  # person, car -> vehicle, clouds -> sky, road -> ground
CITYSCAPES_BY_HAND = {0: 255, 4: 255, 7: 0, 23: 16, 26: 19, 33: 26}
POTSDAM_BY_HAND = {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2}


def test_cocostuff_curated_lists_are_applied_by_default(tmp_path):
    fx = build_cocostuff(tmp_path, train=5, val=3, extra=2)
    for split in ("train", "val"):
        samples = dataset_samples("cocostuff27", split, tmp_path)
        assert [s.image for s in samples] == sorted(fx.images[split])  # the listed ones only, sorted by id
        assert [s.label for s in samples] == sorted(fx.labels[split])
    full = dataset_samples("cocostuff27", "train", tmp_path, subset="full")
    assert len(full) == 7 and set(fx.images["train"]) < {s.image for s in full}
    assert dataset_subset("cocostuff27", None) == "curated"
    assert len(dataset_samples("cocostuff27", "train", tmp_path, limit=2)) == 2


def test_cocostuff_labels_map_to_the_references_coarse_ids(tmp_path):
    fx = build_cocostuff(tmp_path)
    for sample in dataset_samples("cocostuff27", "val", tmp_path):
        assert np.array_equal(mapped(sample, "cocostuff27"), by_hand(fx.raw[sample.label], COCO_BY_HAND))


def test_cocostuff_without_curated_lists_says_how_to_get_them_or_opt_out(tmp_path):
    fx = build_cocostuff(tmp_path)
    (fx.folder / "curated" / "train2017" / "Coco164kFull_Stuff_Coarse_7.txt").unlink()
    with pytest.raises(DataError, match=r"curated/train2017/Coco164kFull_Stuff_Coarse_7\.txt missing "
                                        r"\(data\.subset=curated; data\.subset=full uses every image.*not comparable"):
        dataset_samples("cocostuff27", "train", tmp_path)
    assert len(dataset_samples("cocostuff27", "train", tmp_path, subset="full")) == 7
    with pytest.raises(ValueError, match=r"no subset 'all'; choose one of \['curated', 'full'\]"):
        dataset_samples("cocostuff27", "train", tmp_path, subset="all")
    with pytest.raises(ValueError, match=r"'camvid' has no subsets; leave data.subset unset"):
        dataset_subset("camvid", "full")


def test_cityscapes_official_layout_as_shipped(tmp_path):
    fx = build_cityscapes(tmp_path)
    train = dataset_samples("cityscapes27", "train", tmp_path)
    assert [s.stem for s in train] == ["aachen_000000_000019", "aachen_000001_000020",
                                       "bremen_000000_000019", "bremen_000001_000020"]
    assert [s.image for s in train] == sorted(fx.images["train"])
    assert all(s.label.name.endswith("_gtFine_labelIds.png") for s in train)  # never the _color.png beside it
    for sample in train + dataset_samples("cityscapes27", "val", tmp_path):
        assert np.array_equal(mapped(sample, "cityscapes27"), by_hand(fx.raw[sample.label], CITYSCAPES_BY_HAND))


def test_potsdam_mat_tiles_drop_the_ir_band_and_merge_to_three_classes(tmp_path):
    fx = build_potsdam(tmp_path)
    train = dataset_samples("potsdam3", "train", tmp_path)
    assert sorted(s.stem for s in train) == ["11", "20", "3", "7"]
    for sample in train:
        bands = loadmat(sample.image)["img"]
        assert bands.shape[-1] == 4
        assert np.array_equal(np.asarray(load_image(sample.image)), bands[..., :3])  # RGB kept, IR dropped
        assert np.array_equal(mapped(sample, "potsdam3"), by_hand(fx.raw[sample.label], POTSDAM_BY_HAND))
    assert len(dataset_samples("potsdam3", "val", tmp_path)) == 3
    unlabelled = dataset_samples("potsdam3", "unlabelled_train", tmp_path)
    assert len(unlabelled) == 2 and all(s.label is None for s in unlabelled)


def test_bad_mat_tiles_are_named(tmp_path):
    fx = build_potsdam(tmp_path)
    tile = fx.images["train"][0]
    tile.write_bytes(tile.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"cannot read image {tile}: not a readable \.mat file"):
        load_image(tile)
    from scipy.io import savemat

    savemat(fx.labels["val"][0], {"other": np.zeros((2, 2)), "more": np.ones(3)})
    with pytest.raises(DataError, match=r"holds no 'gt' array \(found: \['more', 'other'\]\)"):
        load_label(fx.labels["val"][0], size=None, num_classes=3, label_map="potsdam3")


def test_a_missing_layout_names_the_paths_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}/cityscapes/leftImg8bit/train, .*gtFine/train missing.*"
                                        r"cityscapes-dataset\.com"):
        dataset_samples("cityscapes27", "train", tmp_path)
    with pytest.raises(DataError, match=r"potsdam/labelled_test\.txt.*missing.*stego data download potsdam3"):
        dataset_samples("potsdam3", "val", tmp_path)


def test_runs_read_the_subset_and_label_it(tmp_path):
    from flows.pipeline import resolve_config
    from tasks.tracking import config_tags
    from tasks.views import stage_view

    build_cocostuff(tmp_path)
    cfg = ExperimentConfig.model_validate({"data": {"dataset": "cocostuff27", "data_root": str(tmp_path)}})
    resolved = resolve_config(cfg)
    assert resolved.data.subset == "curated"
    assert len(split_info(resolved, "train").samples) == 5
    full = resolve_config(cfg.model_copy(update={"data": cfg.data.model_copy(update={"subset": "full"})}))
    assert len(split_info(full, "train").samples) == 7
    assert config_tags(full.model_dump(mode="json"))["data_subset"] == "full"
    assert stage_view("crop", full)["data"]["subset"] == "full"
    assert stage_view("crop", resolved)["data"] != stage_view("crop", full)["data"]  # different images, other keys
    camvid = ExperimentConfig()
    assert "subset" not in stage_view("crop", camvid)["data"] and "data_subset" not in config_tags(camvid.model_dump())


@pytest.mark.parametrize("name,build,five_crop", [("potsdam3", build_potsdam, False), ("cityscapes27", build_cityscapes, True)])
def test_the_pipelines_readers_take_the_layouts_samples(tmp_path, name, build, five_crop):
    """The crop stage's writer and the evaluation dataset read .mat tiles and city folders as they are."""
    from stego_core.data import DATASETS, SegmentationDataset, write_crops

    build(tmp_path)
    spec = DATASETS[name]
    train = dataset_samples(name, "train", tmp_path)
    n = write_crops(train, tmp_path / "crops", resolution=16, five_crop=five_crop, crop_ratio=0.5,
                    num_classes=spec.num_classes, label_map=spec.label_map, ignore_index=255, workers=1)
    assert n == len(train) * (5 if five_crop else 1)
    labels = np.load(tmp_path / "crops" / "labels.npy")
    assert set(np.unique(labels)) <= set(range(spec.num_classes)) | {255} and (labels != 255).any()
    ds = SegmentationDataset(dataset_samples(name, "val", tmp_path), resolution=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                             num_classes=spec.num_classes, label_map=spec.label_map)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["has_label"] and (item["label"] != 255).any()


def test_subset_is_refused_where_it_means_nothing(tmp_path):
    cfg = ExperimentConfig.model_validate({"data": {"dataset": "folder", "train_images": str(tmp_path),
                                                    "eval_images": str(tmp_path), "subset": "full"}})
    with pytest.raises(ValueError, match=r"data.subset is for registered datasets with subsets \(cocostuff27\)"):
        split_info(cfg, "train")
