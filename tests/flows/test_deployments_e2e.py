"""End to end on real services: a Prefect server and two process workers on 127.0.0.1, the
deployments registered from deployments/prefect.yaml by `stego deploy`, and a backbone sweep
triggered through the API the way the UI's Run button does (tiny CamVid subset, random weights).
"""
from __future__ import annotations

import time

import pytest

from flows.deploy import LocalCluster
from stego_core.presets import build_config
from tests_helpers import TINY, wait_final

pytestmark = pytest.mark.slow

BACKBONES = ["dino_vits8", "resnet50"]


def tiny_config():
    return build_config(overrides=TINY + ["embed.pretrained=false", "embed.backbone=dino_vits8",
                                          "embed.eval_resolution=160", "name=sweep-e2e"])


def run_sweep_via_api(client, cluster: LocalCluster) -> object:
    """POST /deployments/{id}/create_flow_run (the UI's Run button), then wait until final."""
    deployment = client.read_deployment_by_name("backbone_sweep/backbone-sweep")
    run = client.create_flow_run_from_deployment(deployment.id, parameters={
        "config": tiny_config().model_dump(mode="json"), "backbones": BACKBONES,
        "tracking_uri": cluster.env["MLFLOW_TRACKING_URI"]})
    return wait_final(client, run, cluster, timeout_s=900)


def children_of(client, parent_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    return client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))


def test_deploy_registers_every_deployment_with_its_pool(cluster: LocalCluster, client) -> None:
    for name in ("stego_pipeline/stego-pipeline", "backbone_sweep/backbone-sweep", "param_sweep/param-sweep",
                 "dim_sweep/dim-sweep", "stego_predict/stego-predict", "embed_shard/embed-shard"):
        assert f"deployed {name}" in cluster.deploy_output
    pools = {d.name: d.work_pool_name for d in client.read_deployments()}
    assert pools == {"stego-pipeline": "gpu", "backbone-sweep": "cpu", "param-sweep": "cpu", "dim-sweep": "cpu",
                     "stego-predict": "gpu", "embed-shard": "gpu"}
    assert {p.name: p.type for p in client.read_work_pools()} == {"gpu": "process", "cpu": "process"}


def test_parameter_schema_is_the_config_model_with_defaults_and_bounds(client) -> None:
    schema = client.read_deployment_by_name("stego_pipeline/stego-pipeline").parameter_openapi_schema
    assert schema["properties"]["preset"]["default"] == "camvid-dinov2s14" and "camvid-quick" in schema["properties"]["preset"]["enum"]
    assert schema["properties"]["config"]["anyOf"][0]["$ref"] == "#/definitions/ExperimentConfig"
    train = schema["definitions"]["TrainConfig"]["properties"]
    assert train["lr"]["default"] == 5e-4 and train["lr"]["exclusiveMinimum"] == 0.0
    assert train["dim"]["minimum"] == 1 and train["dim"]["maximum"] == 4096
    assert train["dim"]["description"] == "code dimension"
    loss = schema["definitions"]["LossConfig"]["properties"]
    assert loss["shift_mode"]["enum"] == ["fixed", "calibrated", "per_anchor"]
    assert loss["b_self"]["minimum"] == -1.0 and loss["b_self"]["maximum"] == 1.0
    assert schema["properties"]["artifact_root"]["description"].startswith("the artifact cache")
    sweep = client.read_deployment_by_name("backbone_sweep/backbone-sweep").parameter_openapi_schema
    assert set(sweep["properties"]["backbones"]["items"]["enum"]) >= set(BACKBONES)


