"""Nearest neighbours between images: the positive partners of STEGO's KNN loss term.

Global descriptor per image = spatial mean of its dense features, L2-normalised; similarity = cosine
(inner product of unit vectors). Exact search with faiss ``IndexFlatIP`` by default; above
``approx_threshold`` images (or with ``index="hnsw"``) an HNSW graph index is used. Rank 0 is the
image itself. No dropout is applied here (the reference did, by mistake).
"""
from __future__ import annotations

import logging
from typing import Literal

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IndexKind = Literal["exact", "hnsw", "auto"]


def global_descriptors(features: np.ndarray, batch: int = 256) -> np.ndarray:
    """``(N, C, H, W)`` dense features (any float dtype, may be a memmap) -> ``(N, C)`` unit vectors."""
    if features.ndim != 4:
        raise ValueError(f"expected dense features (N, C, H, W), got shape {features.shape}")
    out = np.empty(features.shape[:2], dtype=np.float32)
    for start in range(0, len(features), batch):
        out[start : start + batch] = np.asarray(features[start : start + batch], dtype=np.float32).mean(axis=(2, 3))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("some images have all-zero features; cannot normalise their global descriptor")
    return out / norms


def knn_search(
    descriptors: np.ndarray,
    k: int = 30,
    *,
    index: IndexKind = "auto",
    approx_threshold: int = 200_000,
    hnsw_m: int = 32,
    ef_search: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every row among all rows (itself included).

    Returns ``(indices, similarities)``, each ``(N, k)``, sorted by decreasing similarity.
    Raises ``ValueError`` when ``k`` exceeds the number of images.
    """
    n, d = descriptors.shape
    if k < 1 or k > n:
        raise ValueError(f"knn k must be in [1, {n}] (the number of images), got {k}; lower knn.k or add images")
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    kind = index if index != "auto" else ("hnsw" if n > approx_threshold else "exact")
    if kind == "exact":
        idx = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        idx = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efSearch = max(ef_search, k)
    else:
        raise ValueError(f"unknown knn index {index!r}; use 'exact', 'hnsw' or 'auto'")
    idx.add(x)
    sims, nbrs = idx.search(x, k)
    logger.info("knn: %d images, k=%d, index=%s", n, k, kind)
    return nbrs.astype(np.int64), sims.astype(np.float32)
