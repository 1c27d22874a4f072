"""Dimensionality-reduction baselines for the STEGO code: PCA and a seeded Gaussian random projection.

Both reduce backbone features ``(B, C, H, W)`` to ``D`` channels token by token, like the head, so
every readout (k-means, linear probe, prediction) reads a reduced table exactly as it reads the
head's code: as a :class:`Projection` applied batch by batch (:func:`stego_core.training.head_code`).

* :func:`fit_pca`: the top ``D`` principal directions of a token sample ``(M, C)``: the eigenvectors
  of its covariance (float64), each signed so that its largest-magnitude coordinate is positive. With
  ``whiten`` each component is divided by the square root of its variance. ``x -> W (x - mean)``.
* :func:`random_projection`: ``x -> R x`` with ``R`` ``(D, C)`` drawn i.i.d. ``N(0, 1/D)`` from
  ``numpy.random.default_rng(seed)``: the same seed gives the same matrix on every machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from stego_core.head import load_tensors, read_json_dims

PROJECTION_FILE = "projection.json"
WHITEN_EPS = 1e-8  # variance floor when whitening (a constant channel would divide by zero)
COV_BLOCK_BYTES = 64 << 20  # float64 token block the covariance is accumulated from


class Projection(nn.Module):
    """``code = scale * (W (x - mean))`` per token: an affine 1x1 map ``C -> D``, no parameters to train."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        if in_dim < 1 or dim < 1:
            raise ValueError(f"projection dimensions must be >= 1, got in_dim={in_dim}, dim={dim}")
        self.in_dim, self.dim = in_dim, dim
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("weight", torch.zeros(dim, in_dim))
        self.register_buffer("scale", torch.ones(dim))

    @classmethod
    def of(cls, weight: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> Projection:
        dim, in_dim = weight.shape
        p = cls(in_dim, dim)
        p.weight.copy_(torch.as_tensor(np.asarray(weight, dtype=np.float32)))
        if mean is not None:
            p.mean.copy_(torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        if scale is not None:
            p.scale.copy_(torch.as_tensor(np.asarray(scale, dtype=np.float32)))
        return p.eval()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim != 4 or feats.shape[1] != self.in_dim:
            raise ValueError(f"expected features (B, {self.in_dim}, H, W), got {tuple(feats.shape)}")
        x = feats - self.mean[None, :, None, None]
        return torch.einsum("bchw,dc->bdhw", x, self.weight) * self.scale[None, :, None, None]


def fit_pca(tokens: np.ndarray, dim: int, *, whiten: bool = False) -> tuple[Projection, dict]:
    """PCA of a token sample ``(M, C)`` to ``dim`` components, and a summary (explained variance).

    Raises:
        ValueError: ``dim`` exceeds the channels or the sample holds fewer than two tokens.
    """
    if tokens.ndim != 2:
        raise ValueError(f"PCA expects tokens (M, C), got shape {tokens.shape}")
    m, c = tokens.shape
    if m < 2:
        raise ValueError(f"PCA needs at least 2 tokens, got {m}")
    if not 1 <= dim <= c:
        raise ValueError(f"PCA to train.dim={dim} needs 1 <= dim <= the features' {c} channels; lower train.dim "
                         f"or leave pca out of reduce.methods")
    mean = tokens.mean(axis=0, dtype=np.float64)
    cov = np.zeros((c, c), dtype=np.float64)
    rows = max(1024, COV_BLOCK_BYTES // (8 * c))
    for start in range(0, m, rows):  # blocks: no float64 copy of the whole sample
        block = tokens[start : start + rows].astype(np.float64) - mean
        cov += block.T @ block
    cov /= m - 1
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:dim]
    values, components = np.clip(values[order], 0.0, None), vectors[:, order].T  # (dim, C)
    signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    scale = 1.0 / np.sqrt(values + WHITEN_EPS) if whiten else None
    total = float(np.trace(cov))
    summary = {"tokens": int(m), "explained_variance": values.tolist(),
               "explained_variance_ratio": float(values.sum() / total) if total > 0 else 0.0, "whiten": whiten}
    return Projection.of(components, mean, scale), summary


def random_projection(in_dim: int, dim: int, *, seed: int) -> Projection:
    """A Gaussian random projection ``C -> D``, entries ``N(0, 1/D)`` from ``default_rng(seed)``."""
    weight = np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(dim), size=(dim, in_dim))
    return Projection.of(weight)


def save_projection(proj: Projection, out_dir: Path, method: str, summary: dict | None = None) -> None:
    save_file({k: v.contiguous().cpu() for k, v in proj.state_dict().items()}, str(out_dir / "projection.safetensors"))
    meta = {"method": method, "in_dim": proj.in_dim, "dim": proj.dim, **(summary or {})}
    (out_dir / PROJECTION_FILE).write_text(json.dumps(meta, indent=1))


def load_projection(folder: Path, device: str | torch.device = "cpu") -> Projection:
    """The projection saved by :func:`save_projection`; a file that is not what its JSON says is refused."""
    meta = read_json_dims(folder / PROJECTION_FILE, ("in_dim", "dim"))
    proj = Projection(meta["in_dim"], meta["dim"])
    load_tensors(proj, folder / "projection.safetensors", described_by=folder / PROJECTION_FILE)
    return proj.to(device).eval()
