"""The MLflow server stopped in the middle of a run (a real ``mlflow server``, a real tiny CamVid
``stego run``): the run ends in one line naming the server and what to do, no traceback, no artifact
half-written; once the server is back, the rerun finishes from the cache with the metrics of an
uninterrupted run, and its MLflow run is FINISHED with them.

(A worker killed with SIGKILL in the middle of an embed shard: tests/flows/test_shards_e2e.py.)
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.catalog import ArtifactStore
from tasks.tracking import server_command, server_env
from tests_helpers import TINY

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "server-fault"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int) -> subprocess.Popen:
    import urllib.request

    proc = subprocess.Popen(server_command(f"sqlite:///{db}", db.parent / "artifacts", port), env=server_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("mlflow server not healthy after 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # as a crash or a pulled plug: no clean shutdown
        proc.wait()


def stego_run(camvid_root: Path, art: Path, out: Path, *extra: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    sets = sum((["--set", s] for s in [f"data.data_root={camvid_root}", *TINY]), [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PREFECT_API_URL": PREFECT_API_URL.value() or "",
           "STEGO_HOME": str(out.parent / "home"),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # fail in seconds
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--preset", "camvid-quick", *sets,
                             "--artifact-root", str(art), "--output", str(out), *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_mlflow_server_stopped_mid_run_then_the_rerun_matches_an_uninterrupted_run(prefect_harness, camvid_root,
                                                                                    tmp_path):
    db, port = tmp_path / "mlflow" / "mlflow.db", free_port()
    db.parent.mkdir()
    url, art = f"http://127.0.0.1:{port}", tmp_path / "art"
    server = start_server(db, port)
    try:
        run = stego_run(camvid_root, art, tmp_path / "run1", "--tracking-uri", url, "--experiment", EXPERIMENT)
        client = MlflowClient(url)
        deadline = time.monotonic() + 600
        while not (art / "embed").is_dir():  # the MLflow run is open, the first stages are done
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
            time.sleep(0.5)
        assert [r.info.status for r in client.search_runs(
            [client.get_experiment_by_name(EXPERIMENT).experiment_id])] == ["RUNNING"]
        stop_server(server)
        output = run.communicate(timeout=900)[0]
        assert run.returncode == 2, output
        assert "Traceback" not in output, output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.fullmatch(
            rf"error: the MLflow tracking server {re.escape(url)} stopped answering during the run \(\w+ in \w+\); "
            r"start it again and rerun: the finished stages are reused from the artifact cache \(or rerun with "
            r"--no-tracking\)", errors[0]), output
        store = ArtifactStore(art)
        assert all(check.ok for check in store.verify_all())  # nothing half-written
        assert not list(art.glob("*/.tmp-*"))

        server = start_server(db, port)  # back, with the same store
        rerun = stego_run(camvid_root, art, tmp_path / "run2", "--tracking-uri", url, "--experiment", EXPERIMENT)
        output = rerun.communicate(timeout=900)[0]
        assert rerun.returncode == 0, output
        reference = stego_run(camvid_root, tmp_path / "fresh", tmp_path / "run3", "--no-tracking")
        assert reference.communicate(timeout=900)[0] and reference.returncode == 0
        resumed = json.loads((tmp_path / "run2" / "metrics.json").read_text())["metrics"]
        uninterrupted = json.loads((tmp_path / "run3" / "metrics.json").read_text())["metrics"]
        assert {m: (s["accuracy"], s["mIoU"]) for m, s in resumed.items()} == \
            {m: (s["accuracy"], s["mIoU"]) for m, s in uninterrupted.items()}
        finished = [r for r in client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
                    if r.info.status == "FINISHED"]
        assert len(finished) == 1
        assert finished[0].data.metrics["stego_cluster.mIoU"] == resumed["stego_cluster"]["mIoU"]
    finally:
        stop_server(server)
