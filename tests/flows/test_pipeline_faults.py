"""Faults in a real ``stego_pipeline`` run (tiny CamVid, session Prefect server, real MLflow stores).

Faults are injected by replacing a ``stego_core.stages`` function in this process for one test (the
tasks call it through the module, in this process's worker threads): no production hook.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.pipeline import stego_pipeline
from stego_core import stages as core
from stego_core.presets import build_config
from tasks.tracking import TrackingUnavailable, local_tracking_uri
from tests_helpers import TINY

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def tiny_config(camvid_root, *extra):
    return build_config("camvid-quick", overrides=[f"data.data_root={camvid_root}", *TINY, *extra])


def unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


def fail_once(monkeypatch, name: str, exc: BaseException) -> list[int]:
    """Make ``stego_core.stages.<name>`` raise ``exc`` on its first call only; returns the call log."""
    real, calls = getattr(core, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(core, name, flaky)
    return calls


def task_runs(flow_run_id: str) -> dict[str, list]:
    """Task run name prefix -> task runs of a flow run, read from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return out


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


def test_transient_error_is_retried_and_the_run_falls_back_to_the_local_store(prefect_harness, camvid_root, art,
                                                                              tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STEGO_HOME", str(home))
    calls = fail_once(monkeypatch, "knn_stage", TimeoutError("injected: storage timed out"))
    server = unreachable_url()
    result = stego_pipeline(config=tiny_config(camvid_root), artifact_root=str(art), tracking_uri=server,
                            experiment="faults", tracking_fallback=True)
    assert len(calls) == 2  # failed once, retried by Prefect, then computed
    assert not result["cached"]["knn"] and 0 <= result["metrics"]["stego_cluster"]["mIoU"] <= 1
    assert result["tracking_uri"] == local_tracking_uri(home)
    run = MlflowClient(local_tracking_uri(home)).get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["tracking_fallback"] == server
    assert run.data.metrics["stego_cluster.mIoU"] == pytest.approx(result["metrics"]["stego_cluster"]["mIoU"])
    knn_runs = task_runs(run.data.tags["prefect.flow_run_id"])["knn"]
    assert [(r.run_count, r.state.name) for r in knn_runs] == [(2, "Completed")]


def test_permanent_error_fails_the_flow_and_the_mlflow_run_keeps_its_record(prefect_harness, camvid_root, art,
                                                                            monkeypatch):
    calls = fail_once(monkeypatch, "cluster_stage", ValueError("injected: cluster input is bad"))
    experiment = f"faults-permanent-{os.getpid()}"
    # Upstream stages are cached from the test above (computed again when run alone); the new probe
    # setting makes the cluster stage compute, after the head's loss curve was logged.
    with pytest.raises(ValueError, match="injected: cluster input is bad"):
        stego_pipeline(config=tiny_config(camvid_root, "cluster.probe_steps=16"), artifact_root=str(art),
                       experiment=experiment)
    assert len(calls) == 1  # a ValueError is not retried
    client = MlflowClient()  # the session's isolated store ($MLFLOW_TRACKING_URI)
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "ValueError: injected: cluster input is bad"
    assert run.data.params["train.steps"] == "12" and run.data.tags["dataset"] == "camvid"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 10, 11]
    [cluster] = task_runs(run.data.tags["prefect.flow_run_id"])["cluster"]
    assert (cluster.run_count, cluster.state.name) == (1, "Failed")


def test_unreachable_tracking_server_fails_in_seconds_before_any_stage(prefect_harness, camvid_root, tmp_path):
    server, art = unreachable_url(), tmp_path / "artifacts"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"{server} cannot be reached .*--tracking-fallback"):
        stego_pipeline(config=tiny_config(camvid_root), artifact_root=str(art), tracking_uri=server)
    assert time.monotonic() - started < 30  # flow start + input checks + the probe, not MLflow's minutes of retries
    assert not art.exists()  # no stage ran, not even the crop


def test_cli_reports_an_unreachable_server_without_a_traceback(prefect_harness, camvid_root, tmp_path):
    from prefect.settings import PREFECT_API_URL

    server = unreachable_url()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PREFECT_API_URL": PREFECT_API_URL.value() or ""}
    args = ["run", "--preset", "camvid-quick", *sum((["--set", t] for t in TINY), []), "--data-root", str(camvid_root),
            "--output", str(tmp_path / "run"), "--artifact-root", str(tmp_path / "art"), "--tracking-uri", server]
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert f"error: the MLflow tracking server {server} cannot be reached" in out and "Traceback" not in out
    assert not (tmp_path / "art").exists()
