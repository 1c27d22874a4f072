"""Training STEGO's segmentation head on cached backbone features.

The backbone is frozen, so its features are computed once (``features.py``) and each step only
gathers a batch and its KNN partners from the cache; the reference reran the backbone twice per step.
The head is trained with :class:`~stego_core.losses.ContrastiveCorrelationLoss`; channel dropout is
applied per step to the features that enter the loss when ``feature_dropout`` is on (the reference's
``dropout`` flag). Progress is reported through ``callback(step, values)``; no tracker is imported.

With ``ema_decay > 0`` an EMA teacher of the head is kept (``teacher = d * teacher + (1 - d) * head``
after every step, in eval mode, no dropout). Once the EMA has averaged over its time constant
``1 / (1 - d)`` steps, its codes are handed to the loss (its teacher-positives term, when weighted),
and the teacher, the smoother of the two, is the head returned. A loss with a concept term
(:class:`~stego_core.losses.ConceptContrastiveLoss`) gets the features before channel dropout too.

With ``checkpoint_dir`` and ``checkpoint_every > 0`` the full training state (head, Adam, every RNG the
loop draws from, the sampler's epoch order, the step and the loss history) is written every
``checkpoint_every`` steps to ``checkpoint_dir/checkpoint.pt`` (temp file + ``os.replace``), and a
later call with the same folder resumes from it; on CPU the resumed run is bitwise the uninterrupted
one. Checkpoints are read with ``torch.load(weights_only=True)``: a file holding code is refused.
"""
from __future__ import annotations

import copy
import logging
import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stego_core.access import MappedRows
from stego_core.head import SegmentationHead
from stego_core.losses import ContrastiveCorrelationLoss
from stego_core.sampling import PairSampler

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


@dataclass
class TrainResult:
    head: SegmentationHead
    history: list[dict[str, float]] = field(default_factory=list)  # one row per logged step
    resumed_from: int = 0  # steps restored from a checkpoint (0: trained from scratch)


def _rng_state(sampler: PairSampler, gen: torch.Generator) -> dict[str, Any]:
    """Every random state the training loop draws from, as tensors / plain Python values."""
    np_name, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if sampler.device.type == "cuda" else [],  # dropout on the GPU
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_gauss, np_cached],
        "python": random.getstate(),
        "loss_generator": gen.get_state(),
        "sampler": sampler.rng.bit_generator.state,
        "sampler_order": torch.from_numpy(sampler.order.astype(np.int64)),
    }


def _set_rng_state(state: dict[str, Any], sampler: PairSampler, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_name, np_keys, np_pos, np_gauss, np_cached = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_gauss, np_cached))
    random.setstate(state["python"])
    gen.set_state(state["loss_generator"])
    sampler.rng.bit_generator.state = state["sampler"]
    sampler.order = state["sampler_order"].numpy().copy()


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``folder/checkpoint.pt`` atomically (temp file, fsync, ``os.replace``).

    A failed write (disk full, the folder removed by a finished concurrent writer) is logged and
    skipped: a checkpoint only saves time, it must not fail the training."""
    tmp = folder / f".{CHECKPOINT_NAME}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / CHECKPOINT_NAME)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        logger.warning("could not write the training checkpoint in %s (%s); training goes on without it", folder, exc)


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The state saved in ``folder/checkpoint.pt``, or None when there is none.

    Raises:
        ValueError: the file is not a plain checkpoint (corrupt, or pickled objects/code, which
            ``weights_only=True`` refuses to run); the message names the file.
    """
    path = folder / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, or pickled code
        raise ValueError(f"training checkpoint {path} cannot be read safely ({type(err).__name__}: {err}); "
                         f"delete {folder} to train from scratch") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"training checkpoint {path} is not a checkpoint written by this version of train_head; "
                         f"delete {folder} to train from scratch")
    return state


