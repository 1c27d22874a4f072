"""STEGO's contrastive correlation loss (Hamilton et al., ICLR 2022, eq. 3-5).

For two dense feature maps ``f1, f2`` of shape ``(B, C, S, S)`` and their codes ``c1, c2`` of shape
``(B, D, S, S)`` (both sampled at ``S x S`` random points), the correlation tensors are

    F[b, h, w, i, j] = <f1[b, :, h, w], f2[b, :, i, j]> / (|f1[b, :, h, w]| |f2[b, :, i, j]|)
    K[b, h, w, i, j] = same for the codes.

With *pointwise* centering ``F`` has its mean over the partner's points ``(i, j)`` removed; the
reference implementation then adds back the global mean of the uncentred ``F`` (the paper's formula
omits this: ``add_back_mean`` selects). The loss of one pair type with shift ``b`` is

    L(b) = mean( -clamp(K, min=0) * (F - b) )

and the total is ``w_self L_self(b_self) + w_knn L_knn(b_knn) + w_rand L_rand(b_rand)``, where "self"
pairs an image with itself at the same points, "knn" with a KNN partner, and "rand" with other images
of the batch through ``neg_samples`` derangements (permutations without fixed points).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

PAIR_TYPES = ("self", "knn", "rand")


def sample_points(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``maps`` ``(B, C, H, W)`` at ``coords`` ``(B, S, S, 2)`` in ``[-1, 1]``.

    Border padding and ``align_corners=True`` as in the reference. Returns ``(B, C, S, S)``.
    """
    return F.grid_sample(maps, coords, mode="bilinear", padding_mode="border", align_corners=True)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine correlation tensor ``(B, S, S, S, S)`` of ``a`` and ``b`` ``(B, C, S, S)``."""
    a = F.normalize(a, dim=1, eps=1e-10)
    b = F.normalize(b, dim=1, eps=1e-10)
    return torch.einsum("nchw,ncij->nhwij", a, b)


def feature_correlation(f1: torch.Tensor, f2: torch.Tensor, *, pointwise: bool, add_back_mean: bool) -> torch.Tensor:
    """The (optionally pointwise-centred) feature correlation ``F`` the code is asked to reproduce."""
    fd = correlation(f1, f2)
    if pointwise:
        global_mean = fd.mean()
        fd = fd - fd.mean(dim=(3, 4), keepdim=True)
        if add_back_mean:
            fd = fd + global_mean
    return fd


def derangement(n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random permutation of ``range(n)`` with no fixed point (``n >= 2``): a random single cycle."""
    if n < 2:
        raise ValueError(f"negative pairs need a batch of at least 2 images, got batch size {n}")
    order = torch.randperm(n, generator=generator)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm.to(device)


@dataclass
class CorrelationLossOutput:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # "self" / "knn" / "rand" un-weighted losses (scalars)


class ContrastiveCorrelationLoss(torch.nn.Module):
    """STEGO's loss on a batch of features, their KNN partners' features and both codes.

    Args:
        shifts: ``{"self": b_self, "knn": b_knn, "rand": b_rand}``.
        weights: ``{"self": w_self, "knn": w_knn, "rand": w_rand}``.
        feature_samples: ``S``; ``S x S`` points are sampled per image (11 in STEGO).
        neg_samples: number of derangements for the random-pair term (5 in STEGO).
        pointwise: centre ``F`` over the partner's points.
        add_back_mean: after pointwise centering add back the global mean (the reference does).
        zero_clamp: clamp ``K`` at 0 from below (STEGO); ``False`` keeps negative code correlations.

    Shapes: ``feats``/``feats_pos`` ``(B, C, H, W)``, ``code``/``code_pos`` ``(B, D, H, W)``.

    Example:
        >>> loss = ContrastiveCorrelationLoss(shifts=dict(self=.6, knn=.55, rand=.75),
        ...                                   weights=dict(self=.67, knn=.25, rand=.63))
        >>> out = loss(f, f_pos, c, c_pos)  # out.total.backward()
    """

    def __init__(
        self,
        *,
        shifts: dict[str, float],
        weights: dict[str, float],
        feature_samples: int = 11,
        neg_samples: int = 5,
        pointwise: bool = True,
        add_back_mean: bool = True,
        zero_clamp: bool = True,
    ) -> None:
        super().__init__()
        for name, table in (("shifts", shifts), ("weights", weights)):
            if set(table) != set(PAIR_TYPES):
                raise ValueError(f"{name} must have exactly the keys {PAIR_TYPES}, got {sorted(table)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        if feature_samples < 1:
            raise ValueError(f"feature_samples must be >= 1, got {feature_samples}")
        if neg_samples < 1:
            raise ValueError(f"neg_samples must be >= 1, got {neg_samples}")
        self.shifts = {k: float(v) for k, v in shifts.items()}
        self.weights = {k: float(v) for k, v in weights.items()}
        self.feature_samples = feature_samples
        self.neg_samples = neg_samples
        self.pointwise = pointwise
        self.add_back_mean = add_back_mean
        self.zero_clamp = zero_clamp

    def pair_loss(self, f1, f2, c1, c2, shift: float) -> torch.Tensor:
        """Elementwise ``-clamp(K, 0) * (F - shift)`` of shape ``(B, S, S, S, S)``."""
        with torch.no_grad():
            fd = feature_correlation(f1, f2, pointwise=self.pointwise, add_back_mean=self.add_back_mean)
        cd = correlation(c1, c2)
        if self.zero_clamp:
            cd = cd.clamp(min=0.0)
        return -cd * (fd - shift)

    def random_coords(self, batch: int, device, generator: torch.Generator | None) -> torch.Tensor:
        s = self.feature_samples
        return (torch.rand(batch, s, s, 2, generator=generator) * 2 - 1).to(device)

    def forward(
        self,
        feats: torch.Tensor,
        feats_pos: torch.Tensor,
        code: torch.Tensor,
        code_pos: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> CorrelationLossOutput:
        if feats.shape[0] != code.shape[0] or feats_pos.shape[0] != feats.shape[0]:
            raise ValueError(
                f"batch sizes differ: feats {tuple(feats.shape)}, feats_pos {tuple(feats_pos.shape)}, code {tuple(code.shape)}"
            )
        batch, device = feats.shape[0], feats.device
        coords1 = self.random_coords(batch, device, generator)
        coords2 = self.random_coords(batch, device, generator)
        f1, c1 = sample_points(feats, coords1), sample_points(code, coords1)
        f2, c2 = sample_points(feats_pos, coords2), sample_points(code_pos, coords2)

        terms = {
            "self": self.pair_loss(f1, f1, c1, c1, self.shifts["self"]).mean(),
            "knn": self.pair_loss(f1, f2, c1, c2, self.shifts["knn"]).mean(),
        }
        negatives = []
        for _ in range(self.neg_samples):
            perm = derangement(batch, generator, device)
            f_neg = sample_points(feats[perm], coords2)
            c_neg = sample_points(code[perm], coords2)
            negatives.append(self.pair_loss(f1, f_neg, c1, c_neg, self.shifts["rand"]))
        terms["rand"] = torch.cat(negatives).mean()
        total = sum(self.weights[k] * terms[k] for k in PAIR_TYPES)
        return CorrelationLossOutput(total=total, terms=terms)
