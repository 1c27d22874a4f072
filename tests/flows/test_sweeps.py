"""Sweeps: points are checked before anything runs; run here (no workers) the children nest in
MLflow and share the stages they have in common through a remote (fsspec) artifact root."""
from __future__ import annotations

import json
import uuid

import pytest

from flows.run_form import backbone_point
from flows.sweeps import grid_points, param_sweep, sweep_children
from stego_core.config import ExperimentConfig
from stego_core.presets import ConfigError, build_config
from tests_helpers import TINY, flow_run_artifacts, tiny_overrides


def test_grid_points_are_every_combination_in_key_order() -> None:
    points = grid_points({"loss.b_self": [0.1, 0.2], "train.lr": [1e-4, 1e-3, 1e-2]})
    assert len(points) == 6
    assert points[0] == {"loss.b_self": 0.1, "train.lr": 1e-4} and points[-1] == {"loss.b_self": 0.2, "train.lr": 1e-2}


@pytest.mark.parametrize("grid", [{"loss.b_self": []}, {"loss.b_self": 0.1}, {"loss.b_self": "0.1"}])
def test_grid_values_must_be_a_non_empty_list(grid) -> None:
    with pytest.raises(ConfigError, match="loss.b_self.*non-empty list"):
        grid_points(grid)


def test_children_get_typed_overrides_and_duplicates_run_once() -> None:
    children = sweep_children(ExperimentConfig(), [{"loss.b_self": 0.3}, {"loss.b_self": 0.3}, {"loss.w_rand": 1.0}])
    assert [c.label for c in children] == ["loss.b_self=0.3", "loss.w_rand=1.0"]
    assert children[0].config.loss.b_self == 0.3 and children[0].config.train == ExperimentConfig().train
    assert children[1].config.loss.w_rand == 1.0 and children[1].config.loss.b_self == ExperimentConfig().loss.b_self


def test_backbone_points_round_resolutions_to_each_patch_size() -> None:
    base = ExperimentConfig()  # 224 / 322: multiples of 14, not of 8
    assert base.embed.backbone == "dinov2_vits14"
    assert backbone_point(base, "dinov2_vits14") == {"embed.backbone": "dinov2_vits14"}
    assert backbone_point(base, "resnet50") == {"embed.backbone": "resnet50", "embed.eval_resolution": 320}
    children = sweep_children(base, [backbone_point(base, b) for b in ("dino_vits8", "mocov2_r50", "dinov2_vits14")])
    assert [(c.config.embed.train_resolution, c.config.embed.eval_resolution) for c in children] == [(224, 320), (224, 320), (224, 322)]


@pytest.mark.parametrize("point, message", [
    ({"loss.b_slef": 0.1}, r"point 1 \(loss.b_slef=0.1\): unknown config key 'loss.b_slef'; valid keys at loss: .*b_self"),
    ({"train.lr": -1.0}, r"(?s)point 1 .*train.lr: Input should be greater than 0"),
    ({"embed.backbone": "vit_huge"}, r"point 1 .*unknown backbone 'vit_huge'"),
    ({"embed.backbone": "dinov2_vits14"}, r"point 1 .*embed.eval_resolution=320 is not a multiple of .*patch size 14; use e.g. 308"),
])
def test_a_bad_point_fails_the_whole_sweep_before_anything_runs(point, message) -> None:
    with pytest.raises(ValueError, match=message):
        sweep_children(ExperimentConfig(embed={"backbone": "dino_vits8", "eval_resolution": 320}), [{"loss.b_self": 0.1}, point])


def test_an_empty_sweep_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        sweep_children(ExperimentConfig(), [])


@pytest.mark.slow
def test_local_param_sweep_nests_children_and_shares_stages_through_a_remote_store(
        prefect_harness, camvid_root, tmp_path, monkeypatch) -> None:
    from mlflow import MlflowClient

    root = f"memory://stego-sweep-{uuid.uuid4().hex}/artifacts"  # any fsspec URL; memory:// stays in this process
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("STEGO_HOME", str(tmp_path / "machine-a"))
    base = build_config("camvid-quick", overrides=[f"data.data_root={camvid_root}", *TINY, "name=sweep-local"])
    state = param_sweep(preset="camvid-quick", data_root=str(camvid_root), overrides=tiny_overrides("name=sweep-local"),
                        grid={"train.steps": [6, 12]}, deployment=None, artifact_root=root, tracking_uri=uri,
                        return_state=True)  # the run form's way in; below, `config=` (the CLI's)
    summary = state.result()

    first, second = summary["children"]
    # The sweep's flow-run page: one table, a row per child with every method's scores.
    table = json.loads(flow_run_artifacts(state.state_details.flow_run_id)["sweep-local-param-sweep"].data)
    assert [row["child"] for row in table] == ["train.steps=6", "train.steps=12"]
    assert table[1]["stego_cluster mIoU (%)"] == round(100 * second["metrics"]["stego_cluster"]["mIoU"], 2)
    assert [first["state"], second["state"]] == ["Completed", "Completed"]
    assert not first["cached"]["embed_train"] and not first["cached"]["head"]
    # The second child differs only in the head's schedule: everything upstream of the head is reused.
    assert second["cached"]["crop"] and second["cached"]["embed_train"] and second["cached"]["knn"]
    assert not second["cached"]["head"]

    mlflow = MlflowClient(tracking_uri=uri)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("sweep-local").experiment_id])
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary["mlflow_run_id"]]
    assert sorted(r.data.params["train.steps"] for r in nested) == ["12", "6"]
    assert mlflow.get_run(summary["mlflow_run_id"]).data.tags["sweep"] == "param_sweep"

    # "Another machine": an empty local mirror, the same remote root. Nothing is recomputed.
    monkeypatch.setenv("STEGO_HOME", str(tmp_path / "machine-b"))
    again = param_sweep(config=base, grid={"train.steps": [6, 12]}, deployment=None, artifact_root=root,
                        tracking=False)
    for child in again["children"]:
        assert all(child["cached"].values()), child["cached"]
    assert [c["metrics"] for c in again["children"]] == [first["metrics"], second["metrics"]]
