"""Spatial coherence of label maps: a label-free score of a segmentation.

Objects and stuff are contiguous, so a segmentation that follows them gives most neighbouring pixels the
same label. The raw share of equal neighbours rewards putting everything in one cluster; the score below
is Cohen's kappa of a pixel's label against its right and lower neighbours' (at a stride of ``step``
pixels), i.e. the share of equal neighbours beyond what the cluster sizes alone would give:

    kappa = (p_same - sum_k p_k^2) / (1 - sum_k p_k^2)

``cluster.code=coherence`` uses it to choose between the head's code and the raw features for the cluster
readout, from the candidates' predictions on the evaluation images (no labels); ``bench/robustness.py``
measures how it tracks mIoU.
"""
from __future__ import annotations

import numpy as np


def spatial_coherence(label_maps: np.ndarray, *, step: int = 4, chunk: int = 64) -> float:
    """Neighbour-agreement kappa of ``label_maps`` ``(N, H, W)`` (integer labels, e.g. a memmap of
    predictions), read ``chunk`` maps at a time at a stride of ``step`` pixels; 1.0 for a constant labelling
    (no contrast to score), ``nan`` for no neighbour pairs."""
    if label_maps.ndim != 3:
        raise ValueError(f"spatial_coherence: label maps must be (N, H, W), got shape {label_maps.shape}")
    same = pairs = 0
    counts = np.zeros(0, np.int64)
    for start in range(0, len(label_maps), chunk):
        p = np.asarray(label_maps[start:start + chunk, ::step, ::step]).astype(np.int64)
        same += int((p[:, 1:, :] == p[:, :-1, :]).sum() + (p[:, :, 1:] == p[:, :, :-1]).sum())
        pairs += p[:, 1:, :].size + p[:, :, 1:].size
        c = np.bincount(p.ravel())
        if len(c) > len(counts):
            counts = np.pad(counts, (0, len(c) - len(counts)))
        counts[:len(c)] += c
    if pairs == 0:
        return float("nan")
    freq = counts / counts.sum()
    expected = float((freq ** 2).sum())
    if expected >= 1.0:
        return 1.0
    return (same / pairs - expected) / (1.0 - expected)
