"""Transfer settings: the evaluation split of another dataset, its classes, and clear errors for bad ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from stego_core.presets import apply_overrides
from stego_core.stages import split_info
from stego_core.validation import preflight
from tests_helpers import synthetic_config, synthetic_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("transfer")
    synthetic_folder(root, "train", 2, 0)
    synthetic_folder(root, "val", 1, 1)
    synthetic_folder(root, "other", 3, 2, classes=5)
    return root


def to_other(data: Path, **extra):
    other = data / "other"
    return apply_overrides(synthetic_config(data), {"data.eval_dataset": "folder", "data.eval_images": str(other / "images"),
                                                    "data.eval_labels": str(other / "labels"), **extra})


def test_the_evaluation_split_is_the_other_dataset_with_its_classes(data):
    cfg = to_other(data, **{"data.eval_num_classes": 5})
    train, evaluation = split_info(cfg, "train"), split_info(cfg, "eval")
    assert (len(train.samples), train.num_classes) == (2, 3)
    assert (len(evaluation.samples), evaluation.num_classes) == (3, 5)
    assert all(s.image.parent == data / "other" / "images" for s in evaluation.samples)
    assert preflight(cfg).sizes == {"train": 2, "eval": 3}  # labels 3 and 4 are valid ids of the 5 classes


def test_bad_transfer_settings_are_named(data):
    with pytest.raises(ValueError, match=r"unknown data.eval_dataset 'nope'; known: .*camvid.*, or 'folder'"):
        split_info(apply_overrides(synthetic_config(data), {"data.eval_dataset": "nope"}), "eval")
    camvid_to_folder = to_other(data, **{"data.dataset": "camvid", "data.num_classes": None})
    with pytest.raises(ValueError, match="data.eval_dataset='folder' with labels needs data.eval_num_classes"):
        split_info(camvid_to_folder, "eval")
    with pytest.raises(ValueError, match=r"other/labels/other0\d.png.*(id|class)"):
        preflight(to_other(data, **{"data.eval_num_classes": 3}))  # the folder's labels hold ids 3 and 4
