"""Training STEGO's segmentation head on cached backbone features.

The backbone is frozen, so its features are computed once (``features.py``) and each step only
gathers a batch and its KNN partners from the cache; the reference reran the backbone twice per step.
The head is trained with :class:`~stego_core.losses.ContrastiveCorrelationLoss`; channel dropout is
applied per step to the features that enter the loss when ``feature_dropout`` is on (the reference's
``dropout`` flag). Progress is reported through ``callback(step, values)``; no tracker is imported.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stego_core.head import SegmentationHead
from stego_core.losses import ContrastiveCorrelationLoss
from stego_core.sampling import PairSampler

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]


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
) -> TrainResult:
    """Train a fresh :class:`SegmentationHead` for ``steps`` Adam steps; deterministic for a seed on CPU."""
    if steps < 0:
        raise ValueError(f"train.steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {lr}")
    gen = seed_everything(seed)
    device = sampler.device
    head = SegmentationHead(in_dim, dim, dropout=dropout).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    head.train()
    bar = tqdm(range(steps), desc="train head", disable=not progress, leave=False)
    for step in bar:
        feats, feats_pos = sampler.next_batch()
        code, code_pos = head(feats), head(feats_pos)
        if feature_dropout:
            feats = F.dropout2d(feats, p=dropout, training=True)
            feats_pos = F.dropout2d(feats_pos, p=dropout, training=True)
        out = loss_fn(feats, feats_pos, code, code_pos, generator=gen)
        if not torch.isfinite(out.total):
            raise FloatingPointError(f"loss became {out.total.item()} at step {step}; lower train.lr or check the features")
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            row = {"step": step, "loss": out.total.item(), **{f"loss_{k}": v.item() for k, v in out.terms.items()}}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if callback is not None:
                callback(step, row)
    head.eval()
    return TrainResult(head=head, history=history)


@torch.no_grad()
def apply_head(head: torch.nn.Module, features: np.ndarray, *, batch: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """Codes ``(N, D, H, W)`` float32 of cached features ``(N, C, H, W)`` (eval mode, no dropout)."""
    head.eval()
    device = torch.device(device)
    out = []
    for start in range(0, len(features), batch):
        x = torch.from_numpy(np.asarray(features[start : start + batch], dtype=np.float32)).to(device)
        out.append(head(x).float().cpu().numpy())
    return np.concatenate(out)
