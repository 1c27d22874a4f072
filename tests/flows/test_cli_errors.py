"""The one error path of the ``stego`` command line (flows/errors.py): expected failures exit 2 with
one line; a bug exits 1 with one line naming the log file that holds the traceback; ``--debug``
prints it; tracebacks that libraries log go to the log file too. And the three cases of issue 16."""
from __future__ import annotations

import errno
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from flows.errors import divert_logged_tracebacks, expected_message, one_line, report

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()


def invoke(args, home: Path):
    return RUNNER.invoke(app, list(map(str, args)), env={"STEGO_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"})


def cut_png(folder: Path, name: str, n_bytes: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 2, (32, 32), dtype=np.uint8)).save(path)
    if n_bytes is not None:
        path.write_bytes(path.read_bytes()[:n_bytes])
    return path


# ---------------------------------------------------------------------------- the three cases
def test_evaluate_with_a_truncated_prediction_names_it(tmp_path):
    """Through the real entry point (``python -m flows.cli``, as the ``stego`` script)."""
    for i in range(3):
        cut_png(tmp_path / "pred", f"a{i}", n_bytes=60 if i == 1 else None)
        cut_png(tmp_path / "labels", f"a{i}")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "--pred", tmp_path / "pred", "--labels",
                           tmp_path / "labels", "--num-classes", "2"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "STEGO_HOME": str(tmp_path / "home")}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: cannot read prediction {tmp_path / 'pred' / 'a1.png'}: "
                                   "image file is truncated; fix or remove it"), proc.stderr


def test_compare_with_a_malformed_filter_names_it(tmp_path):
    result = invoke(["compare", "--filter", "garbage ==="], tmp_path)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]  # MLflow logs a line or two
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert errors[0].startswith("error: --filter 'garbage ===' is not a valid MLflow filter: Invalid clause(s) "
                                "in filter string: 'garbage', '==='; write clauses such as"), result.output


def test_run_with_weights_that_are_no_checkpoint_fails_before_any_stage(tmp_path, camvid_root):
    weights = tmp_path / "weights.pth"
    weights.write_text("<html>404 not found</html>\n")
    result = invoke(["run", "--preset", "camvid-quick", "--set", f"embed.weights={weights}", "--set",
                     f"data.data_root={camvid_root}", "--artifact-root", tmp_path / "a",
                     "--output", tmp_path / "run"], tmp_path / "home")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: embed.weights: could not read weights file '{weights}': it is not a PyTorch checkpoint (it cannot "
        "be read as tensors); pass a PyTorch checkpoint of tensors (.pth/.pt, e.g. torch.save(model.state_dict(), "
        "FILE)) or a .safetensors file"), result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ the error path
def test_a_bug_exits_1_with_one_line_and_the_traceback_in_a_log(tmp_path, monkeypatch):
    def broken():
        return {}["no such key"]

    monkeypatch.setattr("stego_core.presets.list_presets", broken)
    result = invoke(["presets"], tmp_path)
    assert result.exit_code == 1
    line = result.output.strip()
    found = re.fullmatch(r"error: unexpected KeyError: 'no such key' \(a bug in stego or a library: the full "
                         r"traceback is in (\S+\.log); rerun with `stego --debug \.\.\.` to print it\)", line)
    assert found, line
    log = Path(found.group(1))
    assert log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "command: " in text and "Traceback (most recent call last)" in text and "in broken" in text

    monkeypatch.setenv("STEGO_DEBUG", "0")  # --debug sets it to 1 in this process; restored after the test
    debug = RUNNER.invoke(app, ["--debug", "presets"], env={"STEGO_HOME": str(tmp_path)})
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.output and "in broken" in debug.output
    assert debug.output.strip().splitlines()[-1].startswith("error: unexpected KeyError")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("stego_core.presets.list_presets", interrupted)
    result = invoke(["presets"], tmp_path)
    assert result.exit_code == 130 and result.output.strip() == "interrupted"


def test_expected_failures_are_one_line():
    with pytest.raises(OSError) as full:  # a real full disk: /dev/full answers every write with ENOSPC
        with open("/dev/full", "w") as f:
            f.write("x")
    assert full.value.errno == errno.ENOSPC
    message = expected_message(full.value)
    assert message.startswith("no space left on the device") and "free space" in message
    assert expected_message(KeyError("x")) is None and expected_message(RuntimeError("from a library")) is None
    assert one_line("invalid configuration:\n  train.lr: bad\n  knn.k: bad") == \
        ("invalid configuration: train.lr: bad; knn.k: bad", False)
    code, text = report(ValueError("a\nb"), debug=False, argv=["stego"])
    assert (code, text) == (2, "error: a; b")


def test_a_runtime_error_raised_by_the_project_is_expected(tmp_path):
    import dataclasses
    import socket

    from stego_core.backbones import get_backbone_spec
    from stego_core.backbones.weights import fetch_url_weights

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    spec = dataclasses.replace(get_backbone_spec("dino_vits8"), url=f"http://127.0.0.1:{port}/w.pth")
    with pytest.raises(RuntimeError) as caught:  # a download that cannot connect
        fetch_url_weights(spec, cache_dir=tmp_path)
    assert expected_message(caught.value).startswith("could not download weights for backbone 'dino_vits8'")


def test_logged_tracebacks_go_to_the_log_and_the_terminal_gets_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEGO_HOME", str(tmp_path))
    monkeypatch.delenv("STEGO_DEBUG", raising=False)
    logger = logging.getLogger("test.divert")
    logger.propagate = False
    file_copy, buffer = tmp_path / "file.log", io.StringIO()
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(file_copy), logging.StreamHandler(buffer)]
    for h in handlers:
        logger.addHandler(h)
    try:
        divert_logged_tracebacks(argv=["stego", "run"])
        try:
            raise ValueError("inside a task")
        except ValueError:
            logger.exception("Task run failed")
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.propagate = True
    shown = capsys.readouterr().err.strip()
    found = re.fullmatch(r"Task run failed \(traceback in (\S+)\)", shown)
    assert found, shown
    assert "ValueError: inside a task" in Path(found.group(1)).read_text()
    for kept in (file_copy.read_text(), buffer.getvalue()):  # a file, a buffer (a log capture) keep it
        assert "Traceback (most recent call last)" in kept
