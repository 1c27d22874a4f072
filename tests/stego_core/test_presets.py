import pytest

from stego_core.config import ExperimentConfig
from stego_core.presets import ConfigError, build_config, list_presets, load_preset, parse_override

PUBLISHED = {
    "cocostuff27-vitb8": dict(dim=90, w=(0.1, 1.0, 0.1538), b=(0.12, 0.20, 1.00), pointwise=True, steps=7000, batch=32),
    "cityscapes27-vitb8": dict(dim=100, w=(1.0, 0.5775, 0.9059), b=(0.4583, 0.1754, 0.3136), pointwise=False, steps=7000, batch=32),
    "potsdam3-vits8": dict(dim=70, w=(0.67, 0.25, 0.63), b=(0.08, 0.02, 0.76), pointwise=True, steps=5000, batch=16),
    "cocostuff27-vits8": dict(dim=70, w=(0.67, 0.25, 0.63), b=(0.08, 0.02, 0.66), pointwise=True, steps=5000, batch=16),
}


def test_all_presets_build_and_are_listed():
    names = list_presets()
    assert {"camvid-dinov2s14", "camvid-quick", *PUBLISHED} <= set(names)
    for name in names:
        cfg = build_config(name)
        assert cfg.preset == name and names[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_settings(name):
    p, cfg = PUBLISHED[name], build_config(name)
    assert cfg.loss.shift_mode == "fixed" and cfg.train.dim == p["dim"]
    assert (cfg.loss.w_self, cfg.loss.w_knn, cfg.loss.w_rand) == p["w"]
    assert (cfg.loss.b_self, cfg.loss.b_knn, cfg.loss.b_rand) == p["b"]
    assert cfg.loss.pointwise is p["pointwise"] and (cfg.train.steps, cfg.train.batch_size) == (p["steps"], p["batch"])
    assert cfg.data.five_crop is (name != "potsdam3-vits8")


def test_precedence_defaults_preset_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {steps: 123, lr: 0.001}\n")
    cfg = build_config("camvid-quick", f, ["train.steps=7", "embed.backbone=dino_vits8"])
    assert cfg.train.steps == 7 and cfg.train.lr == 0.001 and cfg.embed.backbone == "dino_vits8"
    assert cfg.data.train_limit == load_preset("camvid-quick")["data"]["train_limit"]
    assert build_config(overrides=["embed.backbone=dino_vits8"]).train == ExperimentConfig().train


def test_a_dinov2_backbone_without_a_preset_gets_its_recipe_under_the_users_settings(tmp_path):
    recipe = load_preset("dinov2")
    cfg = build_config(overrides=["data.dataset=folder", "train.lr=0.002"])  # default backbone: dinov2_vits14
    assert cfg.preset == "dinov2" and cfg.train.steps == recipe["train"]["steps"] and cfg.train.lr == 0.002
    assert cfg.cluster.method == recipe["cluster"]["method"]
    # a DINO v1 backbone keeps the reference defaults; a named preset is never mixed with a recipe
    assert build_config(overrides=["embed.backbone=dino_vits8"]).preset is None
    assert build_config("cocostuff27-vits8").loss.shift_mode == "fixed"


def test_the_camvid_preset_is_the_dinov2_recipe_with_camvid_data_and_evaluation():
    cfg, recipe = build_config("camvid-dinov2s14"), load_preset("dinov2")
    assert cfg.loss.shift_mode == recipe["loss"]["shift_mode"] == "per_anchor"
    assert cfg.train.ema_decay == recipe["train"]["ema_decay"] > 0 and cfg.loss.w_teacher > 0
    assert (cfg.cluster.select, cfg.cluster.refine_steps) == (recipe["cluster"]["select"], recipe["cluster"]["refine_steps"])
    assert cfg.embed.train_resolution == recipe["embed"]["train_resolution"] == 168  # inherited, not pinned to 224
    # the concept clusterbook at the weight bench/robustness.py chose on CamVid val and LabelMeFacade train
    assert (cfg.loss.w_concept, cfg.concepts.num_concepts) == (0.01, 256)
    assert build_config("labelmefacade-dinov2s14").loss.w_concept == 0.01
    assert (cfg.data.dataset, cfg.embed.eval_resolution, cfg.embed.flip_tta, cfg.crf.enabled) == ("camvid", 322, True, True)


def test_presets_extend_others_and_loops_are_refused(tmp_path, monkeypatch):
    import stego_core.presets as presets

    quick, recipe = load_preset("camvid-quick"), load_preset("dinov2")
    assert quick["loss"]["shift_mode"] == recipe["loss"]["shift_mode"]  # inherited
    assert quick["train"]["steps"] != recipe["train"]["steps"] and quick["train"]["lr"] == recipe["train"]["lr"]
    (tmp_path / "a.yaml").write_text("extends: b\ntrain: {steps: 1}\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError, match="presets extend each other in a loop: a -> b -> a"):
        load_preset("a")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_config("nope"), "unknown preset 'nope'; known presets: .*camvid-quick"),
        (lambda: parse_override("train.stepz=3"), r"unknown config key 'train.stepz'; valid keys at train: .*steps"),
        (lambda: parse_override("bogus.x=3"), "unknown config key 'bogus.x'"),
        (lambda: parse_override("train.steps"), "must look like section.key=value"),
        (lambda: build_config(overrides=["train.lr=-1"]), r"train.lr: Input should be greater than 0"),
        (lambda: build_config(overrides=["train.dim=0"]), r"train.dim"),
        (lambda: build_config(overrides=["train.steps=many"]), r"train.steps: Input should be a valid integer"),
        (lambda: build_config(overrides=["knn.k=5", "knn.num_neighbors=7"]), r"num_neighbors \(7\) must be < knn.k \(5\)"),
        (lambda: build_config(overrides=["loss.shift_mode=magic"]), "loss.shift_mode"),
        (lambda: build_config(overrides=["train.ema_decay=0", "loss.w_teacher=0.5"]), r"loss.w_teacher=0.5 needs an EMA teacher: set train.ema_decay"),
        (lambda: build_config(overrides=["train.ema_decay=1"]), r"train.ema_decay: Input should be less than 1"),
        (lambda: build_config(overrides=["cluster.method=spectral"]), r"cluster.method: Input should be 'probe', 'kmeans' or 'consensus'"),
        (lambda: build_config(overrides=["cluster.select=best"]), r"cluster.select"),
        (lambda: build_config(overrides=["loss.q_anchor=2"]), r"loss.q_anchor: Input should be less than or equal to 1"),
        (lambda: build_config(overrides=["cluster.method=probe", "cluster.code=agreement"]),
         r"cluster.code=agreement compares the restarts of cluster.method=kmeans with cluster.select=balance"),
        (lambda: build_config("dinov2", overrides=["cluster.kmeans_restarts=1", "cluster.code=agreement"]),
         r"cluster.code=agreement needs cluster.kmeans_restarts >= 2"),
    ],
)
def test_bad_config_values_name_the_field(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_bad_yaml_and_unknown_keys_in_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [steps: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(config_file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train: {warp_speed: 9}\n")
    with pytest.raises(ConfigError, match=r"train.warp_speed: Extra inputs are not permitted"):
        build_config(config_file=unknown)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(config_file=tmp_path / "missing.yaml")


def test_the_camvid_presets_score_the_reductions_and_the_default_does_not():
    for name in ("camvid-dinov2s14", "camvid-quick"):
        assert build_config(name).reduce.methods == ("pca", "randproj"), name
    assert build_config().reduce.methods == ()
    assert build_config("camvid-quick", overrides=["reduce.methods=[]"]).reduce.methods == ()
