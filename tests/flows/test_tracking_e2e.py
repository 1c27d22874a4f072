"""Tracking end to end: the tiny CamVid pipeline against a real `mlflow server`, read back through the
MLflow client; `stego predict --run <run id>`; `stego compare`; the local SQLite default; `stego ui`.

Two tracked runs share one artifact root and differ only in ``crf.iterations``, so the second one
recomputes just the CRF predictions and the evaluation.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from flows.compare import compare_table, runs_frame
from flows.pipeline import METHODS, stego_pipeline
from stego_core.presets import build_config
from tests_helpers import TINY, free_port, mlflow_server, stop, wait_healthy

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "e2e-tracking"


def stego(*args, env_update: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`stego ARGS` in a new process, against the session's Prefect test server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PREFECT_API_URL": PREFECT_API_URL.value() or ""}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(env_update)
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture(scope="module")
def runs(prefect_harness, camvid_root, server, tmp_path_factory):
    """Two tracked runs (default / crf.iterations=2) and the shared artifact root."""
    art = tmp_path_factory.mktemp("artifacts")

    def tracked(*extra):
        cfg = build_config("camvid-quick", overrides=[f"data.data_root={camvid_root}", *TINY, *extra])
        return stego_pipeline(config=cfg, artifact_root=str(art), tracking_uri=server, experiment=EXPERIMENT)

    return tracked(), tracked("crf.iterations=2"), art


def test_params_tags_curves_metrics_and_figures_read_back(runs, server, tmp_path):
    first, _, art = runs
    client = MlflowClient(server)
    run = client.get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "12" and run.data.params["embed.backbone"] == "dinov2_vits14"
    assert run.data.params["data.eval_limit"] == "3" and run.data.params["preset"] == "camvid-quick"
    tags = run.data.tags
    assert tags["dataset"] == "camvid" and tags["preset"] == "camvid-quick" and tags["prefect.flow_run_id"]
    assert tags["artifact.head"] == first["artifacts"]["head"] and tags["artifact_root"] == str(art)
    assert (art / "train_head" / tags["artifact.head"]).is_dir()  # traceable to the cached artifact
    for term in ("loss", "loss_self", "loss_knn", "loss_rand"):
        curve = client.get_metric_history(run.info.run_id, f"train/{term}")
        assert [m.step for m in curve] == [0, 10, 11], term  # log_every=10 over 12 steps
    # Probe losses: the SGD cluster probe (15 steps) and the linear probes (40 steps), every 10 steps.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "probe/stego_cluster/loss")] == [0, 10]
    for probe in ("stego_linear", "raw_linear"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, f"probe/{probe}/loss")] == [0, 10, 20, 30]
    for method in METHODS:
        assert run.data.metrics[f"{method}.mIoU"] == pytest.approx(first["metrics"][method]["mIoU"])
        assert run.data.metrics[f"{method}.accuracy"] == pytest.approx(first["metrics"][method]["accuracy"])
        assert run.data.metrics[f"{method}.iou.Sky"] == pytest.approx(first["metrics"][method]["per_class_iou"]["Sky"])
    assert run.data.metrics["usage/head/wall_s"] > 0 and run.data.metrics["usage/head/peak_rss_mb"] > 100
    names = {a.path for d in ("", "model", "figures") for a in client.list_artifacts(run.info.run_id, d or None)}
    assert {"metrics.json", "run.json", "model/head.safetensors", "model/centroids.npy", "model/linear.safetensors",
            "model/config.json", "figures/overlays.png", "figures/per_class_iou.png", "figures/loss_curves.png",
            "figures/confusion_stego_cluster.png"} <= names
    overlay = Image.open(client.download_artifacts(run.info.run_id, "figures/overlays.png", str(tmp_path)))
    assert overlay.size[0] > 1000 and np.asarray(overlay).std() > 20  # 7 columns of real pictures


def test_predict_with_an_mlflow_run_id(runs, server, camvid_root, tmp_path):
    first, _, _ = runs
    images = tmp_path / "new"
    images.mkdir()
    src = sorted((camvid_root / "camvid" / "images" / "test").iterdir())[0]
    Image.open(src).resize((240, 180)).save(images / "a.jpg")
    out = stego("predict", "--run", f"runs:/{first['mlflow_run_id']}", "--images", images, "--out", tmp_path / "pred",
                env_update={"MLFLOW_TRACKING_URI": server, "STEGO_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stdout + out.stderr
    ids = np.asarray(Image.open(tmp_path / "pred" / "a.png"))
    assert ids.shape == (180, 240) and ids.max() < 11  # the whole image, in CamVid's class ids
    cached = tmp_path / "home" / "mlflow-runs" / first["mlflow_run_id"]
    assert json.loads((cached / "metrics.json").read_text())["config"]["train"]["steps"] == 12


def test_compare_shows_only_the_parameter_that_differs(runs, server, tmp_path):
    first, second, _ = runs
    out = stego("compare", "--experiment", EXPERIMENT, "--csv", tmp_path / "t.csv", "--plot", tmp_path / "t.png",
                env_update={"MLFLOW_TRACKING_URI": server}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "crf.iterations" in out.stdout and first["mlflow_run_id"][:8] in out.stdout
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    params = [c for c in rows[0] if c not in {"run_id", "experiment", "run_name", "status", "start_time"}
              and not c.endswith((".accuracy", ".mIoU"))]
    assert params == ["crf.iterations"]
    assert {r["run_id"]: r["crf.iterations"] for r in rows} == {first["mlflow_run_id"]: "3", second["mlflow_run_id"]: "2"}
    mious = [float(r["stego_cluster.mIoU"]) for r in rows]
    assert mious == sorted(mious, reverse=True)  # best first
    assert Image.open(tmp_path / "t.png").format == "PNG"
    # The same table in process, sorted the other way by a param.
    client = MlflowClient(server)
    table = compare_table(runs_frame(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])),
                          sort="crf.iterations", ascending=True)
    assert table["crf.iterations"].tolist() == ["2", "3"]


def test_compare_rejects_an_unknown_sort_column():
    frame = runs_frame([])
    assert compare_table(frame).empty
    with pytest.raises(ValueError, match="--sort 'nope' is not a column"):
        compare_table(frame, sort="nope")


def test_local_sqlite_default_then_compare_and_ui(runs, camvid_root, tmp_path):
    """As a new user: `stego run` with no tracking server configured, then `stego compare`, `stego ui`."""
    _, _, art = runs
    home = {"STEGO_HOME": str(tmp_path / "home")}
    overrides = sum((["--set", t] for t in TINY), [])
    out = stego("run", "--preset", "camvid-quick", *overrides, "--data-root", camvid_root, "--output", tmp_path / "run",
                "--artifact-root", art, env_update=home)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "home" / "mlflow.db").exists()
    run_id = next(line.split()[2] for line in out.stdout.splitlines() if line.startswith("MLflow run "))
    out = stego("compare", env_update=home, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert run_id[:8] in out.stdout and "camvid-quick" in out.stdout and "stego_cluster.mIoU" in out.stdout

    port = free_port()
    env = {**os.environ, **home}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ui", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        found = MlflowClient(f"http://127.0.0.1:{port}").get_run(run_id)
        assert found.info.status == "FINISHED" and "stego_cluster.mIoU" in found.data.metrics
    finally:
        stop(proc)
