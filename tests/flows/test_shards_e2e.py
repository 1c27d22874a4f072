"""Sharded embedding on real services: a Prefect server on 127.0.0.1, the embed-shard deployment
registered by `stego deploy`, two process workers on the gpu pool. A split of 8 CamVid images in
shards of 2 is dispatched to the workers; one shard's process is killed with SIGKILL in the middle of
its embedding. The worker reports that run Crashed, the pipeline side computes that shard alone, and
the joined artifact reads exactly as the unsharded one (random ViT-S/8 weights, the same in every
process). A rerun finds every shard and computes nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.deploy import LocalCluster
from flows.runner import StageRunner
from flows.shards import SHARD_DEPLOYMENT
from stego_core.features import open_embedding
from stego_core.presets import build_config
from tests_helpers import TINY

pytestmark = pytest.mark.slow

TIMEOUT_S = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, camvid_root: Path) -> Iterator[LocalCluster]:
    base = tmp_path_factory.mktemp("shards")
    env = {**os.environ, "STEGO_HOME": str(base / "stego"), "STEGO_DATA_ROOT": str(camvid_root),
           "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}"}
    with LocalCluster(base, env, workers={"gpu": 1}, replicas={"gpu": 2}, deployments=["embed-shard"]) as running:
        yield running


def config(camvid_root: Path, shard_size: int):
    return build_config(overrides=TINY + [
        "embed.pretrained=false", "embed.backbone=dino_vits8", "embed.train_resolution=160", "embed.eval_resolution=160",
        "data.train_limit=8", f"embed.shard_size={shard_size}", "embed.batch_size=2", f"data.data_root={camvid_root}"])


PARENT = """
    import json, sys
    from prefect import flow
    from flows.runner import StageRunner
    from flows.shards import embed_split
    from stego_core.config import ExperimentConfig

    cfg, store, deployment = ExperimentConfig.model_validate_json(sys.argv[1]), sys.argv[2], sys.argv[3] or None

    @flow(name="shard-parent")
    def parent():
        return embed_split(StageRunner(cfg, store), "train", shard_deployment=deployment, timeout_minutes=10)

    print("RESULT " + json.dumps(parent()))
"""


def run_parent(cluster: LocalCluster, cfg, store: str, deployment: str = "") -> dict:
    """The pipeline side, in a process of its own (as a pipeline run is), against the cluster's server."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PARENT), cfg.model_dump_json(), store, deployment],
                          env={**cluster.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{cluster.logs_tail()}"
    return json.loads(next(line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")))


def kill_one_shard_mid_embedding(client, runner: StageRunner, ranges, killed: dict, stop: threading.Event) -> None:
    """Watch the store for a shard's embed temp folder (the shard is computing its features); SIGKILL the
    process of the flow run holding those rows."""
    keys = {}
    for a, b in ranges:
        crop = runner.key("crop", {}, rows=[a, b])
        keys[runner.key("embed", {"crop": crop}, role="train", rows=[a, b])] = [a, b]
    embed_dir = Path(runner.store.root) / "embed"
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    while not stop.is_set():
        busy = [keys[k] for k in keys for _ in embed_dir.glob(f".tmp-{k}-*")] if embed_dir.is_dir() else []
        if busy:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["embed-shard"])))
            for run in runs:
                if run.parameters.get("rows") == busy[0] and run.state.is_running() and run.infrastructure_pid:
                    os.kill(int(run.infrastructure_pid), signal.SIGKILL)
                    killed.update(rows=busy[0], run_id=str(run.id))
                    return
        time.sleep(0.05)


def test_shards_run_on_two_workers_and_a_killed_shard_is_recomputed_alone(cluster: LocalCluster, camvid_root, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    store = str(tmp_path / "artifacts")
    whole = run_parent(cluster, config(camvid_root, 1000), store)
    assert "shards" not in whole

    runner = StageRunner(config(camvid_root, 2), store)
    with temporary_settings(updates={PREFECT_API_URL: cluster.url}), get_client(sync_client=True) as client:
        killed: dict = {}
        stop = threading.Event()
        ranges = [(0, 2), (2, 4), (4, 6), (6, 8)]
        killer = threading.Thread(target=kill_one_shard_mid_embedding, args=(client, runner, ranges, killed, stop))
        killer.start()
        try:
            sharded = run_parent(cluster, runner.cfg, store, SHARD_DEPLOYMENT)
        finally:
            stop.set()
            killer.join()
        assert killed, f"no shard was caught mid-embedding\n{cluster.logs_tail()}"
        info = sharded["shards"]
        assert info["ranges"] == [list(r) for r in ranges] and info["missing"] == info["ranges"]
        rows = killed["rows"]
        assert info["dispatched"].pop(f"{rows[0]}-{rows[1]}") == "Crashed", cluster.logs_tail()
        assert set(info["dispatched"].values()) == {"Completed"}, info["dispatched"]
        assert info["computed_here"] == [rows]  # the killed shard, alone
        runs = client.read_flow_runs()
        workers = {r.infrastructure_pid for r in runs if r.state.is_completed() and r.parameters.get("rows")}
        assert len(workers) == 3  # three shards, each in a process of its own

    a, b = open_embedding(whole["embed"]["path"]), open_embedding(sharded["embed"]["path"])
    for name in ("features", "labels", "descriptors"):
        np.testing.assert_array_equal(np.asarray(getattr(b, name)), np.asarray(getattr(a, name)), err_msg=name)
    assert b.index == a.index and len(a.index) == 40

    again = run_parent(cluster, runner.cfg, store, SHARD_DEPLOYMENT)
    assert again["shards"]["missing"] == [] and again["shards"]["computed_here"] == []
    assert again["embed"]["key"] == sharded["embed"]["key"]
