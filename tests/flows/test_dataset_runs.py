"""`stego run --preset cocostuff27-vits8 / cityscapes27-vitb8 / potsdam3-vits8` on folders laid out as the
reference's zips and the official archives.

A random ViT-S/8 at 32 px and a few steps of everything (~50 s each on 2 busy cores): the layouts feed
the whole pipeline, nothing rearranged, and the COCO-Stuff run is labelled with its subset.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from dataset_fixtures import build_cityscapes, build_cocostuff, build_potsdam
from flows.cli import app

pytestmark = pytest.mark.slow

RANDOM_TINY = [
    "device=cpu", "seed=1", "embed.pretrained=false", "embed.train_resolution=32", "embed.eval_resolution=32",
    "embed.batch_size=4", "knn.k=5", "knn.num_neighbors=3", "train.steps=6", "train.dim=6", "train.batch_size=4",
    "loss.feature_samples=3", "loss.neg_samples=2", "cluster.kmeans_restarts=1", "cluster.kmeans_max_tokens=1000",
    "cluster.refine_steps=2", "cluster.probe_steps=4", "linear.steps=4", "linear.loss_resolution=8",
    "crf.enabled=false", "baselines=false",
]


def run_preset(preset: str, tmp_path: Path, *extra: str):
    """``stego run --preset PRESET`` in-process on ``tmp_path/data`` with the random tiny settings."""
    args = ["run", "--preset", preset, "--data-root", tmp_path / "data", "--output", tmp_path / "run",
            "--artifact-root", tmp_path / "art", *extra]
    for item in RANDOM_TINY:
        args += ["--set", item]
    out = CliRunner().invoke(app, list(map(str, args)))
    assert out.exit_code == 0, out.output
    return out


def test_the_cocostuff_preset_runs_on_the_references_layout(prefect_harness, tmp_path):
    """In-process through the CLI, tracked."""
    build_cocostuff(tmp_path / "data", train=5, val=3, extra=2)
    out = run_preset("cocostuff27-vits8", tmp_path)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(record["metrics"]) == {"stego_cluster", "stego_linear"}
    for method, m in record["metrics"].items():
        assert len(m["per_class_iou"]) == 27, method
        assert m["num_pixels"] > 0.5 * 3 * 32 * 32  # the 3 curated val images (not the 2 extra), void aside
    assert record["data_subset"] == "curated"  # the paper's lists, applied without being asked
    run_id = out.output.split("MLflow run ")[1].split()[0]
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["data_subset"] == "curated" and run.data.params["data.subset"] == "curated"


def test_the_cityscapes_preset_runs_on_the_official_layout(prefect_harness, tmp_path):
    """The city folders and labelIds as the official zips unpack them (a random ViT-B/8)."""
    fx = build_cityscapes(tmp_path / "data")
    run_preset("cityscapes27-vitb8", tmp_path, "--no-tracking")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(record["metrics"]) == {"stego_cluster", "stego_linear"}
    for method, m in record["metrics"].items():
        assert len(m["per_class_iou"]) == 27, method
        assert 0 < m["num_pixels"] < len(fx.labels["val"]) * 32 * 32  # the val city only; its void ids left out


def test_the_potsdam_preset_runs_on_the_references_tiles(prefect_harness, tmp_path):
    """The .mat tiles through the whole flow, as a user runs it: `stego run` in a new process."""
    from prefect.settings import PREFECT_API_URL

    build_potsdam(tmp_path / "data")
    args = ["run", "--preset", "potsdam3-vits8", "--data-root", tmp_path / "data", "--output", tmp_path / "run",
            "--artifact-root", tmp_path / "art", "--no-tracking"]
    for item in RANDOM_TINY + ["knn.k=4"]:  # 4 training tiles, no five-crop
        args += ["--set", item]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=Path(__file__).resolve().parents[2],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all(len(m["per_class_iou"]) == 3 for m in record["metrics"].values())
    assert "data_subset" not in record and record["config"]["data"]["five_crop"] is False
