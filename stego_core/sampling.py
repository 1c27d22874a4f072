"""Batches of cached training features with their KNN partners, drawn reproducibly."""
from __future__ import annotations

import numpy as np
import torch

from stego_core.access import BatchTable
from stego_core.budget import MemoryBudget


class PairSampler:
    """Draws ``(feats, feats_pos)`` batches from cached dense features ``(N, C, H, W)``.

    Each epoch visits the images in a fresh random order; each image's partner is drawn uniformly
    from its neighbours at ranks ``1..num_neighbors`` of ``knn`` ``(N, k)`` (rank 0 is itself).
    ``features`` is any table (:mod:`stego_core.access`), typically the float16 memmap of the embed
    stage (or a :class:`~stego_core.access.BatchTable` several samplers share): it is copied once onto
    ``device`` when it fits ``budget`` (1835 x 384 x 12 x 12 fp16 =
    203 MB), so a step costs a gather, and otherwise each batch is read from the memmap (the same
    numbers). ``placement`` says which. Batches are float32 tensors on ``device``.
    """

    def __init__(
        self,
        features: np.ndarray,
        knn: np.ndarray,
        *,
        batch_size: int,
        num_neighbors: int = 7,
        seed: int = 0,
        device: str | torch.device = "cpu",
        budget: MemoryBudget | None = None,
    ) -> None:
        n = len(features)
        if knn.shape[0] != n:
            raise ValueError(f"knn table has {knn.shape[0]} rows but there are {n} feature maps")
        if not 1 <= num_neighbors < knn.shape[1]:
            raise ValueError(f"num_neighbors must be in [1, {knn.shape[1] - 1}] (knn table width - 1), got {num_neighbors}")
        if not 2 <= batch_size <= n:
            raise ValueError(f"batch_size must be in [2, {n}] (the number of training images), got {batch_size}")
        self.device = torch.device(device)
        self.table = features if isinstance(features, BatchTable) else BatchTable(features, self.device, budget)
        self.placement = self.table.placement
        self.knn = torch.from_numpy(np.ascontiguousarray(knn[:, 1 : num_neighbors + 1])).long()
        self.batch_size, self.seed, self.n = batch_size, seed, n
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, dtype=np.int64)

    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        return self.table.gather(idx)

    def next_indices(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.order) < self.batch_size:
            self.order = np.concatenate([self.order, self.rng.permutation(self.n)])
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        choice = self.rng.integers(0, self.knn.shape[1], size=len(idx))
        pos = self.knn[torch.from_numpy(idx), torch.from_numpy(choice)].numpy()
        return idx, pos

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx, pos = self.next_indices()
        return self._gather(idx), self._gather(pos)
