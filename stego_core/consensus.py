"""Robust clustering readouts: consensus over k-means restarts, and a label-free choice among restarts.

Spherical k-means on a STEGO code (and less so on raw DINOv2 tokens) lands in very different solutions
from one restart to the next (on CamVid, val mIoU 15-30 for one code), and the k-means objective does
not say which is better. Two remedies, neither using labels:

* :func:`consensus_kmeans` (evidence accumulation): overcluster the tokens into ``fine`` small clusters,
  run ``restarts`` k-means with ``k`` clusters, and count for every pair of fine clusters how often a
  restart puts (the majority of) their tokens together: the co-association matrix ``A``. Average-linkage
  clustering of ``1 - A`` cut into exactly ``k`` groups gives the partition most restarts agree on; each
  group's centroid is the normalised token-weighted mean of its fine centroids.
* :func:`balanced_kmeans_choice`: run the restarts separately and keep the one whose cluster sizes have
  the highest entropy. Degenerate solutions (one cluster swallowing road, pavement and buildings) are
  the bad mode. How well the size entropy ranks restarts by val mIoU, against the objective, is measured
  by ``bench/readout_choice.py`` (docs/RESULTS.md, "Choosing among k-means restarts without labels").

How much the restarts agree with each other (:func:`restart_agreement`, mean pairwise NMI) is recorded
with every balanced choice: the label-free signal ``cluster.code=agreement`` uses to pick the head's code
or the raw features for the cluster readout (``bench/robustness.py`` measures how it tracks mIoU).
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.cluster.hierarchy import cut_tree, linkage

from stego_core.kmeans import assign, normalize_rows, spherical_kmeans

logger = logging.getLogger(__name__)


def size_entropy(assignment: np.ndarray, k: int) -> float:
    """Entropy (nats) of the cluster sizes of ``assignment``; ``log k`` for equal sizes."""
    p = np.bincount(assignment, minlength=k) / max(len(assignment), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def nmi(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Normalised mutual information of two labelings with values in ``[0, k)`` (arithmetic-mean
    normalisation); 1.0 when both are constant."""
    n = len(a)
    joint = np.bincount(np.asarray(a, np.int64) * k + np.asarray(b, np.int64), minlength=k * k).reshape(k, k) / n
    pa, pb = joint.sum(1), joint.sum(0)

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    norm = (entropy(pa) + entropy(pb)) / 2
    return 1.0 if norm == 0 else max(0.0, min(1.0, mi / norm))


def restart_agreement(assignments: list[np.ndarray], k: int) -> float:
    """Mean NMI over all pairs of restarts' assignments of the same tokens (1.0: every restart found the
    same partition); ``nan`` for fewer than two restarts."""
    pairs = [(i, j) for i in range(len(assignments)) for j in range(i + 1, len(assignments))]
    return float(np.mean([nmi(assignments[i], assignments[j], k) for i, j in pairs])) if pairs else float("nan")


def balanced_kmeans_choice(vectors: np.ndarray, k: int, *, restarts: int = 5, seed: int = 0,
                           iterations: int = 50, overwrite: bool = False) -> tuple[np.ndarray, dict]:
    """The restart (``seed``, ``seed + 1``, ...) with the most even cluster sizes: centroids ``(k, D)`` and
    a summary ``{"entropy": [...], "chosen": i, "agreement": mean pairwise NMI of the restarts}``. ``overwrite``: ``vectors`` may hold their normalised rows
    afterwards (no second copy of the sample)."""
    x = normalize_rows(vectors, overwrite=overwrite)
    entropies, solutions, assignments = [], [], []
    for r in range(restarts):
        centroids = spherical_kmeans(x, k, restarts=1, iterations=iterations, seed=seed + r)
        assignments.append(assign(x, centroids)[0])
        entropies.append(size_entropy(assignments[-1], k))
        solutions.append(centroids)
    chosen = int(np.argmax(entropies))
    agreement = restart_agreement(assignments, k)
    logger.info("k-means restarts: size entropy %s, chose %d; restarts agree %.3f (NMI)",
                [round(e, 3) for e in entropies], chosen, agreement)
    return solutions[chosen], {"entropy": entropies, "chosen": chosen, "agreement": agreement}


def consensus_kmeans(vectors: np.ndarray, k: int, *, restarts: int = 20, fine: int = 100, seed: int = 0,
                     iterations: int = 50, overwrite: bool = False) -> tuple[np.ndarray, dict]:
    """Consensus of ``restarts`` k-means solutions over ``fine`` overclusters: centroids ``(k, D)``
    (``overwrite``: as in :func:`balanced_kmeans_choice`).

    Raises:
        ValueError: ``fine < k`` or more fine clusters than vectors.
    """
    if fine < k:
        raise ValueError(f"cluster.overcluster ({fine}) must be >= the number of clusters ({k})")
    if fine > len(vectors):
        raise ValueError(f"cluster.overcluster ({fine}) exceeds the number of token vectors ({len(vectors)})")
    if restarts < 1:
        raise ValueError(f"consensus needs at least one restart, got {restarts}")
    x = normalize_rows(vectors, overwrite=overwrite)
    fine_centroids = spherical_kmeans(x, fine, restarts=1, iterations=iterations, seed=seed)
    fine_of = assign(x, fine_centroids)[0]
    counts = np.bincount(fine_of, minlength=fine).astype(np.float64)
    together = np.zeros((fine, fine))
    for r in range(restarts):
        coarse = assign(x, spherical_kmeans(x, k, restarts=1, iterations=iterations, seed=seed + 1 + r))[0]
        votes = np.zeros((fine, k))
        np.add.at(votes, (fine_of, coarse), 1)
        group = votes.argmax(1)  # where most of each fine cluster's tokens went
        together += group[:, None] == group[None, :]
    together /= restarts
    distance = 1.0 - together[np.triu_indices(fine, 1)]
    groups = cut_tree(linkage(distance, method="average"), n_clusters=k)[:, 0]
    centroids = np.stack([(fine_centroids[groups == g] * counts[groups == g, None]).sum(0) for g in range(k)])
    agreement = float(together[np.triu_indices(fine, 1)][distance < 0.5].mean()) if np.any(distance < 0.5) else 0.0
    logger.info("consensus k-means: %d fine clusters, %d restarts -> %d groups (sizes %s)", fine, restarts, k,
                np.bincount(groups, weights=counts, minlength=k).astype(int).tolist())
    return normalize_rows(centroids), {"fine": fine, "restarts": restarts, "groups": groups.tolist(),
                                       "mean_co_association_of_linked_pairs": agreement}
