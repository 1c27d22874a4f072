"""Load: a 16-child parameter sweep on two gpu-pool workers (limit 1 each: at most 2 children at a
time), triggered through the API as the UI does; no child lost or run twice, every MLflow child run
FINISHED under the sweep's run. Real services on 127.0.0.1 (tiny CamVid subset, random weights); the
children differ only in the CRF, so every stage above the CRF predictions is shared through the cache.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flows.deploy import LocalCluster
from stego_core.presets import build_config
from tests_helpers import TINY

pytestmark = [pytest.mark.slow, pytest.mark.load]  # ~8 min: left out of `make test`, run with -m load
CHILDREN, WORKERS = 16, 2


def test_sixteen_children_on_two_workers_none_lost_or_duplicated(tmp_path: Path, camvid_root: Path) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {**os.environ, "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "1", "STEGO_HOME": str(tmp_path / "stego"),
           "STEGO_DATA_ROOT": str(camvid_root), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    config = build_config(overrides=TINY + ["embed.pretrained=false", "embed.backbone=dino_vits8",
                                            "embed.eval_resolution=160", "name=sweep-load"])
    with LocalCluster(tmp_path, env, workers={"cpu": 1, "gpu": 1}, replicas={"gpu": WORKERS},
                      result_storage=str(tmp_path / "results")) as cluster, \
            temporary_settings(updates={PREFECT_API_URL: cluster.url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("param_sweep/param-sweep")
        started = time.monotonic()
        run = client.create_flow_run_from_deployment(deployment.id, parameters={
            "config": config.model_dump(mode="json"), "grid": {"crf.iterations": list(range(1, CHILDREN + 1))},
            "tracking_uri": env["MLFLOW_TRACKING_URI"]})
        while not (run := client.read_flow_run(run.id)).state or not run.state.is_final():
            assert time.monotonic() - started < 1800, cluster.logs_tail()
            time.sleep(2)
        wall = time.monotonic() - started
        assert run.state.is_completed(), f"{run.state.message}\n{cluster.logs_tail()}"
        summary = run.state.result()
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))

    # none lost, none run twice: one completed gpu flow run per grid point
    assert len(children) == CHILDREN and all(c.state.is_completed() and c.work_pool_name == "gpu" for c in children)
    assert sorted(c.parameters["config"]["crf"]["iterations"] for c in children) == list(range(1, CHILDREN + 1))
    assert {str(c.id) for c in children} == {c["flow_run_id"] for c in summary["children"]}
    # the concurrency limit: never more than WORKERS children at once, and both workers busy at some point
    events = sorted([(c.start_time, 1) for c in children] + [(c.end_time, -1) for c in children])
    running, peak = 0, 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == WORKERS, peak
    # every child's MLflow run FINISHED, nested under the sweep's run, one per child
    mlflow = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("sweep-load").experiment_id])
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary["mlflow_run_id"]]
    assert len(nested) == CHILDREN and all(r.info.status == "FINISHED" for r in nested)
    assert {r.data.tags["prefect.flow_run_id"] for r in nested} == {str(c.id) for c in children}
    assert mlflow.get_run(summary["mlflow_run_id"]).data.tags["sweep.completed"] == str(CHILDREN)
    busy = sum(c.total_run_time.total_seconds() for c in children)
    print(f"\n{CHILDREN} children on {WORKERS} workers: sweep wall {wall:.0f} s, child run time {busy:.0f} s "
          f"(x{busy / wall:.2f} of wall), peak concurrency {peak}, lost 0, duplicated 0, MLflow FINISHED {len(nested)}")