def test_backbone_sweep_runs_children_on_the_gpu_worker_nested_in_prefect_and_mlflow(cluster: LocalCluster, client) -> None:
    from mlflow import MlflowClient

    parent = run_sweep_via_api(client, cluster)
    assert parent.state.is_completed(), f"{parent.state.name}: {parent.state.message}\n{cluster.logs_tail()}"
    assert parent.work_pool_name == "cpu"
    summary = parent.state.result()  # read back from the result storage `stego deploy` set
    assert [c["label"] for c in summary["children"]] == [f"embed.backbone={b}" for b in BACKBONES]

    children = children_of(client, parent.id)
    pipeline = client.read_deployment_by_name("stego_pipeline/stego-pipeline")
    assert len(children) == 2
    for child in children:
        assert child.state.is_completed(), child.state.message
        assert child.deployment_id == pipeline.id and child.work_pool_name == "gpu"
        assert child.infrastructure_pid  # started by the worker as its own process
    assert {str(c.id) for c in children} == {c["flow_run_id"] for c in summary["children"]}

    mlflow = MlflowClient(tracking_uri=cluster.env["MLFLOW_TRACKING_URI"])
    experiment = mlflow.get_experiment_by_name("sweep-e2e")
    runs = mlflow.search_runs([experiment.experiment_id])
    parent_run = summary["mlflow_run_id"]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_run]
    assert len(nested) == 2 and all(r.info.status == "FINISHED" for r in nested)
    assert sorted(r.data.tags["backbone"] for r in nested) == sorted(BACKBONES)
    assert {r.data.tags["prefect.flow_run_id"] for r in nested} == {str(c.id) for c in children}
    assert mlflow.get_run(parent_run).data.tags["sweep.completed"] == "2"
    for child in summary["children"]:
        assert 0.0 <= child["metrics"]["stego_cluster"]["mIoU"] <= 1.0
        assert not all(child["cached"].values())  # the first sweep computed

    again = run_sweep_via_api(client, cluster)
    assert again.state.is_completed(), f"{again.state.name}: {again.state.message}\n{cluster.logs_tail()}"
    second = again.state.result()
    for child in second["children"]:
        assert child["cached"] and all(child["cached"].values()), child["cached"]
    firsts = {c["label"]: c["metrics"] for c in summary["children"]}
    assert {c["label"]: c["metrics"] for c in second["children"]} == firsts


@pytest.mark.load  # 4-5 min; the queue's behaviour is also what tests/flows/test_sweep_load.py (16 children) checks
def test_eight_children_queue_on_one_worker_and_all_complete_one_at_a_time(cluster: LocalCluster, client) -> None:
    """Load: 8 children on the gpu pool's single worker (limit 1). They differ only in the CRF, so
    every stage above the CRF predictions is a cache hit and the run measures the queue itself."""
    deployment = client.read_deployment_by_name("param_sweep/param-sweep")
    started = time.monotonic()
    run = client.create_flow_run_from_deployment(deployment.id, parameters={
        "config": tiny_config().model_dump(mode="json"), "grid": {"crf.iterations": list(range(1, 9))},
        "tracking": False})
    parent = wait_final(client, run, cluster, timeout_s=900)
    wall = time.monotonic() - started
    assert parent.state.is_completed(), f"{parent.state.message}\n{cluster.logs_tail()}"
    children = sorted(children_of(client, parent.id), key=lambda r: r.start_time)
    assert len(children) == 8 and all(c.state.is_completed() and c.work_pool_name == "gpu" for c in children)
    assert sorted(c.parameters["config"]["crf"]["iterations"] for c in children) == list(range(1, 9))
    for before, after in zip(children, children[1:]):  # one at a time: no two children overlap
        assert after.start_time >= before.end_time, (before.name, after.name)
    busy = sum(c.total_run_time.total_seconds() for c in children)
    queue = (children[-1].end_time - children[0].start_time).total_seconds() - busy
    print(f"\n8 children: sweep wall {wall:.1f} s, child run time {busy:.1f} s, "
          f"gaps between children {queue:.1f} s ({queue / 7:.1f} s per hand-over)")
    assert queue / 7 < 60  # hand-over between queued runs: worker poll (2 s here) + process start
