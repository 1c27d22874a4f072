"""Settings shared by the end-to-end tests: a tiny but real pipeline run; a synthetic folder dataset."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from stego_core.config import ExperimentConfig

TINY = [
    "data.train_limit=4", "data.eval_limit=3", "embed.train_resolution=112", "embed.eval_resolution=154",
    "train.steps=12", "train.dim=16", "train.batch_size=8", "loss.calibration_batches=2", "knn.k=10",
    "knn.num_neighbors=3", "cluster.probe_steps=15", "linear.steps=40", "linear.lr=0.05", "cluster.kmeans_restarts=1",
    "crf.processes=2", "crf.iterations=3", "device=cpu", "cluster.method=probe", "cluster.refine_steps=5",
]




def tiny_overrides(*extra: str) -> dict:
    """``TINY`` (+ ``extra``) as the run form's ``overrides``: dotted key -> value (values read as YAML, as ``--set``)."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in (*TINY, *extra))}


def flow_run_artifacts(flow_run_id) -> dict:
    """``{key: artifact}`` of the keyed Prefect artifacts a flow run created (read from the configured server;
    Prefect's own result records, which have no key, left out)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def wait_final(client, run, cluster, timeout_s: float = 300):
    """``run`` (a flow run or its id) read back from the server once final; the cluster's logs when it is not."""
    import time

    run_id = getattr(run, "id", run)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not final after {timeout_s} s\n{cluster.logs_tail()}")


SYNTHETIC_CLASSES = 3


def synthetic_folder(root: Path, name: str, count: int, seed: int, classes: int = SYNTHETIC_CLASSES) -> tuple[Path, Path]:
    """``count`` random 64x48 RGB images with blocky ``classes``-class labels (3 by default)."""
    rng = np.random.default_rng(seed)
    images, labels = root / name / "images", root / name / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(count):
        base = rng.integers(0, classes, size=(6, 8))
        label = np.kron(base, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
        pixels = (label[..., None] * (210 // classes) + rng.integers(0, 60, size=(48, 64, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{name}{i:02d}.png")
        Image.fromarray(label).save(labels / f"{name}{i:02d}.png")
    return images, labels


def synthetic_config(data: Path, **memory) -> ExperimentConfig:
    """The stages' config for the ``synthetic_folder`` splits ``train`` and ``val`` under ``data``: a random
    ViT-S/8 at 32 px, a few steps of everything; ``memory`` sets the budget fields."""
    return ExperimentConfig.model_validate({
        "device": "cpu", "seed": 1,
        "data": {"dataset": "folder", "train_images": str(data / "train/images"), "train_labels": str(data / "train/labels"),
                 "eval_images": str(data / "val/images"), "eval_labels": str(data / "val/labels"), "num_classes": SYNTHETIC_CLASSES},
        "embed": {"backbone": "dino_vits8", "pretrained": False, "train_resolution": 32, "eval_resolution": 32,
                  "batch_size": 4},
        "knn": {"k": 5, "num_neighbors": 3},
        "train": {"steps": 8, "dim": 6, "batch_size": 4, "log_every": 1},
        "loss": {"calibration_batches": 2, "feature_samples": 3, "neg_samples": 2},
        "cluster": {"kmeans_restarts": 2, "kmeans_max_tokens": 1000, "refine_steps": 3, "probe_steps": 6},
        "linear": {"steps": 6, "loss_resolution": 8},
        "memory": memory,
    })


HAND_RUN_CLUSTERS, HAND_RUN_DIM = 4, 8
HAND_RUN_ASSIGNMENT = [2, -1, 0, 1]  # cluster -> CamVid class; cluster 1 matched to no class


def hand_made_run(root: Path, *, matching: bool = True, flip: bool = True) -> Path:
    """A run folder as ``stego run --output`` writes it (metrics.json + model/), built by hand in a second:
    a random ViT-S/14 at 28 px, a random head and ``HAND_RUN_CLUSTERS`` centroids, and (``matching``)
    CamVid's class names with the known ``HAND_RUN_ASSIGNMENT`` as the stego_cluster matching."""
    import json

    import torch

    from stego_core.data import DATASETS
    from stego_core.head import SegmentationHead
    from stego_core.stages import save_head

    cfg = ExperimentConfig.model_validate({
        "device": "cpu", "embed": {"backbone": "dinov2_vits14", "pretrained": False, "eval_resolution": 28, "flip_tta": flip},
        "train": {"dim": HAND_RUN_DIM}})
    model = root / "model"
    model.mkdir(parents=True)
    torch.manual_seed(0)
    save_head(SegmentationHead(384, HAND_RUN_DIM), model)
    np.save(model / "centroids.npy", np.random.default_rng(0).normal(size=(HAND_RUN_CLUSTERS, HAND_RUN_DIM)).astype(np.float32))
    scores = {"assignment": HAND_RUN_ASSIGNMENT, "per_class_iou": {n: 0.5 for n in DATASETS["camvid"].class_names}}
    record = {"metrics": {"stego_cluster": scores} if matching else {}, "config": cfg.model_dump(mode="json")}
    (root / "metrics.json").write_text(json.dumps(record))
    return root


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (e.g. ``"4m"``) mounted at ``folder`` (created), unmounted after; the
    test is skipped where mounting is not allowed."""
    import pytest

    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Wait until ``url``/health answers 200 (an MLflow server); raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url}/health not up after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """End the process group we started (the server and its worker)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def mlflow_server(base: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite + artifacts under ``base``), yielding its URL; stopped after."""
    from tasks.tracking import server_command, server_env

    port = free_port()
    proc = subprocess.Popen(server_command(f"sqlite:///{base / 'mlflow.db'}", base / "artifacts", port), env=server_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        stop(proc)