def train_head(
    sampler: PairSampler,
    loss_fn: ContrastiveCorrelationLoss,
    *,
    in_dim: int,
    dim: int,
    steps: int,
    lr: float = 5e-4,
    dropout: float = 0.1,
    feature_dropout: bool = True,
    seed: int = 0,
    log_every: int = 10,
    callback: StepCallback | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    ema_decay: float = 0.0,
) -> TrainResult:
    """Train a :class:`SegmentationHead` for ``steps`` Adam steps; deterministic for a seed on CPU.

    With ``checkpoint_dir``, a checkpoint found there is resumed (only if it was written for the
    same arguments; another one is ignored with a warning) and, when ``checkpoint_every > 0``, one is
    written every ``checkpoint_every`` steps. The caller removes the folder once the head is saved.
    """
    if steps < 0:
        raise ValueError(f"train.steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {lr}")
    if checkpoint_every < 0:
        raise ValueError(f"train.checkpoint_every must be >= 0 (0 = off), got {checkpoint_every}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1) (0 = no teacher), got {ema_decay}")
    gen = seed_everything(seed)
    device = sampler.device
    head = SegmentationHead(in_dim, dim, dropout=dropout).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    teacher = EmaTeacher(head, ema_decay) if ema_decay > 0 else None
    history: list[dict[str, float]] = []
    identity = {"in_dim": in_dim, "dim": dim, "steps": steps, "lr": lr, "dropout": dropout,
                "feature_dropout": feature_dropout, "seed": seed, "log_every": log_every,
                "batch_size": sampler.batch_size, "num_images": sampler.n, "ema_decay": ema_decay}
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start = 0
    saved = load_checkpoint(folder) if folder is not None else None
    if saved is not None and saved.get("identity") != identity:
        logger.warning("ignoring training checkpoint in %s: written for %s, not %s", folder, saved.get("identity"), identity)
    elif saved is not None:
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["optimizer"])
        if teacher is not None:
            teacher.model.load_state_dict(saved["teacher"])
        history = list(saved["history"])
        _set_rng_state(saved["rng"], sampler, gen)
        start = int(saved["step"])
        logger.info("resuming training from checkpoint %s at step %d/%d", folder / CHECKPOINT_NAME, start, steps)
    head.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train head", disable=not progress, leave=False)
    for step in bar:
        feats, feats_pos = sampler.next_batch()
        code, code_pos = head(feats), head(feats_pos)
        teacher_codes = teacher.codes(feats, feats_pos) if teacher is not None and step >= teacher.warmup else None
        clean = (feats, feats_pos)  # before dropout: what the concept term (if any) assigns to concepts
        if feature_dropout:
            feats = F.dropout2d(feats, p=dropout, training=True)
            feats_pos = F.dropout2d(feats_pos, p=dropout, training=True)
        out = loss_fn(feats, feats_pos, code, code_pos, teacher=teacher_codes, generator=gen, clean=clean)
        if not torch.isfinite(out.total):
            raise FloatingPointError(f"loss became {out.total.item()} at step {step}; lower train.lr or check the features")
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        if teacher is not None:
            teacher.update(head)
        if step % log_every == 0 or step == steps - 1:
            row = {"step": step, "loss": out.total.item(), **{f"loss_{k}": v.item() for k, v in out.terms.items()}}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if callback is not None:
                callback(step, row)
        done = step + 1
        if folder is not None and checkpoint_every and done % checkpoint_every == 0 and done < steps:
            state = {"format": CHECKPOINT_FORMAT, "identity": identity, "step": done, "head": head.state_dict(),
                     "optimizer": opt.state_dict(), "history": history, "rng": _rng_state(sampler, gen)}
            if teacher is not None:
                state["teacher"] = teacher.model.state_dict()
            save_checkpoint(folder, state)
    head.eval()
    return TrainResult(head=teacher.model if teacher is not None else head, history=history, resumed_from=start)


class EmaTeacher:
    """An exponential moving average of a head's weights, run in eval mode (no dropout)."""

    def __init__(self, head: SegmentationHead, decay: float) -> None:
        self.model = copy.deepcopy(head).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = round(1.0 / (1.0 - decay))  # steps before its codes are trusted as targets

    @torch.no_grad()
    def update(self, head: SegmentationHead) -> None:
        for t, s in zip(self.model.parameters(), head.parameters()):
            t.mul_(self.decay).add_(s.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def codes(self, feats: torch.Tensor, feats_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(feats), self.model(feats_pos)


def head_code(head: torch.nn.Module, features, *, device: str | torch.device = "cpu",
              batch: int = 64) -> MappedRows:
    """The code ``(N, D, H, W)`` float32 of a feature table ``(N, C, H, W)`` as a table computed on demand,
    ``batch`` rows at a time (eval mode, no dropout). Rows are independent, so reading rows ``idx`` gives
    exactly the rows of the whole table's code; :func:`stego_core.access.materialize` computes it once."""
    head.eval()
    device = torch.device(device)
    dim = getattr(head, "dim", None)  # a SegmentationHead or a Projection

    @torch.no_grad()
    def code(block: np.ndarray) -> np.ndarray:
        return head(torch.from_numpy(np.asarray(block, dtype=np.float32)).to(device)).float().cpu().numpy()

    if dim is None:
        dim = code(np.asarray(features[0:1])).shape[1]
    return MappedRows(features, code, row_shape=(dim, *features.shape[2:]), dtype=np.float32, batch=batch,
                      what="the head applied to the training features")


def apply_head(head: torch.nn.Module, features, *, batch: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """Codes ``(N, D, H, W)`` float32 of cached features ``(N, C, H, W)`` in memory (small sets; stages
    read :func:`head_code` through :func:`stego_core.access.materialize`, which respects the budget)."""
    return head_code(head, features, device=device, batch=batch)[:]
