"""Pseudo-label refinement of cluster centroids with a momentum teacher (no labels).

After the idea of PriMaPs-EM (Hahn et al., 2024) and SmooSeg's smoothness prior (Lan et al., NeurIPS
2023), on frozen maps (a STEGO code or raw features) and without training the head:

1. the teacher centroids ``T`` (initialised from a clustering) give every token of a batch of training
   maps the probabilities ``p = softmax(cos(x, T) / tau)``;
2. the probabilities are smoothed inside each image by an affinity that joins tokens that look alike
   and lie close, ``A_ij ∝ exp(cos(x_i, x_j) / sigma_f - |pos_i - pos_j|^2 / (2 sigma_s^2))``, so a
   token takes the vote of its region (the pseudo-label refinement);
3. the pseudo-label of a token is ``argmax(A p)``; student centroids ``P`` take an Adam step on the
   cross-entropy of ``softmax(cos(x, P) / tau)`` against it;
4. ``T <- m T + (1 - m) P`` (renormalised): the teacher moves slowly, so no cluster collapses at once.

The teacher centroids are returned. Shapes: maps ``(N, D, H, W)``, centroids ``(K, D)``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def smooth_by_affinity(maps: torch.Tensor, probs: torch.Tensor, *, sigma_f: float = 0.1,
                       sigma_s: float = 2.0) -> torch.Tensor:
    """``A p`` per image: ``maps`` ``(B, D, H, W)``, ``probs`` ``(B, K, H, W)`` -> ``(B, K, H, W)``; rows of
    ``A`` sum to one (a softmax over the image's tokens)."""
    b, _, h, w = maps.shape
    x = F.normalize(maps.flatten(2), dim=1)
    logits = torch.einsum("bdn,bdm->bnm", x, x) / sigma_f
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float().to(maps.device)
    logits = logits - (torch.cdist(pos, pos) ** 2 / (2 * sigma_s**2))[None]
    affinity = torch.softmax(logits, dim=-1)
    return torch.einsum("bnm,bkm->bkn", affinity, probs.flatten(2)).reshape(probs.shape)


def refine_centroids(maps: np.ndarray, centroids: np.ndarray, *, steps: int, batch_size: int = 32,
                     temperature: float = 0.05, momentum: float = 0.99, lr: float = 0.01, seed: int = 0,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """Refined unit centroids ``(K, D)`` after ``steps`` teacher-student steps on random map batches.

    Raises:
        ValueError: centroids whose dimension is not the maps' channel count, or ``steps < 0``.
    """
    if centroids.ndim != 2 or centroids.shape[1] != maps.shape[1]:
        raise ValueError(f"centroids {centroids.shape} do not match maps with {maps.shape[1]} channels")
    if steps < 0:
        raise ValueError(f"cluster.refine_steps must be >= 0, got {steps}")
    rng = np.random.default_rng(seed)
    student = torch.nn.Parameter(F.normalize(torch.as_tensor(centroids, dtype=torch.float32, device=device), dim=1))
    teacher = student.detach().clone()
    opt = torch.optim.Adam([student], lr=lr)
    batch_size = min(batch_size, len(maps))
    for _ in range(steps):
        rows = np.sort(rng.choice(len(maps), batch_size, replace=False))
        x = F.normalize(torch.as_tensor(np.asarray(maps[rows], dtype=np.float32), device=device), dim=1)
        with torch.no_grad():
            probs = torch.softmax(torch.einsum("bdhw,kd->bkhw", x, teacher) / temperature, dim=1)
            target = smooth_by_affinity(x, probs).argmax(1)
        logits = torch.einsum("bdhw,kd->bkhw", x, F.normalize(student, dim=1)) / temperature
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            teacher.mul_(momentum).add_(F.normalize(student.detach(), dim=1), alpha=1.0 - momentum)
            teacher.copy_(F.normalize(teacher, dim=1))
    logger.info("refined %d centroids over %d steps", len(teacher), steps)
    return teacher.cpu().numpy()
