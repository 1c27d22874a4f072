"""Cache-key views: each stage is keyed on exactly the config it reads."""
import pytest

from stego_core.config import ExperimentConfig
from stego_core.presets import build_config
from tasks.views import STAGE_SECTIONS, config_from_view, stage_view


def test_view_round_trips_to_the_fields_the_stage_reads():
    cfg = build_config("camvid-quick", overrides=["train.lr=0.003", "seed=4", "crf.iterations=2"])
    view = stage_view("train_head", cfg)
    back, args = config_from_view(view)
    assert back.train == cfg.train and back.loss == cfg.loss and back.seed == 4 and args == {}
    assert back.crf == ExperimentConfig().crf  # not in train_head's view: defaults, never the caller's


@pytest.mark.parametrize("override,stage,args,changes", [
    ("train.lr=0.01", "train_head", {}, True),
    ("train.lr=0.01", "knn", {}, False),
    ("crf.iterations=2", "predict", {"crf": False, "readout_stage": "cluster"}, False),
    ("crf.iterations=2", "predict", {"crf": True, "readout_stage": "cluster"}, True),
    ("cluster.probe_steps=7", "cluster", {"method": "kmeans", "num_classes": 11}, False),
    ("cluster.probe_steps=7", "cluster", {"method": "probe", "num_classes": 11}, True),
    ("cluster.kmeans_restarts=9", "cluster", {"method": "kmeans", "num_classes": 11}, True),
    ("cluster.select=objective", "cluster", {"method": "kmeans", "num_classes": 11}, True),
    ("cluster.select=objective", "cluster", {"method": "consensus", "num_classes": 11}, False),
    ("cluster.overcluster=50", "cluster", {"method": "consensus", "num_classes": 11}, True),
    ("cluster.overcluster=50", "cluster", {"method": "kmeans", "num_classes": 11}, False),
    ("cluster.refine_steps=5", "cluster", {"method": "probe", "num_classes": 11}, True),
    ("train.ema_decay=0.9", "train_head", {}, True),
    ("loss.shift_mode=calibrated", "train_head", {}, True),
    ("linear.loss_resolution=16", "linear_probe", {"num_classes": 11}, True),
    ("data.crop_ratio=0.4", "crop", {}, True),
    ("data.crop_ratio=0.4", "evaluate", {}, False),
    ("reduce.whiten=true", "reduce", {"method": "pca", "dim": 70}, True),
    ("reduce.max_tokens=1000", "reduce", {"method": "pca", "dim": 70}, True),
    ("reduce.whiten=true", "reduce", {"method": "randproj", "dim": 70}, False),
    ("reduce.methods=[pca]", "reduce", {"method": "pca", "dim": 70}, False),
    ("seed=3", "reduce", {"method": "randproj", "dim": 70}, True),
    ("train.lr=0.01", "reduce", {"method": "pca", "dim": 70}, False),
])
def test_a_field_changes_exactly_the_views_that_hold_it(override, stage, args, changes):
    base, changed = build_config("camvid-quick"), build_config("camvid-quick", overrides=[override])
    assert (stage_view(stage, base, **args) != stage_view(stage, changed, **args)) is changes


def test_every_stage_has_a_view():
    assert set(STAGE_SECTIONS) == {"crop", "embed", "knn", "train_head", "reduce", "cluster", "linear_probe", "predict",
                                  "evaluate"}


def test_the_training_side_is_keyed_without_the_evaluation_split_and_back() -> None:
    from stego_core.presets import build_config

    val, test = build_config("camvid-quick"), build_config("camvid-quick", overrides=["data.eval_split=test"])
    assert stage_view("crop", val) == stage_view("crop", test)
    assert stage_view("embed", val, role="train") == stage_view("embed", test, role="train")
    assert stage_view("embed", val, role="eval") != stage_view("embed", test, role="eval")
    crops_168 = build_config("camvid-quick", overrides=["embed.train_resolution=168"])
    assert stage_view("embed", val, role="eval") == stage_view("embed", crops_168, role="eval")
    assert stage_view("embed", val, role="train") != stage_view("embed", crops_168, role="train")
    no_flip = build_config("camvid-quick", overrides=["embed.flip_tta=false", "embed.eval_resolution=448"])
    assert stage_view("embed", val, role="train") == stage_view("embed", no_flip, role="train")
    fewer = build_config("camvid-quick", overrides=["data.train_limit=7"])
    assert stage_view("embed", val, role="eval") == stage_view("embed", fewer, role="eval")
    assert stage_view("crop", val) != stage_view("crop", fewer)


def folder_data(train: str, evaluate: str, classes: int, **extra) -> dict:
    return {"dataset": "folder", "train_images": f"/d/{train}/images", "train_labels": f"/d/{train}/labels",
            "eval_images": f"/d/{evaluate}/images", "eval_labels": f"/d/{evaluate}/labels", "num_classes": classes, **extra}


def test_a_transfer_keys_each_side_as_its_own_dataset_alone() -> None:
    """Training on A and scoring on B: the training side is A's (as when A is scored on itself), the
    evaluation embedding B's (as when B is trained and scored on itself), for folders and registered datasets."""
    a_on_a = ExperimentConfig.model_validate({"data": folder_data("a", "a", 3)})
    b_on_b = ExperimentConfig.model_validate({"data": folder_data("b", "b", 5)})
    a_on_b = ExperimentConfig.model_validate({"data": {**folder_data("a", "b", 3), "eval_dataset": "folder",
                                                       "eval_num_classes": 5}})
    assert stage_view("embed", a_on_b, role="eval") == stage_view("embed", b_on_b, role="eval")
    assert stage_view("embed", a_on_b, role="train") == stage_view("embed", a_on_a, role="train")
    assert stage_view("crop", a_on_b) == stage_view("crop", a_on_a)
    assert stage_view("embed", a_on_b, role="eval") != stage_view("embed", a_on_a, role="eval")
    camvid = ExperimentConfig.model_validate({"data": {"data_root": "/x"}})
    a_on_camvid = ExperimentConfig.model_validate({"data": {**folder_data("a", "a", 3), "eval_dataset": "camvid",
                                                            "eval_data_root": "/x"}})
    assert stage_view("embed", a_on_camvid, role="eval") == stage_view("embed", camvid, role="eval")
    assert stage_view("embed", a_on_camvid, role="train") == stage_view("embed", a_on_a, role="train")
    back, _ = config_from_view(stage_view("embed", a_on_b, role="eval"))
    assert back.data.dataset == "folder" and back.data.num_classes == 5 and back.data.eval_images == "/d/b/images"


def test_eval_num_classes_belongs_to_an_evaluation_folder() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="data.eval_num_classes is for an evaluation folder"):
        ExperimentConfig.model_validate({"data": {"eval_dataset": "camvid", "eval_num_classes": 4}})
