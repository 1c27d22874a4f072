"""Safe defaults of what users start: every server binds to 127.0.0.1 unless told otherwise, and the
tracking fallback is opt-in. (Loading files safely, names, secrets: ``tests/tasks/test_faults.py``.)"""
from __future__ import annotations

import subprocess

import pytest
import typer.main
from typer.testing import CliRunner

from flows import deploy
from flows.cli import app
from flows.pipeline import stego_pipeline
from tasks.tracking import server_command


class Recorder:
    """Stands in for ``subprocess.Popen``: records the command, then behaves as a process that exited 1."""

    commands: list[list[str]] = []

    def __init__(self, args, **kwargs):
        Recorder.commands.append([str(a) for a in args])
        self.returncode = 1

    def poll(self):
        return 1

    def wait(self, timeout=None):
        return 0

    def terminate(self):
        pass


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    Recorder.commands = []
    monkeypatch.setattr(subprocess, "Popen", Recorder)
    monkeypatch.setenv("STEGO_HOME", str(tmp_path))
    return Recorder.commands


def host_of(command: list[str]) -> str:
    return command[command.index("--host") + 1]


def test_mlflow_server_command_binds_localhost_by_default():
    assert host_of(server_command("sqlite:///x.db", "/tmp/a", 5000)) == "127.0.0.1"
    assert host_of(server_command("sqlite:///x.db", "/tmp/a", 5000, host="0.0.0.0")) == "0.0.0.0"


def test_prefect_server_binds_localhost_by_default(recorded, tmp_path):
    with pytest.raises(RuntimeError, match="prefect server exited 1"):
        deploy.start_server(4999, env={}, log=tmp_path / "log")
    [command] = recorded
    assert command[1:3] == ["server", "start"] and host_of(command) == "127.0.0.1"


def test_cli_servers_bind_localhost_by_default(recorded):
    runner = CliRunner()
    result = runner.invoke(app, ["ui", "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:5999" in result.output
    result = runner.invoke(app, ["server", "--port", "4998"])
    assert result.exit_code == 2 and "prefect server exited 1" in result.output
    mlflow_ui, prefect_server = recorded
    assert mlflow_ui[1] == "server" and host_of(mlflow_ui) == "127.0.0.1"
    assert prefect_server[1:3] == ["server", "start"] and host_of(prefect_server) == "127.0.0.1"
    params = {p.name: p for p in typer.main.get_command(app).commands["server"].params}
    assert params["host"].default == "127.0.0.1"


def test_tracking_fallback_is_opt_in():
    schema = stego_pipeline.parameters.properties["tracking_fallback"]
    assert schema["default"] is False and schema["type"] == "boolean"
    params = {p.name: p for p in typer.main.get_command(app).commands["run"].params}
    assert params["tracking_fallback"].default is False and params["tracking_fallback"].opts == ["--tracking-fallback"]
