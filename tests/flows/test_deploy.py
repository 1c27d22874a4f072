"""The server side of `stego deploy` / `stego worker`: the deployments file, work pools, the shared
result storage (any fsspec URL), and the worker's command line."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flows.deploy import PREFECT_FILE, read_deployments, register, worker_command, worker_env


def test_the_shipped_deployments_file_names_every_flow_and_pool() -> None:
    entries = {e["name"]: e for e in read_deployments(PREFECT_FILE)}
    assert set(entries) == {"stego-pipeline", "embed-shard", "backbone-sweep", "param-sweep", "dim-sweep", "stego-predict"}
    assert {n: e["work_pool"]["name"] for n, e in entries.items()} == {
        "stego-pipeline": "gpu", "embed-shard": "gpu", "backbone-sweep": "cpu", "param-sweep": "cpu", "dim-sweep": "cpu",
        "stego-predict": "gpu"}
    for e in entries.values():  # entrypoints resolve from the project root, where `stego deploy` runs
        path, func = e["entrypoint"].split(":")
        assert f"def {func}(" in (PREFECT_FILE.parents[1] / path).read_text()


@pytest.mark.parametrize("text, message", [("deployments: []\n", "declares no deployments"),
                                           ("deployments: [\n", "not valid YAML")])
def test_a_bad_deployments_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "prefect.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_deployments(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_deployments(tmp_path / "absent.yaml")


def test_worker_pins_its_gpu_and_runs_a_process_worker() -> None:
    cmd = worker_command("gpu", limit=1, name="gpu-host-gpu3")
    assert cmd[1:] == ["worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1", "--name", "gpu-host-gpu3"]
    assert worker_env("3", base={})["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(None, base={})


def test_register_refuses_unknown_deployment_names_before_deploying(prefect_harness) -> None:
    with pytest.raises(ValueError, match=r"unknown deployment\(s\) \['stego-pipelin'\]"):
        register(PREFECT_FILE, names=["stego-pipelin"])


def test_result_storage_on_an_fsspec_url_is_the_server_default_and_holds_flow_results(prefect_harness) -> None:
    import fsspec
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.deploy import set_result_storage

    url = f"memory://stego-results-{uuid.uuid4().hex}/prefect"
    slug = set_result_storage(url)
    assert slug == "remote-file-system/stego-results"
    try:
        @flow(persist_result=True, result_serializer="json")
        def answer() -> dict:
            return {"mIoU": 0.25}

        state = answer(return_state=True)
        fs = fsspec.filesystem("memory")
        assert fs.ls(url.removeprefix("memory://")), "nothing was written to the result storage URL"
        with get_client(sync_client=True) as client:
            stored = client.read_flow_run(state.state_details.flow_run_id).state
        assert stored.result() == {"mIoU": 0.25}  # read back through the saved block, as a sweep does
    finally:
        with get_client(sync_client=True) as client:
            client.clear_server_default_result_storage()


@pytest.mark.parametrize("args, message", [
    (["--grid", "loss.b_self"], "must look like field=v1,v2"),
    (["--backbone", "resnet50", "--grid", "loss.b_self=0.1,0.2"], "either --backbone"),
    ([], "either --backbone"),
    (["--grid", "loss.b_slef=0.1,0.2", "--local"], "unknown config key 'loss.b_slef'"),
    (["--dims", "3,x"], "--dims: dimensions are integers >= 1, got ['x']"),
    (["--dims", "3", "--seeds", "-1"], "--seeds: seeds are integers >= 0"),
    (["--dims", "3", "--backbone", "resnet50"], "either --backbone"),
    (["--dims", "3,500", "--local"], "train.dim=500 is more than dinov2_vits14's 384 channels"),
])
def test_sweep_command_refuses_bad_arguments_before_contacting_a_server(args, message) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["sweep", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_sweep_grid_values_are_typed() -> None:
    from flows.cli import sweep_table

    summary = {"children": [{"label": "loss.b_self=0.1", "state": "Completed",
                             "metrics": {"stego_cluster": {"accuracy": 0.5, "mIoU": 0.25}}},
                            {"label": "loss.b_self=0.2", "state": "Failed"}]}
    table = sweep_table(summary).splitlines()
    assert "25.0%" in table[1] and "Completed" in table[1]
    assert "Failed" in table[2] and table[2].rstrip().endswith("-")
