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

Two options beyond the paper, both label-free:

* **Per-anchor shifts** (``anchor_quantile=q``; "hidden positives" mined from the backbone, after the
  idea of Seong et al., CVPR 2023): instead of one global shift per pair type, each anchor point
  ``(b, h, w)`` gets its own ``b_i = Q_q`` of its feature correlations with the random images' points
  (all ``neg_samples x S x S`` of them), used for every pair type. A point of a common class (road,
  sky) finds close matches in random images, so only its very closest partners pull; a point of a
  rare class gets a lower bar.
* **Teacher positives** (``teacher_weight > 0``): given the codes of an EMA teacher of the head, the
  term ``L_teacher = mean(-clamp(K, 0) * (K_T - b_T,i))`` distils the teacher's code correlations
  ``K_T`` on the KNN and random pairs, each anchor's shift ``b_T,i`` being the ``teacher_quantile``
  of its teacher correlations with the random images' points (positives mined from the teacher).
* **Concept-wise contrast** (``concept`` with ``concept_weight > 0``; CAUSE): at the anchor and KNN
  points, :class:`~stego_core.losses.concept.ConceptContrastiveLoss` pulls the head's code towards the
  targets (the teacher's codes, else the head's own, detached) of points whose frozen features share a
  concept of the clusterbook and pushes it from the others.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stego_core.losses.concept import ConceptContrastiveLoss, points

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
        shifts: ``{"self": b_self, "knn": b_knn, "rand": b_rand}``; None with ``anchor_quantile``.
        weights: ``{"self": w_self, "knn": w_knn, "rand": w_rand}``.
        anchor_quantile: per-anchor shifts at this quantile of each anchor's random-pair correlations
            (instead of ``shifts``).
        teacher_weight: weight of the teacher-positives term (used when ``forward`` gets ``teacher``).
        teacher_quantile: per-anchor shift quantile of the teacher term.
        concept: the concept-wise contrastive loss (a clusterbook); used with ``concept_weight > 0``.
        concept_weight: weight of its ``"concept"`` term.
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
        shifts: dict[str, float] | None = None,
        weights: dict[str, float],
        anchor_quantile: float | None = None,
        teacher_weight: float = 0.0,
        teacher_quantile: float = 0.8,
        feature_samples: int = 11,
        neg_samples: int = 5,
        pointwise: bool = True,
        add_back_mean: bool = True,
        zero_clamp: bool = True,
        concept: ConceptContrastiveLoss | None = None,
        concept_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if (shifts is None) == (anchor_quantile is None):
            raise ValueError("give either shifts (one per pair type) or anchor_quantile (per-anchor shifts), not both")
        for name, table in (("shifts", shifts), ("weights", weights)):
            if table is not None and set(table) != set(PAIR_TYPES):
                raise ValueError(f"{name} must have exactly the keys {PAIR_TYPES}, got {sorted(table)}")
        for name, q in (("anchor_quantile", anchor_quantile), ("teacher_quantile", teacher_quantile)):
            if q is not None and not 0.0 <= q <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {q}")
        if teacher_weight < 0:
            raise ValueError(f"teacher_weight must be >= 0, got {teacher_weight}")
        if concept_weight < 0 or (concept_weight > 0 and concept is None):
            raise ValueError(f"concept_weight must be >= 0 and needs a concept loss (a clusterbook), got {concept_weight}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        if feature_samples < 1:
            raise ValueError(f"feature_samples must be >= 1, got {feature_samples}")
        if neg_samples < 1:
            raise ValueError(f"neg_samples must be >= 1, got {neg_samples}")
        self.shifts = {k: float(v) for k, v in shifts.items()} if shifts is not None else None
        self.anchor_quantile = anchor_quantile
        self.teacher_weight, self.teacher_quantile = float(teacher_weight), teacher_quantile
        self.weights = {k: float(v) for k, v in weights.items()}
        self.feature_samples = feature_samples
        self.neg_samples = neg_samples
        self.pointwise = pointwise
        self.add_back_mean = add_back_mean
        self.zero_clamp = zero_clamp
        self.concept = concept if concept_weight > 0 else None
        self.concept_weight = float(concept_weight)

    def pair_loss(self, f1, f2, c1, c2, shift: float | torch.Tensor) -> torch.Tensor:
        """Elementwise ``-clamp(K, 0) * (F - shift)`` of shape ``(B, S, S, S, S)``; ``shift`` is a
        float or per-anchor shifts ``(B, S, S, 1, 1)``."""
        with torch.no_grad():
            fd = feature_correlation(f1, f2, pointwise=self.pointwise, add_back_mean=self.add_back_mean)
        return self._distil(fd, c1, c2, shift)

    def _distil(self, target: torch.Tensor, c1, c2, shift: float | torch.Tensor) -> torch.Tensor:
        cd = correlation(c1, c2)
        if self.zero_clamp:
            cd = cd.clamp(min=0.0)
        return -cd * (target - shift)

    @staticmethod
    def anchor_shifts(negatives: list[torch.Tensor], quantile: float) -> torch.Tensor:
        """Per-anchor shifts ``(B, S, S, 1, 1)``: the ``quantile`` of each anchor's correlations with
        all points of its random partners (``negatives``: ``neg_samples`` tensors ``(B, S, S, S, S)``)."""
        pooled = torch.cat([n.flatten(3) for n in negatives], dim=3)
        return torch.quantile(pooled, quantile, dim=3)[..., None, None]

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
        teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        clean: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> CorrelationLossOutput:
        """``teacher``: the EMA teacher's codes of ``feats`` and ``feats_pos`` (no gradient); with
        ``teacher_weight > 0`` they add the ``"teacher"`` term. ``clean``: ``feats`` and ``feats_pos``
        before channel dropout, which the concept term assigns to concepts (default: ``feats``, ``feats_pos``)."""
        if feats.shape[0] != code.shape[0] or feats_pos.shape[0] != feats.shape[0]:
            raise ValueError(
                f"batch sizes differ: feats {tuple(feats.shape)}, feats_pos {tuple(feats_pos.shape)}, code {tuple(code.shape)}"
            )
        batch, device = feats.shape[0], feats.device
        coords1 = self.random_coords(batch, device, generator)
        coords2 = self.random_coords(batch, device, generator)
        f1, c1 = sample_points(feats, coords1), sample_points(code, coords1)
        f2, c2 = sample_points(feats_pos, coords2), sample_points(code_pos, coords2)

        perms = [derangement(batch, generator, device) for _ in range(self.neg_samples)]
        kw = dict(pointwise=self.pointwise, add_back_mean=self.add_back_mean)
        with torch.no_grad():
            f_self, f_knn = feature_correlation(f1, f1, **kw), feature_correlation(f1, f2, **kw)
            f_rand = [feature_correlation(f1, sample_points(feats[p], coords2), **kw) for p in perms]
        if self.anchor_quantile is not None:
            shift = self.anchor_shifts(f_rand, self.anchor_quantile)
            shifts = {k: shift for k in PAIR_TYPES}
        else:
            shifts = self.shifts
        c_rand = [sample_points(code[p], coords2) for p in perms]
        terms = {
            "self": self._distil(f_self, c1, c1, shifts["self"]).mean(),
            "knn": self._distil(f_knn, c1, c2, shifts["knn"]).mean(),
            "rand": torch.cat([self._distil(fr, c1, cr, shifts["rand"]) for fr, cr in zip(f_rand, c_rand)]).mean(),
        }
        total = sum(self.weights[k] * terms[k] for k in PAIR_TYPES)
        if teacher is not None and self.teacher_weight > 0:
            terms["teacher"] = self.teacher_term(teacher, coords1, coords2, perms, c1, c2, c_rand)
            total = total + self.teacher_weight * terms["teacher"]
        if self.concept is not None:
            terms["concept"] = self.concept_term(clean or (feats, feats_pos), teacher, coords1, coords2, c1, c2)
            total = total + self.concept_weight * terms["concept"]
        return CorrelationLossOutput(total=total, terms=terms)

    def concept_term(self, clean, teacher, coords1, coords2, c1, c2) -> torch.Tensor:
        """The concept-wise contrast over the anchor and KNN points (targets: the teacher's codes there)."""
        with torch.no_grad():
            f = torch.cat([points(sample_points(clean[0], coords1)), points(sample_points(clean[1], coords2))])
            if teacher is not None:
                t = torch.cat([points(sample_points(teacher[0], coords1)), points(sample_points(teacher[1], coords2))])
            else:
                t = torch.cat([points(c1), points(c2)]).detach()
        return self.concept(f, torch.cat([points(c1), points(c2)]), t)

    def teacher_term(self, teacher, coords1, coords2, perms, c1, c2, c_rand) -> torch.Tensor:
        """Distil the teacher's code correlations on the KNN and random pairs, per-anchor shifted."""
        with torch.no_grad():
            t_code, t_code_pos = teacher
            t1, t2 = sample_points(t_code, coords1), sample_points(t_code_pos, coords2)
            t_rand = [correlation(t1, sample_points(t_code[p], coords2)) for p in perms]
            shift = self.anchor_shifts(t_rand, self.teacher_quantile)
            t_knn = correlation(t1, t2)
        parts = [self._distil(t_knn, c1, c2, shift)] + [self._distil(tr, c1, cr, shift) for tr, cr in zip(t_rand, c_rand)]
        return torch.cat(parts).mean()
