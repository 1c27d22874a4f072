"""`stego run` on bad inputs, as a user meets them: one clear line and exit 2 before any compute, or
(unicode paths, ``data.bad_files=skip``) a finished run. Files are made on the fly in tmp folders."""
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests_helpers import TINY

REPO = Path(__file__).resolve().parents[2]


def invoke(*args, timeout=600):
    """Run `stego ARGS` in a new process (the session's Prefect test server, when one is up)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def write_set(root: Path, n=4, size=(96, 64), name="im{}"):
    imgs, labs = root / "images", root / "labels"
    imgs.mkdir(parents=True)
    labs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        file = f"{name.format(i)}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(imgs / file)
        Image.fromarray(rng.integers(0, 3, (size[1], size[0]), dtype=np.uint8)).save(labs / file)
    return imgs, labs


def folder_args(imgs, labs, *extra, tiny=TINY):
    """``--set`` options: the folder dataset (every image of it: no limits) and the tiny run."""
    sets = ["data.dataset=folder", f"data.train_images={imgs}", f"data.train_labels={labs}",
            f"data.eval_images={imgs}", f"data.eval_labels={labs}", "data.num_classes=3", *tiny,
            "data.train_limit=null", "data.eval_limit=null", *extra]
    return sum((["--set", s] for s in sets), [])


def bomb_png() -> bytes:
    """A PNG whose header claims 30000 x 30000 pixels (900 MP)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("defect,pattern", [
    ("truncated_jpeg", r"cannot read image .*im1\.jpg: image file is truncated"),
    ("zero_bytes", r"cannot read image .*im1\.jpg: the file is empty \(0 bytes\)"),
    ("text_as_jpeg", r"cannot read image .*im1\.jpg: cannot identify image file"),
    ("too_small", r"image .*im1\.png is 12x8 px: too small for dinov2_vits14.*at least 27 px"),
    ("bomb", r"cannot read image .*im1\.png: it is too large to decode safely"),
    ("label_size", r"label .*labels/im2\.png is 10x10 \(WxH\) but its image is 96x64 \(.*images/im2\.png\)"),
    ("label_ids", r"label .*im0\.png holds ids \[7\] outside the expected range 0\.\.2 of 3 classes"),
    ("missing_labels", r"2 of 4 images in .*images have no label .*\(im1, im3\)"),
])
def test_bad_files_stop_the_run_with_one_line(tmp_path, defect, pattern):
    imgs, labs = write_set(tmp_path / "data")
    if defect in ("truncated_jpeg", "zero_bytes", "text_as_jpeg"):
        (imgs / "im1.png").unlink()
        pixels = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
        stream = io.BytesIO()
        Image.fromarray(pixels).save(stream, "JPEG")
        buf = stream.getvalue()
        data = {"truncated_jpeg": buf[: len(buf) // 2], "zero_bytes": b"", "text_as_jpeg": b"a,b\n1,2\n"}[defect]
        (imgs / "im1.jpg").write_bytes(data)
    elif defect == "too_small":
        Image.new("RGB", (12, 8)).save(imgs / "im1.png")
        Image.new("L", (12, 8)).save(labs / "im1.png")
    elif defect == "bomb":
        (imgs / "im1.png").write_bytes(bomb_png())
    elif defect == "label_size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(labs / "im2.png")
    elif defect == "label_ids":
        Image.fromarray(np.full((64, 96), 7, np.uint8)).save(labs / "im0.png")
    elif defect == "missing_labels":
        (labs / "im1.png").unlink()
        (labs / "im3.png").unlink()
    code, out = invoke("run", *folder_args(imgs, labs), "--output", tmp_path / "run", "--artifact-root", tmp_path / "a")
    assert code == 2, out
    assert re.search(pattern, out), out
    assert "data.bad_files=skip" in out and "Traceback" not in out
    assert not (tmp_path / "a").exists()  # nothing was computed


def test_empty_folder_is_named(tmp_path):
    imgs, labs = write_set(tmp_path / "data", n=1)
    (imgs / "im0.png").unlink()
    code, out = invoke("run", *folder_args(imgs, labs), "--output", tmp_path / "run")
    assert code == 2 and f"image folder {imgs} holds no images" in out and "Traceback" not in out, out


@pytest.mark.parametrize("text,pattern", [
    ("train:\n  steps: [3\n", r"config file .*c\.yaml is not valid YAML at line 3, column 1"),
    ("train: {stepz: 3}\n", r"train\.stepz: Extra inputs are not permitted \(got 3\); valid keys at train: .*steps"),
    ("train: {steps: abc}\n", r"train\.steps: Input should be a valid integer"),
    ("train: {lr: -1}\n", r"train\.lr: Input should be greater than 0"),
    ("knn: {k: 30, num_neighbors: 3}\n", r"knn\.k=30 is larger than the training set: 20 images \(4 x 5 five-crops\)"),
])
def test_bad_config_files_stop_the_run_with_a_clear_message(tmp_path, text, pattern):
    imgs, labs = write_set(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(text)
    args = folder_args(imgs, labs, tiny=[])  # the file is the only other source of values
    code, out = invoke("run", "--config", tmp_path / "c.yaml", *args, "--output", tmp_path / "run")
    assert code == 2 and re.search(pattern, out) and "Traceback" not in out, out


@pytest.mark.slow
def test_unicode_and_spaces_in_paths_run_end_to_end(prefect_harness, tmp_path):
    root = tmp_path / "dätä sét" / "日本 語"
    imgs, labs = write_set(root, name="ñame {} é")
    out_dir = tmp_path / "rün öut"
    code, out = invoke("run", *folder_args(imgs, labs, "crf.enabled=false"), "--output", out_dir,
                       "--artifact-root", tmp_path / "ärt")
    assert code == 0, out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["config"]["data"]["train_images"] == str(imgs)
    assert all(0 <= m["accuracy"] <= 1 for m in metrics["metrics"].values())


@pytest.mark.slow
def test_skip_policy_runs_on_the_good_files_and_records_the_bad_ones(prefect_harness, tmp_path):
    """6 images, 2 bad (a truncated image, a label with an id above the classes): the run finishes on
    4, warns, writes OUTPUT/bad_files.json and tags the MLflow run bad_files=2 (with the same list)."""
    from mlflow import MlflowClient

    imgs, labs = write_set(tmp_path / "data", n=6)
    (imgs / "im1.png").write_bytes((imgs / "im1.png").read_bytes()[:300])
    Image.fromarray(np.full((64, 96), 9, np.uint8)).save(labs / "im4.png")
    out_dir = tmp_path / "run"
    code, out = invoke("run", *folder_args(imgs, labs, "data.bad_files=skip", "crf.enabled=false"),
                       "--output", out_dir, "--artifact-root", tmp_path / "a")
    assert code == 0, out
    assert "left out 2 bad files" in out
    listed = json.loads((out_dir / "bad_files.json").read_text())
    assert [(Path(b["file"]).name, b["split"]) for b in listed] == [("im1.png", "train"), ("im4.png", "train")]
    assert "cannot read image" in listed[0]["reason"] and "holds ids [9]" in listed[1]["reason"]
    config = json.loads((out_dir / "metrics.json").read_text())["config"]
    assert config["data"]["exclude"] == [str(imgs / "im1.png"), str(labs / "im4.png")]
    embedded = [json.loads(p.read_text()) for p in (tmp_path / "a" / "embed").glob("*/index.json")]
    assert sorted(len(rows) for rows in embedded) == [4, 20]  # eval: 4 images; train: 4 x 5 crops
    assert not any(row["stem"].startswith(("im1", "im4")) for rows in embedded for row in rows)
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", out).group(1)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(run_id).data.tags["bad_files"] == "2"
    assert "bad_files.json" in [a.path for a in client.list_artifacts(run_id)]
