"""`stego cache verify` / `stego cache list`: what a user sees, and the exit codes scripts rely on.

The artifacts are real folders published under a tmp ``$STEGO_HOME``; the commands run in-process
through typer's CliRunner, and once through the installed ``stego`` entry point.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.catalog import ArtifactStore

REPO = Path(__file__).resolve().parents[2]


def stego(home: Path, *args: str):
    return CliRunner().invoke(app, ["cache", *args], env={"STEGO_HOME": str(home)})


def _publish(store: ArtifactStore, stage: str, key: str, files: dict[str, bytes]) -> Path:
    with store.create(stage, key) as folder:
        for rel, data in files.items():
            (folder / rel).write_bytes(data)
    return store.location(stage, key)


def _flip_byte_keep_stat(path: Path) -> None:
    """Edit one byte in place and restore the mtime: opening trusts the stamp; verify re-hashes."""
    info = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"\xff")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A STEGO_HOME whose artifact cache holds crop/k1 (corrupted where a stamp cannot see it),
    crop/k2 and knn/k3."""
    store = ArtifactStore(tmp_path / "artifacts")
    path = _publish(store, "crop", "k1", {"a.bin": b"\x01" * 4000})
    _publish(store, "crop", "k2", {"b.bin": b"\x02" * 100})
    _publish(store, "knn", "k3", {"nn.bin": b"\x03" * 100})
    _flip_byte_keep_stat(path / "a.bin")
    assert store.get("crop", "k1") is not None  # the stamp is trusted: nothing re-hashed it
    return tmp_path


def test_verify_names_the_corrupt_artifact_and_fix_removes_it(home: Path) -> None:
    store = ArtifactStore(home / "artifacts")
    out = stego(home, "verify")
    assert out.exit_code == 1, out.output
    path = store.location("crop", "k1")
    assert f"corrupt crop/k1 at {path}: file 'a.bin' does not match its sha256" in out.output
    assert "k2" not in out.output and "k3" not in out.output
    assert "3 artifacts checked, 1 corrupt; 4.1 KB hashed in" in out.output
    assert "stego cache verify --fix" in out.output

    out = stego(home, "verify", "--fix")
    assert out.exit_code == 0, out.output
    assert f"removed crop/k1 at {path}" in out.output and "1 corrupt (removed" in out.output
    assert store.get("crop", "k1") is None and not path.exists()
    assert store.get("crop", "k2") is not None and store.get("knn", "k3") is not None

    out = stego(home, "verify")
    assert out.exit_code == 0 and "2 artifacts checked, 0 corrupt" in out.output, out.output


def test_verify_filters_by_stage_and_explains_an_unknown_one(home: Path) -> None:
    out = stego(home, "verify", "--stage", "knn")
    assert out.exit_code == 0 and "1 artifact checked, 0 corrupt" in out.output, out.output
    out = stego(home, "verify", "--stage", "crop")
    assert out.exit_code == 1 and "2 artifacts checked, 1 corrupt" in out.output, out.output
    out = stego(home, "verify", "--stage", "nope")
    assert out.exit_code == 2, out.output
    assert out.output.strip() == f"error: no stage 'nope' under {home / 'artifacts'}; stages there: crop, knn"


def test_a_missing_root_is_one_clear_error(tmp_path: Path, home: Path) -> None:
    for args in (["verify"], ["list"]):
        out = stego(tmp_path / "empty-home", *args)
        assert out.exit_code == 2, out.output
        assert out.output.strip().splitlines() == [
            f"error: no artifact cache at {tmp_path / 'empty-home' / 'artifacts'}: run `stego run` first, or"
            " pass --artifact-root (the --artifact-root of `stego run`)"
        ]
    out = stego(tmp_path / "empty-home", "verify", "--artifact-root", str(home / "artifacts"), "--stage", "knn")
    assert out.exit_code == 0 and "1 artifact checked" in out.output, out.output


def test_list_shows_stage_key_size_and_creation(home: Path) -> None:
    out = stego(home, "list")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["stage", "key", "size", "created"]
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["crop", "k1", "3.9", "KB"], ["crop", "k2", "100", "B"], ["knn", "k3", "100", "B"],
    ]
    assert all(line.split()[4].startswith("20") for line in lines[1:4])  # ISO timestamps
    assert lines[4] == "3 artifacts, 4.1 KB"
    out = stego(home, "list", "--stage", "knn")
    assert out.exit_code == 0 and len(out.output.splitlines()) == 3 and "knn" in out.output


def test_the_default_root_is_the_pipelines(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import cache_store
    from flows.pipeline import default_artifact_root

    monkeypatch.setenv("STEGO_HOME", str(home))
    assert cache_store(None).root == Path(default_artifact_root()).resolve()


def test_the_installed_command_exits_1_on_corruption(home: Path) -> None:
    env = {**os.environ, "STEGO_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "cache", "verify"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "corrupt crop/k1" in proc.stdout and proc.stderr == ""
