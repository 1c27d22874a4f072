"""Probes on a (detached) code or raw features: STEGO's cluster probe and the supervised linear probe.

* Cluster probe: ``k`` learnable centroids; features and centroids are L2-normalised, each pixel is
  assigned to its nearest centroid and the loss is ``-mean(max_k cos(x, mu_k))``: spherical k-means
  by SGD (Adam, lr 5e-3 in STEGO). Labels are never used.
* Linear probe: a 1x1 conv ``D -> n_classes`` trained with cross-entropy on ground-truth labels
  (STEGO's "linear" metric); void pixels (``ignore_index``) are ignored.
Both read their batches from tables (:mod:`stego_core.access`: memmaps, codes computed on demand), so
memory is a batch, and never back-propagate into a head.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from stego_core.access import MappedRows, any_labelled, materialize, read_rows
from stego_core.budget import MemoryBudget

logger = logging.getLogger(__name__)


class ClusterProbe(nn.Module):
    def __init__(self, dim: int, num_clusters: int) -> None:
        super().__init__()
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.centroids = nn.Parameter(torch.randn(num_clusters, dim))

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W)`` -> cosine to every centroid ``(B, K, H, W)``."""
        return torch.einsum("bdhw,kd->bkhw", F.normalize(x, dim=1), F.normalize(self.centroids, dim=1))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self.cosine(x).max(dim=1).values.mean()


class LinearProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _batches(n: int, batch_size: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n)])
        idx, order = order[:batch_size], order[batch_size:]
        yield np.sort(idx)


def _fit(probe: nn.Module, batch_loss: Callable[[np.ndarray], torch.Tensor | None], n: int, *, steps: int,
         batch_size: int, lr: float, seed: int, desc: str, callback, progress: bool) -> nn.Module:
    """Adam on ``batch_loss(indices)`` over shuffled epochs of ``n`` items; a ``None`` loss skips the step."""
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    batches = _batches(n, min(batch_size, n), steps, seed)
    for step, idx in enumerate(tqdm(batches, total=steps, desc=desc, disable=not progress, leave=False)):
        loss = batch_loss(idx)
        if loss is None:
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None and step % 10 == 0:
            callback(step, loss.item())
    return probe.eval()


def train_cluster_probe(
    features: np.ndarray, num_clusters: int, *, steps: int = 1000, batch_size: int = 32, lr: float = 5e-3,
    seed: int = 0, device: str = "cpu", callback: Callable[[int, float], None] | None = None, progress: bool = True,
) -> ClusterProbe:
    """Fit a :class:`ClusterProbe` on ``features`` ``(N, D, H, W)`` (code or raw)."""
    torch.manual_seed(seed)
    probe = ClusterProbe(features.shape[1], num_clusters).to(device)

    def batch_loss(idx):
        return probe.loss(torch.from_numpy(np.asarray(read_rows(features, idx), dtype=np.float32)).to(device))

    return _fit(probe, batch_loss, len(features), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                desc="cluster probe", callback=callback, progress=progress)


def soft_labels(labels: np.ndarray, num_classes: int, size: int, *, ignore_index: int = 255,
                batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Label maps ``(N, H, W)`` pooled to ``size x size`` cells: each cell's class shares among its
    non-void pixels ``(N, K, size, size)`` and its non-void fraction ``(N, size, size)`` (float16)."""
    shares, weights = [], []
    for start in range(0, len(labels), batch):
        y = torch.from_numpy(np.asarray(labels[start : start + batch], dtype=np.int64))
        valid = y != ignore_index
        y = y.clamp(0, num_classes - 1)
        # One class at a time: a (B, 1, H, W) mask instead of a (B, K, H, W) one-hot (27 classes x 224^2 x 32
        # crops = 173 MB per copy); each plane is pooled alone either way, so the shares are the same.
        counts = torch.cat([F.adaptive_avg_pool2d(((y == k) & valid)[:, None].float(), size) for k in range(num_classes)], 1)
        frac = counts.sum(1)
        shares.append((counts / frac.clamp_min(1e-12)[:, None]).half().numpy())
        weights.append(frac.half().numpy())
    return np.concatenate(shares), np.concatenate(weights)


def pooled_labels(labels, num_classes: int, size: int, *, ignore_index: int = 255) -> MappedRows:
    """:func:`soft_labels` as a table ``(N, K + 1, size, size)`` float16 computed on demand: the K class shares
    of each cell, then its non-void fraction (each image's rows depend on its own labels only)."""
    def pool(block: np.ndarray) -> np.ndarray:
        shares, weight = soft_labels(block, num_classes, size, ignore_index=ignore_index)
        return np.concatenate([shares, weight[:, None]], axis=1)

    return MappedRows(labels, pool, row_shape=(num_classes + 1, size, size), dtype=np.float16,
                      what="label shares pooled for the linear probe")


def train_linear_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, steps: int = 1000, batch_size: int = 32,
    lr: float = 5e-3, ignore_index: int = 255, seed: int = 0, device: str = "cpu",
    callback: Callable[[int, float], None] | None = None, progress: bool = True, loss_resolution: int | None = None,
    budget: MemoryBudget | None = None, scratch: str | os.PathLike | None = None,
) -> LinearProbe:
    """Fit a :class:`LinearProbe` on ``features`` ``(N, D, h, w)`` against ``labels`` ``(N, H, W)``.

    Logits are upsampled bilinearly to the label resolution before the cross-entropy. With
    ``loss_resolution=r`` they are upsampled to ``r x r`` only and scored against the class shares of
    each ``H/r x W/r`` cell of labels (the full-resolution loss when logits are flat over a cell; with
    r = 4 tokens per token side, about 10x faster); the shares are pooled once (:func:`pooled_labels`,
    in memory within ``budget``, else in a file in ``scratch``).
    """
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature maps but {len(labels)} label maps")
    if not any_labelled(labels, ignore_index):
        raise ValueError("the linear probe's training labels are all void; it needs labelled training images")
    torch.manual_seed(seed)
    probe = LinearProbe(features.shape[1], num_classes).to(device)
    pooled = None
    if loss_resolution:
        pooled, _ = materialize(pooled_labels(labels, num_classes, loss_resolution, ignore_index=ignore_index),
                                budget=budget, scratch=scratch, what="pooled labels")

    def batch_loss(idx):
        x = torch.from_numpy(np.asarray(read_rows(features, idx), dtype=np.float32)).to(device)
        if pooled is not None:
            cells = torch.from_numpy(read_rows(pooled, idx)).to(device).float()
            # Contiguous, as when shares and weights were two arrays: the sums below run in the same order.
            shares, weight = cells[:, :num_classes].contiguous(), cells[:, num_classes].contiguous()
            if not bool((weight > 0).any()):
                return None
            logits = F.interpolate(probe(x), size=shares.shape[-2:], mode="bilinear", align_corners=False)
            per_cell = -(shares * F.log_softmax(logits, dim=1)).sum(1)
            return (per_cell * weight).sum() / weight.sum()
        y = torch.from_numpy(np.asarray(read_rows(labels, idx), dtype=np.int64)).to(device)
        if not bool((y != ignore_index).any()):
            return None  # an all-void batch has no loss (cross-entropy would be NaN)
        logits = F.interpolate(probe(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, y, ignore_index=ignore_index)

    return _fit(probe, batch_loss, len(features), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                desc="linear probe", callback=callback, progress=progress)
