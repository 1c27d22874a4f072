"""STEGO's segmentation head: a linear plus a non-linear 1x1-conv path over frozen features.

    code = L(drop(f)) + N(drop(f)),   L: conv1x1(C -> D),   N: conv1x1(C -> C), ReLU, conv1x1(C -> D)

``drop`` is channel dropout (``nn.Dropout2d``), active in training mode only; each path draws its own
mask, as in the reference. Shapes: ``(B, C, H, W) -> (B, D, H, W)``. Being pointwise, the head commutes
with flips and crops of its input.
"""
from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    def __init__(self, in_dim: int, dim: int, *, dropout: float = 0.1, nonlinear: bool = True) -> None:
        super().__init__()
        if in_dim < 1 or dim < 1:
            raise ValueError(f"head dimensions must be >= 1, got in_dim={in_dim}, dim={dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.dim = in_dim, dim
        self.dropout = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(in_dim, dim, kernel_size=1)
        self.nonlinear = (
            nn.Sequential(nn.Conv2d(in_dim, in_dim, 1), nn.ReLU(), nn.Conv2d(in_dim, dim, 1)) if nonlinear else None
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim != 4 or feats.shape[1] != self.in_dim:
            raise ValueError(f"expected features (B, {self.in_dim}, H, W), got {tuple(feats.shape)}")
        code = self.linear(self.dropout(feats))
        if self.nonlinear is not None:
            code = code + self.nonlinear(self.dropout(feats))
        return code
