"""Training checkpoints: an interrupted head training resumes where it stopped and ends bitwise equal
to an uninterrupted run of the same seed (CPU, one thread).

Why bitwise: the checkpoint restores every state the loop draws from (head, Adam moments and step
counts, the global torch / numpy / python RNGs, the loss's coordinate generator, the sampler's PCG64
state and the rest of its epoch order), and CPU kernels on one thread are deterministic, so the
resumed run executes the very same float operations in the same order.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stego_core.config import ExperimentConfig
from stego_core.losses import ContrastiveCorrelationLoss
from stego_core.sampling import PairSampler
from stego_core.training import CHECKPOINT_NAME, load_checkpoint, train_head
from tasks.catalog import ArtifactStore, artifact_key
from tasks.prefect_stage import checkpoint_dir, run_stage
from tasks.views import stage_view

REPO = Path(__file__).resolve().parents[2]


def features(n=24, c=16, s=6, seed=0):
    """Two-region feature maps (left half A, right half B, plus noise) and a ring KNN table."""
    rng = np.random.default_rng(seed)
    f = np.empty((n, c, s, s), np.float32)
    f[:, :, :, : s // 2] = rng.normal(size=c)[None, :, None, None]
    f[:, :, :, s // 2 :] = rng.normal(size=c)[None, :, None, None]
    f += rng.normal(scale=0.3, size=f.shape)
    knn = np.stack([np.roll(np.arange(n), -i) for i in range(8)], axis=1)
    return f.astype(np.float16), knn


def loss_fn():
    return ContrastiveCorrelationLoss(shifts=dict(self=0.3, knn=0.3, rand=0.6), weights=dict(self=0.67, knn=0.25, rand=0.63),
                                      feature_samples=5, neg_samples=2)


class Stop(Exception):
    pass


def train(f, knn, folder=None, every=0, stop_at=None, steps=30, ema_decay=0.0):
    def callback(step, row):
        if step == stop_at:
            raise Stop
    loss = loss_fn()
    loss.teacher_weight = 0.5 if ema_decay else 0.0
    return train_head(PairSampler(f, knn, batch_size=8, seed=0), loss, in_dim=16, dim=4, steps=steps, lr=5e-3,
                      seed=0, log_every=1, callback=callback, progress=False, checkpoint_dir=folder,
                      checkpoint_every=every, ema_decay=ema_decay)


@pytest.mark.parametrize("ema_decay", [0.0, 0.8])
def test_resumed_training_equals_the_uninterrupted_run(tmp_path, ema_decay):
    """With an EMA teacher (decay 0.8: its term starts at step 5) the teacher is checkpointed too."""
    f, knn = features()
    reference = train(f, knn, ema_decay=ema_decay)
    with pytest.raises(Stop):
        train(f, knn, tmp_path, every=5, stop_at=13, ema_decay=ema_decay)  # checkpoints after steps 5 and 10, dies in 13
    saved = load_checkpoint(tmp_path)
    assert saved["step"] == 10 and ("teacher" in saved) == bool(ema_decay)
    resumed = train(f, knn, tmp_path, every=5, ema_decay=ema_decay)
    assert ("loss_teacher" in reference.history[-1]) == bool(ema_decay)
    assert "loss_teacher" not in reference.history[0]
    assert reference.resumed_from == 0 and resumed.resumed_from == 10
    assert resumed.history == reference.history  # rows 0-9 restored, 10-29 recomputed: exactly equal
    a, b = reference.head.state_dict(), resumed.head.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path, caplog):
    f, knn = features()
    with pytest.raises(Stop):
        train(f, knn, tmp_path, every=5, stop_at=7, steps=30)
    result = train(f, knn, tmp_path, every=5, steps=20)
    assert result.resumed_from == 0 and "ignoring training checkpoint" in caplog.text


class Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_holding_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"format": 1, "step": 3, "evil": Payload(marker)}, folder / CHECKPOINT_NAME)
    f, knn = features()
    with pytest.raises(ValueError, match=f"training checkpoint {folder / CHECKPOINT_NAME} cannot be read safely"):
        train(f, knn, folder, every=5)
    assert not marker.exists()
    (folder / CHECKPOINT_NAME).write_bytes(pickle.dumps({"format": 1}) + b"garbage")  # not a torch zip either
    with pytest.raises(ValueError, match="delete .* to train from scratch"):
        load_checkpoint(folder)


def test_the_checkpoint_interval_is_not_part_of_the_cache_key():
    base = ExperimentConfig()
    other = base.model_copy(update={"train": base.train.model_copy(update={"checkpoint_every": 7})})
    assert stage_view("train_head", base) == stage_view("train_head", other)
    assert "checkpoint_every" not in stage_view("train_head", base)["train"]


# ---------------------------------------------------------------- the stage killed and rerun
TRAIN_SCRIPT = """
    import json, logging, sys, time
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    from stego_core import stages as core
    from tasks.stages import train_head_task
    root, view, inputs, every, delay = sys.argv[1:]
    if float(delay):  # slow each step down (the maths is untouched) so the test can kill it mid-way
        train_stage = core.train_stage
        def slow(cfg, embed, knn, out, callback, **kw):
            def cb(step, row):
                time.sleep(float(delay))
                callback(step, row)
            return train_stage(cfg, embed, knn, out, cb, **kw)
        core.train_stage = slow
    ref = train_head_task.fn(config=json.loads(view), inputs=json.loads(inputs), store_root=root,
                             settings={"train": {"checkpoint_every": int(every)}})
    print("REF " + json.dumps(ref))
