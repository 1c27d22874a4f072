"""The deployments' run form: preset and backbone choices, overrides checked as ``--set``, the whole config as an
advanced base; and the flow-run page's artifacts built from a result."""
from __future__ import annotations

import pytest

from flows.run_form import DEFAULT_PRESET, backbone_point, form_config
from stego_core.backbones import BACKBONES
from stego_core.config import ExperimentConfig
from stego_core.presets import ConfigError, build_config, list_presets
from tasks.run_artifacts import artifact_key, metrics_rows, mlflow_urls, publish, summary_markdown, sweep_rows


def test_pressing_run_gives_the_camvid_preset_exactly_as_the_cli() -> None:
    cfg = form_config(DEFAULT_PRESET)
    assert cfg == build_config("camvid-dinov2s14")  # `stego run --preset camvid-dinov2s14`
    assert cfg.preset == "camvid-dinov2s14" and cfg.data.dataset == "camvid"


def test_every_form_field_is_applied_in_order() -> None:
    cfg = form_config("camvid-quick", backbone="dino_vits8", data_root="/data", seed=7,
                      overrides={"train.steps": 5, "embed.eval_resolution": 160})
    cli = build_config("camvid-quick", overrides=["embed.backbone=dino_vits8", "embed.eval_resolution=160",
                                                  "data.data_root=/data", "seed=7", "train.steps=5"])
    assert cfg == cli
    # the preset's 322 is not a multiple of the /8 patch: the backbone choice rounds it (as a backbone sweep does)
    assert form_config("camvid-quick", backbone="dino_vits8").embed.eval_resolution == 320


def test_a_given_config_is_the_base_instead_of_the_preset() -> None:
    base = ExperimentConfig(name="mine", train={"steps": 3})
    assert form_config("camvid-quick", base) is base  # nothing to apply: the caller's object, untouched
    cfg = form_config("camvid-quick", base, overrides={"train.lr": 0.01})
    assert (cfg.name, cfg.train.steps, cfg.train.lr, cfg.data.dataset) == ("mine", 3, 0.01, base.data.dataset)


@pytest.mark.parametrize("key, value", [("train.stpes", 5), ("train.steps", -1), ("nosection.x", 1),
                                        ("train.dim", 0), ("", 1)])
def test_overrides_fail_with_the_messages_of_set(key, value) -> None:
    with pytest.raises(ConfigError) as cli:
        build_config("camvid-quick", overrides=[f"{key}={value}"])
    with pytest.raises(ConfigError) as form:
        form_config("camvid-quick", overrides={key: value})
    assert str(form.value) == str(cli.value)


def test_the_schema_offers_the_shipped_presets_and_registered_backbones() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.dim_sweep import dim_sweep
    from flows.pipeline import stego_pipeline
    from flows.sweeps import backbone_sweep, param_sweep

    props = parameter_schema(stego_pipeline).model_dump()["properties"]
    assert props["preset"]["enum"] == list(list_presets()) and props["preset"]["default"] == "camvid-dinov2s14"
    assert props["backbone"]["anyOf"][0]["enum"] == sorted(BACKBONES) and props["backbone"]["default"] is None
    assert props["overrides"]["type"] == "object" and "--set" in props["overrides"]["description"]
    assert props["config"]["anyOf"][1] == {"type": "null"} and props["config"]["default"] is None
    assert [props[k]["position"] for k in ("preset", "backbone", "data_root", "seed", "overrides", "config")] == list(range(6))
    for flow in (backbone_sweep, param_sweep, dim_sweep):
        props = parameter_schema(flow).model_dump()["properties"]
        assert props["preset"]["enum"] == list(list_presets()), flow.name
        assert props["config"]["default"] is None and props["overrides"]["default"] == {}, flow.name
    assert parameter_schema(backbone_sweep).model_dump()["properties"]["backbones"]["items"]["enum"] == sorted(BACKBONES)


def test_backbone_point_keeps_multiples_of_the_patch() -> None:
    base = build_config("camvid-quick")  # 224 / 322
    assert backbone_point(base, "dinov2_vits14") == {"embed.backbone": "dinov2_vits14"}
    assert backbone_point(base, "resnet50") == {"embed.backbone": "resnet50", "embed.eval_resolution": 320}


RESULT = {"metrics": {"raw_kmeans": {"accuracy": 0.5, "mIoU": 0.2}, "stego_cluster": {"accuracy": 0.61234, "mIoU": 0.3}},
          "config": ExperimentConfig(name="CamVid Quick!", preset="camvid-quick").model_dump(mode="json"),
          "cached": {"crop": True, "head": False}, "usage": {"head": {"wall_s": 12.34, "peak_rss_mb": 900.4}},
          "mlflow_run_id": "abc123", "tracking_uri": "sqlite:///x.db"}


def test_metrics_table_and_summary() -> None:
    assert metrics_rows(RESULT["metrics"]) == [{"method": "stego_cluster", "accuracy (%)": 61.23, "mIoU (%)": 30.0},
                                               {"method": "raw_kmeans", "accuracy (%)": 50.0, "mIoU (%)": 20.0}]
    md = summary_markdown(RESULT, None)
    assert "preset: `camvid-quick`" in md and f"backbone: `{RESULT['config']['embed']['backbone']}`" in md
    assert "| crop | - | - | yes |" in md and "| head | 12.3 | 900 | no |" in md
    assert "`abc123` in sqlite:///x.db" in md
    assert "[abc123](http://m/#/x)" in summary_markdown(RESULT, "http://m/#/x")
    assert artifact_key("CamVid Quick!", "metrics") == "camvid-quick-metrics"


def test_a_local_store_has_no_browser_link_and_no_artifact_outside_a_flow_run() -> None:
    assert mlflow_urls("sqlite:///x.db", "abc") == (None, None) and mlflow_urls(None, None) == (None, None)
    called = []
    assert publish(lambda **kw: called.append(kw), key="k") is False and called == []


def test_sweep_table_has_a_row_per_child_and_a_column_per_method_score() -> None:
    rows = sweep_rows([{"label": "a", "state": "Completed", "metrics": {"m": {"accuracy": 0.5, "mIoU": 0.25}}},
                       {"label": "b", "state": "Failed"}])
    assert rows == [{"child": "a", "state": "Completed", "m mIoU (%)": 25.0, "m acc (%)": 50.0},
                    {"child": "b", "state": "Failed", "m mIoU (%)": None, "m acc (%)": None}]
