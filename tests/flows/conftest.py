"""Real services for the end-to-end flow tests, started once per session on 127.0.0.1: a Prefect server with
the deployments registered and process workers (``cluster``), and an MLflow tracking server (``mlflow_server``)."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.deploy import LocalCluster, free_port, stop_process


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, camvid_root: Path) -> Iterator[LocalCluster]:
    """Server + `stego deploy` + a cpu worker (sweep parents) + a gpu-pool worker (children, limit 1)."""
    base = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "1", "STEGO_HOME": str(base / "stego"),
           "STEGO_DATA_ROOT": str(camvid_root), "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}"}
    with LocalCluster(base, env, workers={"cpu": 2, "gpu": 1}, result_storage=str(base / "results")) as running:
        yield running


@pytest.fixture
def client(cluster: LocalCluster):
    """A sync Prefect client of the cluster's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: cluster.url}), get_client(sync_client=True) as c:
        yield c


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` (SQLite backend, proxied artifacts) on a free port; yields its URL."""
    from tasks.tracking import server_command, server_env

    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(server_command(f"sqlite:///{base / 'mlflow.db'}", base / "artifacts", port), env=server_env(),
                            stdout=open(base / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}:\n{(base / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}/health not up after 90 s") from None
                time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)