"""

STEPS = 120


def experiment() -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "device": "cpu", "seed": 3, "knn": {"k": 8, "num_neighbors": 3},
        "train": {"steps": STEPS, "dim": 4, "batch_size": 8, "lr": 5e-3, "log_every": 1},
        "loss": {"calibration_batches": 2, "feature_samples": 5, "neg_samples": 2},
    })


def upstream(root: Path) -> dict[str, str]:
    """Publish synthetic embed + knn artifacts; the train_head inputs naming them."""
    store = ArtifactStore(root)
    f, knn = features()

    def embed(out):
        np.save(out / "features.npy", f)
        np.save(out / "labels.npy", np.zeros((len(f), 6, 6), np.uint8))
        (out / "index.json").write_text(json.dumps([{"stem": str(i), "image": "", "label": None} for i in range(len(f))]))

    e = run_stage(store, "embed", {"synthetic": 1}, {}, embed)
    k = run_stage(store, "knn", {"synthetic": 1}, {"embed": e["key"]}, lambda out: np.save(out / "knn.npy", knn))
    return {"embed": e["key"], "knn": k["key"]}


def start(root: Path, inputs: dict, every: int, delay: float) -> subprocess.Popen:
    args = [str(root), json.dumps(stage_view("train_head", experiment())), json.dumps(inputs), str(every), str(delay)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(TRAIN_SCRIPT), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(next(line[4:] for line in out.splitlines() if line.startswith("REF "))), err


@pytest.mark.slow
def test_killed_training_stage_resumes_from_its_checkpoint(tmp_path):
    interrupted, fresh = tmp_path / "interrupted", tmp_path / "fresh"
    inputs = upstream(interrupted)
    assert upstream(fresh) == inputs
    key = artifact_key("train_head", stage_view("train_head", experiment()), inputs)
    ckpt_dir = checkpoint_dir(ArtifactStore(interrupted), "train_head", key)
    assert ckpt_dir == interrupted.resolve() / ".checkpoints" / "train_head" / key

    proc = start(interrupted, inputs, every=10, delay=0.05)  # ~6 s of training; killed after its first checkpoint
    try:
        deadline = time.monotonic() + 120
        while not (ckpt_dir / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (interrupted / "train_head" / key).exists()  # nothing published
    killed_at = load_checkpoint(ckpt_dir)["step"]
    assert 10 <= killed_at < STEPS

    ref, log = finish(start(interrupted, inputs, every=10, delay=0))
    assert not ref["cached"] and "resuming training from checkpoint" in log
    baseline, _ = finish(start(fresh, inputs, every=0, delay=0))
    assert baseline["key"] == ref["key"] == key  # the checkpoint interval is not part of the key

    resumed_dir, baseline_dir = Path(ref["path"]), Path(baseline["path"])
    meta = ArtifactStore(interrupted).open("train_head", key).metadata
    assert meta["resumed_from_step"] >= killed_at >= 10
    assert ArtifactStore(fresh).open("train_head", key).metadata["resumed_from_step"] == 0
    history = json.loads((resumed_dir / "history.json").read_text())
    assert [row["step"] for row in history] == list(range(STEPS))
    assert history == json.loads((baseline_dir / "history.json").read_text())
    assert (resumed_dir / "head.safetensors").read_bytes() == (baseline_dir / "head.safetensors").read_bytes()
    assert not ckpt_dir.exists()  # removed once the head was published
