"""The quality scripts in bench/ fail as `stego` does: one line naming what to fix, exit 2, no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("script", ["transfer.py", "robustness.py", "dim_sweep.py"])
def test_no_data_root_is_one_line_before_anything_runs(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STEGO_DATA_ROOT"}
    env["STEGO_HOME"] = str(tmp_path / "home")
    out = tmp_path / "out.json"
    proc = run_bench(script, "--seeds", "0", "--json", str(out), env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: no data root") and "STEGO_DATA_ROOT" in lines[-1]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()  # nothing was run, so nothing is written


def test_a_data_root_that_is_no_folder_is_named_and_the_results_so_far_are_kept(tmp_path):
    results = tmp_path / "transfer.json"
    kept = {"cells": {"camvid->camvid": {"0": {"raw_kmeans": {"mIoU": 0.2, "accuracy": 0.5}}}}}
    results.write_text(json.dumps(kept))
    env = dict(os.environ, STEGO_DATA_ROOT=str(tmp_path / "nowhere"), STEGO_HOME=str(tmp_path / "home"))
    proc = run_bench("transfer.py", "--seeds", "0", "--json", str(results), env=env)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path / "nowhere") in last
    assert "Traceback" not in proc.stderr
    assert json.loads(results.read_text()) == kept
