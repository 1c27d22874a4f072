"""Spherical k-means (cosine) on feature vectors with faiss, best of ``restarts`` by objective."""
from __future__ import annotations

import logging

import faiss
import numpy as np

logger = logging.getLogger(__name__)


def spherical_kmeans(
    vectors: np.ndarray,
    k: int,
    *,
    restarts: int = 5,
    iterations: int = 50,
    seed: int = 0,
    max_points_per_centroid: int = 100_000,
    overwrite: bool = False,
) -> np.ndarray:
    """Cluster rows of ``vectors`` ``(N, D)`` into ``k`` unit-norm centroids ``(k, D)``.

    Vectors are L2-normalised first (in ``vectors`` itself with ``overwrite``, when it is contiguous
    float32: no second copy of a large sample); faiss keeps the restart with the best objective (no labels).
    """
    if vectors.ndim != 2:
        raise ValueError(f"expected vectors (N, D), got shape {vectors.shape}")
    if k < 1 or k > len(vectors):
        raise ValueError(f"k-means needs 1 <= k <= number of vectors ({len(vectors)}), got k={k}")
    x = normalize_rows(vectors, overwrite=overwrite)
    km = faiss.Kmeans(
        x.shape[1], k, niter=iterations, nredo=restarts, spherical=True, seed=seed,
        max_points_per_centroid=max_points_per_centroid, verbose=False,
    )
    km.train(x)
    logger.info("spherical k-means: %d x %d -> k=%d, objective %.4f", *x.shape, k, float(km.obj[-1]))
    return normalize_rows(km.centroids)


def assign(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row by inner product (cosine for unit rows): indices ``(N,)`` and the
    inner products ``(N,)``; their sum is the spherical k-means objective."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return idx[:, 0], sims[:, 0]


def normalize_rows(x: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as contiguous float32 (all-zero rows stay zero); with
    ``overwrite``, in ``x`` itself when it is contiguous float32 (the same numbers, no copy)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if overwrite:
        x /= norms
        return x
    return x / norms
