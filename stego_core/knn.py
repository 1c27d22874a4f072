"""Nearest neighbours between images: the positive partners of STEGO's KNN loss term.

Global descriptor per image = spatial mean of its dense features, L2-normalised; similarity = cosine
(inner product of unit vectors). Exact search with faiss ``IndexFlatIP`` by default; above
``approx_threshold`` images (``index="auto"``), or on request, an approximate index: an inverted file
(``"ivf"``: ``nlist`` k-means cells, ``nprobe`` of them searched per query) or an HNSW graph
(``"hnsw"``). An approximate index tunes its own search breadth: it measures recall@k against exact
search on ``recall_sample`` random queries and doubles ``nprobe`` (or ``efSearch``) until the recall
reaches ``min_recall`` or the breadth reaches its cap; what it measured goes into ``info``. Rank 0 is
the image itself. No dropout is applied here (the reference did, by mistake).
"""
from __future__ import annotations

import logging
from typing import Literal

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IndexKind = Literal["exact", "ivf", "hnsw", "auto"]
MAX_EF_SEARCH = 2048


def global_descriptors(features: np.ndarray, batch: int = 256) -> np.ndarray:
    """``(N, C, H, W)`` dense features (any float dtype, may be a memmap) -> ``(N, C)`` unit vectors."""
    if features.ndim != 4:
        raise ValueError(f"expected dense features (N, C, H, W), got shape {features.shape}")
    out = np.empty(features.shape[:2], dtype=np.float32)
    for start in range(0, len(features), batch):
        out[start : start + batch] = np.asarray(features[start : start + batch], dtype=np.float32).mean(axis=(2, 3))
    return unit_descriptors(out)


def unit_descriptors(means: np.ndarray) -> np.ndarray:
    """Per-image grid means ``(N, C)`` (the embed stage's ``descriptors.npy``) -> unit vectors ``(N, C)``.

    Raises:
        ValueError: an image whose features are all zero (no direction to normalise).
    """
    means = np.asarray(means, dtype=np.float32)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("some images have all-zero features; cannot normalise their global descriptor")
    return means / norms


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true top-k found among its returned top-k."""
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def knn_search(
    descriptors: np.ndarray,
    k: int = 30,
    *,
    index: IndexKind = "auto",
    approx_threshold: int = 200_000,
    hnsw_m: int = 32,
    ef_search: int = 128,
    nlist: int | None = None,
    nprobe: int = 8,
    min_recall: float = 0.95,
    recall_sample: int = 500,
    seed: int = 0,
    info: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every row among all rows (itself included).

    Returns ``(indices, similarities)``, each ``(N, k)``, sorted by decreasing similarity. ``info``
    (a dict, if given) receives the index used and, for an approximate one, its settings and the
    measured recall@k. ``min_recall=0`` skips the tuning.

    Raises:
        ValueError: ``k`` exceeds the number of images, or an unknown index kind.
    """
    n, d = descriptors.shape
    if k < 1 or k > n:
        raise ValueError(f"knn k must be in [1, {n}] (the number of images), got {k}; lower knn.k or add images")
    if index not in ("exact", "ivf", "hnsw", "auto"):
        raise ValueError(f"unknown knn index {index!r}; use 'exact', 'ivf', 'hnsw' or 'auto'")
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    kind = index if index != "auto" else ("ivf" if n > approx_threshold else "exact")
    report = {"index": kind}
    if kind == "exact":
        idx = faiss.IndexFlatIP(d)
        idx.add(x)
    elif kind == "ivf":
        cells = nlist or int(np.clip(4 * np.sqrt(n), 1, n // 39 or 1))  # faiss wants >= 39 training points per cell
        idx = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, cells, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x if n <= 64 * cells else x[np.sort(rng.choice(n, 64 * cells, replace=False))]
        idx.train(train)
        idx.add(x)
        idx.nprobe = min(nprobe, cells)
        report.update(nlist=cells, **_tune(idx, x, k, "nprobe", cells, min_recall, recall_sample, seed))
    else:
        idx = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efSearch = max(ef_search, k)
        idx.add(x)
        report.update(hnsw_m=hnsw_m, **_tune(idx.hnsw, x, k, "efSearch", MAX_EF_SEARCH, min_recall, recall_sample,
                                             seed, searcher=idx))
    sims, nbrs = idx.search(x, k)
    logger.info("knn: %d images, k=%d, %s", n, k, report)
    if info is not None:
        info.update(report)
    return nbrs.astype(np.int64), sims.astype(np.float32)


def _tune(params, x: np.ndarray, k: int, knob: str, cap: int, min_recall: float, sample: int, seed: int,
          searcher=None) -> dict:
    """Double ``params.<knob>`` until recall@k on ``sample`` queries (against exact search) reaches
    ``min_recall`` or the knob reaches ``cap``; returns the knob's value and the last recall measured."""
    searcher = searcher if searcher is not None else params
    if min_recall <= 0:
        return {knob: int(getattr(params, knob))}
    rng = np.random.default_rng(seed + 1)
    queries = x[np.sort(rng.choice(len(x), min(sample, len(x)), replace=False))]
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    truth = exact.search(queries, k)[1]
    while True:
        recall = recall_at_k(searcher.search(queries, k)[1], truth)
        value = int(getattr(params, knob))
        if recall >= min_recall or value >= cap:
            break
        setattr(params, knob, min(2 * value, cap))
    if recall < min_recall:
        logger.warning("knn: recall@%d %.3f stays below knn.min_recall %.3f at %s=%d (its cap)", k, recall, min_recall,
                       knob, value)
    return {knob: value, f"recall_at_{k}": round(recall, 4), "recall_sample": len(queries), "min_recall": min_recall}
