"""The stego_pipeline flow on small synthetic folder datasets (a random ViT-S/8 at 32 px, a few steps):
the PCA and random-projection methods end to end (metrics.json, MLflow, `stego compare`, figures, cache
keys of their own); a transfer from one dataset to another with other classes, from the CLI and through
the flow's parameter validation (what a deployment run does with the form's JSON)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

import pytest
from mlflow import MlflowClient

from flows.compare import compare_table, runs_frame
from flows.pipeline import REDUCTION_METHODS, stego_pipeline
from stego_core.presets import apply_overrides
from tests_helpers import SYNTHETIC_CLASSES, synthetic_config, synthetic_folder

pytestmark = pytest.mark.slow

FAST = {"crf.enabled": False, "reduce.methods": ["pca", "randproj"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folders")
    synthetic_folder(root, "train", 4, 0)
    synthetic_folder(root, "val", 2, 1)
    return root


@pytest.fixture(scope="module")
def reduced_run(prefect_harness, data, tmp_path_factory):
    art, out = tmp_path_factory.mktemp("artifacts"), tmp_path_factory.mktemp("run")
    cfg = apply_overrides(synthetic_config(data), FAST)
    return stego_pipeline(config=cfg, artifact_root=str(art), output=str(out)), art, out


def test_every_run_scores_pca_and_random_projection_like_the_other_methods(reduced_run, isolated_tracking_store):
    result, art, out = reduced_run
    written = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(REDUCTION_METHODS) <= set(written)
    assert {"stego_cluster", "stego_linear", "raw_kmeans", "raw_linear"} <= set(written)
    for method in REDUCTION_METHODS:
        m = written[method]
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["mIoU"] <= 1.0, method
        assert len(m["per_class_iou"]) == SYNTHETIC_CLASSES and m["num_pixels"] == 2 * 32 * 32
        assert (m["assignment"] is not None) is method.endswith("kmeans")  # clusters matched, probes scored as classes
    # each reduction is its own artifact, fitted to train.dim, and its readouts read it
    for method in ("pca", "randproj"):
        meta = json.loads((art / "reduce" / result["artifacts"][f"reduce_{method}"] / "projection.json").read_text())
        assert meta["method"] == method and meta["dim"] == 6 and meta["in_dim"] == 384
    assert result["artifacts"]["readout_pca_cluster"] != result["artifacts"]["readout_raw_cluster"]
    # MLflow holds them as it holds the others, and `stego compare` lists them
    client = MlflowClient(f"sqlite:///{isolated_tracking_store / 'mlflow.db'}")
    run = client.get_run(result["mlflow_run_id"])
    for method in REDUCTION_METHODS:
        assert run.data.metrics[f"{method}.mIoU"] == pytest.approx(written[method]["mIoU"])
        assert run.data.metrics[f"{method}.iou.0"] == pytest.approx(written[method]["per_class_iou"]["0"])
    table = compare_table(runs_frame([run]))
    assert {f"{m}.mIoU" for m in REDUCTION_METHODS} <= set(table.columns)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/confusion_pca_kmeans.png", "figures/confusion_randproj_linear.png", "figures/overlays.png",
            "figures/per_class_iou.png"} <= names


def test_the_overlay_and_per_class_figures_show_the_reductions(reduced_run):
    from tasks.figures import run_figures

    result, art, _ = reduced_run
    predict = {m: art / "predict" / key for m, key in
               ((n.removeprefix("predict_"), k) for n, k in result["artifacts"].items() if n.startswith("predict_"))}
    figures = run_figures(result["metrics"], [], eval_embed_dir=art / "embed" / result["artifacts"]["embed_eval"],
                          predict_dirs=predict, dataset="folder", class_names=["0", "1", "2"], num_images=1)
    titles = [ax.get_title() for ax in figures["overlays"].axes]
    assert set(REDUCTION_METHODS) <= set(titles)
    legend = figures["per_class_iou"].axes[0].get_legend()
    assert set(REDUCTION_METHODS) <= {t.get_text() for t in legend.get_texts()}


def test_a_reduction_option_recomputes_only_its_own_stages(reduced_run, data):
    result, art, _ = reduced_run
    cfg = apply_overrides(synthetic_config(data), {**FAST, "reduce.whiten": True})
    again = stego_pipeline(config=cfg, artifact_root=str(art), tracking=False)
    c = again["cached"]
    mine = ["reduce_pca", "readout_pca_cluster", "readout_pca_linear", "predict_pca_kmeans", "predict_pca_linear",
            "evaluate"]
    assert not any(c[s] for s in mine), c
    assert all(c[s] for s in c if s not in mine), c
    assert again["metrics"]["randproj_kmeans"] == result["metrics"]["randproj_kmeans"]


REPO = Path(__file__).resolve().parents[2]


def transfer_settings(data: Path, other: Path) -> list[str]:
    return ["data.eval_dataset=folder", f"data.eval_images={other / 'images'}", f"data.eval_labels={other / 'labels'}",
            "data.eval_num_classes=5"]


def test_transfer_to_a_dataset_with_other_classes_from_the_cli(prefect_harness, data, tmp_path):
    """Train on the 3-class folder, score on a 5-class one: 5 clusters, the evaluation folder's labels, the
    label-free methods only (a probe of the 3 training classes cannot name 5)."""
    from prefect.settings import PREFECT_API_URL

    synthetic_folder(tmp_path, "other", 3, 2, classes=5)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(apply_overrides(synthetic_config(data), FAST).model_dump(mode="json")))
    sets = sum((["--set", s] for s in transfer_settings(data, tmp_path / "other")), [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PREFECT_API_URL": PREFECT_API_URL.value() or ""}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", config, *sets, "--no-tracking",
                           "--output", tmp_path / "run", "--artifact-root", tmp_path / "art"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(written["metrics"]) == {"stego_cluster", "raw_kmeans", "pca_kmeans", "randproj_kmeans"}
    for name, m in written["metrics"].items():
        assert list(m["per_class_iou"]) == ["0", "1", "2", "3", "4"], name
        assert m["num_pixels"] == 3 * 32 * 32 and len(m["confusion"]) == 5, name
    assert np.load(tmp_path / "run" / "model" / "centroids.npy").shape == (5, 6)
    assert written["config"]["data"]["eval_num_classes"] == 5 and written["config"]["data"]["num_classes"] == 3
    assert "pca_kmeans" in proc.stdout


def test_the_deployment_form_passes_the_transfer_settings_through(data, tmp_path):
    """A deployment run validates the form's JSON into the config model before the flow runs."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(stego_pipeline)
    data_fields = schema.definitions["DataConfig"]["properties"]
    assert {"eval_dataset", "eval_data_root", "eval_num_classes"} <= set(data_fields)
    assert "methods" in schema.definitions["ReduceConfig"]["properties"]
    form = apply_overrides(synthetic_config(data), {"data.eval_dataset": "folder", "data.eval_images": "/b/images",
                                                    "data.eval_labels": "/b/labels", "data.eval_num_classes": 5})
    params = stego_pipeline.validate_parameters({"config": json.loads(json.dumps(form.model_dump(mode="json")))})
    assert params["config"].data.evaluation().num_classes == 5 and params["config"].data.eval_dataset == "folder"


