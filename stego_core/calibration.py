"""Label-free loss shifts from the training set's own feature-correlation statistics.

STEGO's shifts ``b`` decide which feature correlations pull codes together (``F > b``) and which
push them apart. Published shifts were tuned for DINO v1; on stronger backbones (DINOv2) feature
correlations sit far higher and those shifts collapse the code (see docs). Here each shift is set
to a quantile of its own pair type's (pointwise-centred) correlation ``F``, measured on random
training batches exactly as the loss samples them, so no labels are involved:

    b_self = Q_{q_self}(F_self),   b_knn = Q_{q_knn}(F_knn),   b_rand = Q_{q_rand}(F_rand)
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from stego_core.losses import PAIR_TYPES, derangement, feature_correlation, sample_points
from stego_core.sampling import PairSampler

logger = logging.getLogger(__name__)


@torch.no_grad()
def correlation_statistics(
    sampler: PairSampler,
    *,
    batches: int = 20,
    feature_samples: int = 11,
    pointwise: bool = True,
    add_back_mean: bool = True,
    max_values: int = 2_000_000,
) -> dict[str, np.ndarray]:
    """Samples of ``F`` for each pair type over ``batches`` training batches (float32 arrays)."""
    gen = torch.Generator().manual_seed(sampler.seed + 1_000_003)
    values: dict[str, list[torch.Tensor]] = {k: [] for k in PAIR_TYPES}
    for _ in range(batches):
        feats, feats_pos = sampler.next_batch()
        b, s = feats.shape[0], feature_samples
        c1 = (torch.rand(b, s, s, 2, generator=gen) * 2 - 1).to(feats.device)
        c2 = (torch.rand(b, s, s, 2, generator=gen) * 2 - 1).to(feats.device)
        f1, f2 = sample_points(feats, c1), sample_points(feats_pos, c2)
        fneg = sample_points(feats[derangement(b, gen, feats.device)], c2)
        kw = dict(pointwise=pointwise, add_back_mean=add_back_mean)
        values["self"].append(feature_correlation(f1, f1, **kw).flatten().cpu())
        values["knn"].append(feature_correlation(f1, f2, **kw).flatten().cpu())
        values["rand"].append(feature_correlation(f1, fneg, **kw).flatten().cpu())
    out = {}
    rng = np.random.default_rng(sampler.seed)
    for k, parts in values.items():
        arr = torch.cat(parts).float().numpy()
        if arr.size > max_values:
            arr = rng.choice(arr, size=max_values, replace=False)
        out[k] = arr
    return out


def calibrate_shifts(stats: dict[str, np.ndarray], quantiles: dict[str, float]) -> dict[str, float]:
    """Shift per pair type = the given quantile of its correlation samples."""
    for k, q in quantiles.items():
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"shift quantile for {k!r} must be in [0, 1], got {q}")
    shifts = {k: float(np.quantile(stats[k], quantiles[k])) for k in PAIR_TYPES}
    logger.info("calibrated shifts %s from quantiles %s", {k: round(v, 4) for k, v in shifts.items()}, quantiles)
    return shifts


def summarize(stats: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and quartiles of each pair type's correlations (for logs and manifests)."""
    return {
        k: {"mean": float(v.mean()), **{f"q{int(q * 100)}": float(np.quantile(v, q)) for q in (0.25, 0.5, 0.75, 0.8)}}
        for k, v in stats.items()
    }
