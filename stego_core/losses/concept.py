"""Concept-wise contrastive loss against a concept clusterbook (after CAUSE, Kim et al., Pattern Recognition 2024).

For ``n`` sampled points with frozen features ``f_i`` ``(n, C)``, the head's codes ``s_i`` and target codes
``t_j`` ``(n, D)`` (the EMA teacher's, no gradient), each point's concept ``k(i)`` is its most cosine-similar
vector of the clusterbook (:func:`stego_core.concepts.assign_concepts`). Points of the same concept are
positives, all others negatives:

    L = mean_i  -1/|P(i)| sum_{j in P(i)} log( exp(<s_i, t_j> / tau) / sum_l exp(<s_i, t_l> / tau) ),
    P(i) = { j : k(j) = k(i) }

with unit-normalised ``s`` and ``t`` (``P(i)`` holds ``i`` itself: its own target is always a positive).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stego_core.concepts import assign_concepts


class ConceptContrastiveLoss(torch.nn.Module):
    """Args:
        clusterbook: concept vectors ``(K, C)`` in the frozen feature space.
        temperature: ``tau`` of the softmax over targets.

    Shapes: ``feats`` ``(n, C)``, ``code`` and ``target`` ``(n, D)``; returns a scalar.

    Example:
        >>> loss = ConceptContrastiveLoss(torch.from_numpy(book), temperature=0.1)
        >>> loss(f_points, code_points, teacher_points).backward()
    """

    def __init__(self, clusterbook: torch.Tensor, *, temperature: float = 0.1) -> None:
        super().__init__()
        if clusterbook.ndim != 2 or len(clusterbook) < 2:
            raise ValueError(f"clusterbook must be (K, C) with K >= 2, got shape {tuple(clusterbook.shape)}")
        if temperature <= 0:
            raise ValueError(f"loss.concept_temperature must be > 0, got {temperature}")
        self.register_buffer("clusterbook", F.normalize(clusterbook.float(), dim=1, eps=1e-10))
        self.temperature = float(temperature)

    def forward(self, feats: torch.Tensor, code: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not len(feats) == len(code) == len(target):
            raise ValueError(f"point counts differ: feats {tuple(feats.shape)}, code {tuple(code.shape)}, "
                             f"target {tuple(target.shape)}")
        with torch.no_grad():
            ids = assign_concepts(feats, self.clusterbook.to(feats.device))
            positive = (ids[:, None] == ids[None, :]).float()
            t = F.normalize(target.detach(), dim=1, eps=1e-10)
        s = F.normalize(code, dim=1, eps=1e-10)
        log_p = torch.log_softmax(s @ t.T / self.temperature, dim=1)
        return (-(log_p * positive).sum(dim=1) / positive.sum(dim=1)).mean()


def points(maps: torch.Tensor) -> torch.Tensor:
    """Sampled maps ``(B, C, S, S)`` as point rows ``(B*S*S, C)``."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