def test_a_dimension_sweep_puts_its_plot_and_table_on_the_parent_run(reduced_run, data, isolated_tracking_store):
    """Two dimensions, here in this process: the child at train.dim=6 is the run above (every stage cached),
    the one at 4 trains its own head and fits its own reductions; the parent MLflow run gets the table and plot."""
    from flows.dim_sweep import dim_sweep

    result, art, _ = reduced_run
    summary = dim_sweep(config=apply_overrides(synthetic_config(data), {"crf.enabled": False}), dims=[4, 6], seeds=[1],
                        deployment=None, artifact_root=str(art))
    six = next(c for c in summary["children"] if c["overrides"]["train.dim"] == 6)
    assert all(six["cached"].values()) and six["metrics"]["pca_kmeans"]["mIoU"] == result["metrics"]["pca_kmeans"]["mIoU"]
    rows = {(r["dim"], r["method"]): r for r in summary["table"]}
    assert {(d, m) for d in (4, 6) for m in ("stego_cluster", *REDUCTION_METHODS)} <= set(rows)
    assert rows[(6, "pca_linear")]["mIoU_mean"] == pytest.approx(result["metrics"]["pca_linear"]["mIoU"])
    client = MlflowClient(f"sqlite:///{isolated_tracking_store / 'mlflow.db'}")
    parent = summary["mlflow_run_id"]
    assert {"dim_sweep.json", "dim_sweep.md", "sweep.json"} <= {a.path for a in client.list_artifacts(parent)}
    assert "figures/dim_sweep.png" in {a.path for a in client.list_artifacts(parent, "figures")}
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.params["train.dim"] for r in children) == ["4", "6"]
