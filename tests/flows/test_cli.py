"""The `stego` CLI: the contract users and scripts rely on, and clear errors for bad input."""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests_helpers import TINY, hand_made_run

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    exit_code: int
    output: str


def invoke(*args, timeout=600, server=True, home=None):
    """Run `stego ARGS` as a user would, in a new process: against the session's Prefect test server,
    or (``server=False``) with no server configured, so Prefect starts its own temporary one."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    if server and PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout + proc.stderr)


def test_presets_and_backbones_are_listed(prefect_harness):
    out = invoke("presets")
    assert out.exit_code == 0
    for name in ("camvid-dinov2s14", "camvid-quick", "cocostuff27-vitb8", "cityscapes27-vitb8", "potsdam3-vits8"):
        assert name in out.output
    out = invoke("backbones")
    assert out.exit_code == 0 and all(n in out.output for n in ("dino_vits8", "dinov2_vits14", "mocov2_r50", "resnet50"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "camvid-quick", "--set", "train.stepz=3"], "unknown config key 'train.stepz'"),
        (["--preset", "camvid-quick", "--set", "embed.backbone=vit_huge"], "vit_huge"),
        (["--preset", "camvid-quick", "--set", "train.lr=-1"], "train.lr"),
    ],
)
def test_run_rejects_bad_config_with_a_clear_message(prefect_harness, camvid_root, args, message, tmp_path):
    out = invoke("run", *args, "--data-root", camvid_root, "--output", tmp_path / "run", "--artifact-root", tmp_path / "a")
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert "Traceback" not in out.output


def test_missing_dataset_says_where_it_looked(prefect_harness, tmp_path):
    out = invoke("run", "--preset", "camvid-quick", "--data-root", tmp_path, "--output", tmp_path / "run")
    assert out.exit_code == 2
    assert str(tmp_path / "camvid") in out.output


def write_folder_dataset(root, n=3, size=(96, 64)):
    imgs, labs = root / "images", root / "labels"
    imgs.mkdir(parents=True)
    labs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
        Image.fromarray(rng.integers(0, 3, (size[1], size[0]), dtype=np.uint8)).save(labs / f"im{i}.png")
    return imgs, labs


def folder_args(imgs, labs):
    return ["--set", "data.dataset=folder", "--set", f"data.train_images={imgs}", "--set", f"data.train_labels={labs}",
            "--set", f"data.eval_images={imgs}", "--set", f"data.eval_labels={labs}", "--set", "data.num_classes=3"]


@pytest.mark.parametrize("defect,message", [
    ("corrupt", "im1.png"), ("label_size", "im2.png"), ("label_ids", "im0.png"), ("empty", "no images"),
])
def test_bad_input_is_named(prefect_harness, tmp_path, defect, message):
    imgs, labs = write_folder_dataset(tmp_path / "data")
    if defect == "corrupt":
        (imgs / "im1.png").write_bytes(b"this is not an image")
    elif defect == "label_size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(labs / "im2.png")
    elif defect == "label_ids":
        Image.fromarray(np.full((64, 96), 9, np.uint8)).save(labs / "im0.png")
    elif defect == "empty":
        for f in list(imgs.iterdir()):
            f.unlink()
    out = invoke("run", *folder_args(imgs, labs), *sum((["--set", t] for t in TINY), []),
                 "--output", tmp_path / "run", "--artifact-root", tmp_path / "a")
    assert out.exit_code == 2, out.output
    assert message in out.output.lower() or message in out.output
    assert "Traceback" not in out.output


@pytest.mark.slow
def test_run_predict_evaluate_on_camvid(prefect_harness, camvid_root, tmp_path):
    run_dir = tmp_path / "run"
    # No Prefect server configured: the flow must start its own temporary one.
    out = invoke("run", "--preset", "camvid-quick", *sum((["--set", t] for t in TINY), []), "--data-root", camvid_root,
                 "--output", run_dir, "--artifact-root", tmp_path / "a", server=False, home=tmp_path / "prefect-home")
    assert out.exit_code == 0, out.output
    assert "stego_cluster_crf" in out.output and "raw_kmeans" in out.output
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert all({"accuracy", "mIoU", "per_class_iou"} <= set(m) for m in metrics.values())

    images = tmp_path / "new"
    images.mkdir()
    for src in sorted((camvid_root / "camvid" / "images" / "test").iterdir())[:2]:
        Image.open(src).resize((240, 180)).save(images / f"{src.stem}.jpg")
    out = invoke("predict", "--run", run_dir, "--images", images, "--out", tmp_path / "pred", "--crf")
    assert out.exit_code == 0, out.output
    pngs = sorted(p for p in (tmp_path / "pred").glob("*.png") if "overlay" not in p.name)
    assert len(pngs) == 2 and len(list((tmp_path / "pred").glob("*_overlay.png"))) == 2
    ids = np.asarray(Image.open(pngs[0]))
    assert ids.shape == (180, 240) and ids.max() < 11  # the whole image, in CamVid's class ids
    shares = json.loads(pngs[0].with_suffix(".json").read_text())["shares"]
    assert set(shares) <= set(metrics["stego_cluster"]["per_class_iou"]) and sum(shares.values()) == pytest.approx(1)

    # `stego evaluate` on hand-made predictions: a label map with its ids permuted scores perfectly.
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    lab = np.zeros((20, 30), np.uint8)
    lab[:, 10:] = 1
    lab[15:, :] = 2
    lab[0, 0] = 255
    Image.fromarray(lab).save(labels / "a.png")
    Image.fromarray(np.choose(np.minimum(lab, 3), [5, 4, 3, 0]).astype(np.uint8)).save(preds / "a.png")
    out = invoke("evaluate", "--pred", preds, "--labels", labels, "--num-classes", 3, "--json", tmp_path / "m.json")
    assert out.exit_code == 0, out.output
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["accuracy"] == pytest.approx(1.0) and scores["mIoU"] == pytest.approx(1.0)


def test_predict_writes_full_size_maps_and_names_an_empty_folder(tmp_path):
    run = hand_made_run(tmp_path / "run")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (61, 143, 3), dtype=np.uint8)).save(images / "odd.jpg")
    out = invoke("predict", "--run", run, "--images", images, "--out", tmp_path / "pred", "--device", "cpu", server=False)
    assert out.exit_code == 0, out.output
    assert "wrote 1 class maps" in out.output and "_summary.json" in out.output
    assert Image.open(tmp_path / "pred" / "odd.png").size == (143, 61)
    assert {"odd.png", "odd_overlay.png", "odd.json", "_summary.json"} <= {p.name for p in (tmp_path / "pred").iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    out = invoke("predict", "--run", run, "--images", empty, "--out", tmp_path / "pred2", "--device", "cpu", server=False)
    assert out.exit_code == 2 and "holds no images" in out.output and "Traceback" not in out.output
