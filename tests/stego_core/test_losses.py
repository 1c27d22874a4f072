"""The contrastive correlation loss against a slow loop written from the paper's formulas."""
import itertools
import math

import pytest
import torch

from stego_core.losses import ContrastiveCorrelationLoss, correlation, derangement, feature_correlation, sample_points


def slow_pair_loss(f1, f2, c1, c2, shift, pointwise, add_back_mean):
    """Element by element: F, K as cosine similarities, pointwise centering over the partner's points."""
    b, _, s, _ = f1.shape
    total, count = 0.0, 0
    for n in range(b):
        F = torch.zeros(s, s, s, s, dtype=torch.float64)
        K = torch.zeros(s, s, s, s, dtype=torch.float64)
        for h, w, i, j in itertools.product(range(s), repeat=4):
            a, bb = f1[n, :, h, w].double(), f2[n, :, i, j].double()
            F[h, w, i, j] = a @ bb / (a.norm() * bb.norm())
            ca, cb = c1[n, :, h, w].double(), c2[n, :, i, j].double()
            K[h, w, i, j] = ca @ cb / (ca.norm() * cb.norm())
        if pointwise:  # centre over the partner's points; the batch-wide add-back is left to the caller
            F = F - F.mean(dim=(2, 3), keepdim=True)
        for idx in itertools.product(range(s), repeat=4):
            total += -max(K[idx].item(), 0.0) * (F[idx].item() - shift)
            count += 1
    return total, count


@pytest.mark.parametrize("pointwise", [True, False])
@pytest.mark.parametrize("add_back_mean", [True, False])
def test_pair_loss_matches_slow_loop(pointwise, add_back_mean):
    torch.manual_seed(0)
    b, c, d, s = 2, 5, 3, 3
    f1, f2 = torch.randn(b, c, s, s), torch.randn(b, c, s, s)
    c1, c2 = torch.randn(b, d, s, s), torch.randn(b, d, s, s)
    loss = ContrastiveCorrelationLoss(shifts=dict(self=0.1, knn=0.2, rand=0.3), weights=dict(self=1, knn=1, rand=1),
                                      pointwise=pointwise, add_back_mean=add_back_mean)
    fast = loss.pair_loss(f1, f2, c1, c2, 0.25).mean().item()
    # The add-back shifts every F entry by the global mean of the uncentred F over the batch.
    global_mean = correlation(f1, f2).mean().item() if (pointwise and add_back_mean) else 0.0
    total, count = slow_pair_loss(f1, f2, c1, c2, 0.25 - global_mean, pointwise, add_back_mean)
    assert fast == pytest.approx(total / count, rel=1e-4, abs=1e-6)


def test_correlation_is_cosine_and_symmetric():
    torch.manual_seed(1)
    a, b = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    c = correlation(a, b)
    ref = torch.nn.functional.cosine_similarity(a[0, :, 0, 1], b[0, :, 1, 0], dim=0)
    assert c[0, 0, 1, 1, 0].item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(correlation(b, a), c.permute(0, 3, 4, 1, 2), atol=1e-6)
    assert torch.allclose(correlation(a, a)[0, 1, 1, 1, 1], torch.tensor(1.0))


def test_pointwise_centering_with_add_back_keeps_global_mean():
    torch.manual_seed(2)
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    raw = correlation(a, b)
    centred = feature_correlation(a, b, pointwise=True, add_back_mean=True)
    assert centred.mean().item() == pytest.approx(raw.mean().item(), abs=1e-6)
    plain = feature_correlation(a, b, pointwise=True, add_back_mean=False)
    assert torch.allclose(plain.mean(dim=(3, 4)), torch.zeros(2, 3, 3), atol=1e-6)


def test_sample_points_hits_grid_corners():
    maps = torch.arange(16.0).reshape(1, 1, 4, 4)
    coords = torch.tensor([[[[-1.0, -1.0], [1.0, 1.0]]]])  # (x, y): top-left, bottom-right
    out = sample_points(maps, coords)
    assert out.flatten().tolist() == [0.0, 15.0]


@pytest.mark.parametrize("n", [2, 3, 7, 16])
def test_derangement_has_no_fixed_point(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(20):
        p = derangement(n, gen)
        assert sorted(p.tolist()) == list(range(n))
        assert not torch.any(p == torch.arange(n))


def test_full_loss_terms_and_weights():
    torch.manual_seed(3)
    f, fp = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    c, cp = torch.randn(4, 3, 6, 6, requires_grad=True), torch.randn(4, 3, 6, 6)
    shifts, weights = dict(self=0.3, knn=0.2, rand=0.5), dict(self=0.67, knn=0.25, rand=0.63)
    loss = ContrastiveCorrelationLoss(shifts=shifts, weights=weights, feature_samples=5, neg_samples=3)
    out = loss(f, fp, c, cp, generator=torch.Generator().manual_seed(0))
    expected = sum(weights[k] * out.terms[k] for k in weights)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
    out.total.backward()
    assert c.grad is not None and torch.isfinite(c.grad).all()
    # Same generator seed -> the same sampled points -> the same loss.
    again = loss(f, fp, c, cp, generator=torch.Generator().manual_seed(0))
    assert again.total.item() == pytest.approx(out.total.item(), rel=1e-6)


def test_self_term_pulls_identical_codes_when_features_agree():
    # Identical features everywhere: F == 1 > shift, so the self loss is -(1 - shift) * clamp(K, 0); with
    # identical codes K == 1 and the loss is exactly -(1 - shift).
    f = torch.ones(2, 4, 5, 5)
    c = torch.ones(2, 3, 5, 5)
    loss = ContrastiveCorrelationLoss(shifts=dict(self=0.2, knn=0.2, rand=0.2), weights=dict(self=1, knn=0, rand=0),
                                      pointwise=False)
    out = loss(f, f, c, c)
    assert out.terms["self"].item() == pytest.approx(-(1 - 0.2), abs=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(shifts=dict(self=0, knn=0), weights=dict(self=1, knn=1, rand=1)), "shifts must have exactly"),
        (dict(shifts=dict(self=0, knn=0, rand=0), weights=dict(self=-1, knn=1, rand=1)), "weights must be >= 0"),
        (dict(shifts=dict(self=0, knn=0, rand=0), weights=dict(self=1, knn=1, rand=1), feature_samples=0), "feature_samples"),
        (dict(shifts=dict(self=0, knn=0, rand=0), weights=dict(self=1, knn=1, rand=1), neg_samples=0), "neg_samples"),
        (dict(weights=dict(self=1, knn=1, rand=1)), "either shifts .* or anchor_quantile"),
        (dict(shifts=dict(self=0, knn=0, rand=0), weights=dict(self=1, knn=1, rand=1), anchor_quantile=0.8),
         "either shifts .* or anchor_quantile"),
        (dict(weights=dict(self=1, knn=1, rand=1), anchor_quantile=1.5), r"anchor_quantile must be in \[0, 1\]"),
        (dict(shifts=dict(self=0, knn=0, rand=0), weights=dict(self=1, knn=1, rand=1), teacher_weight=-1),
         "teacher_weight must be >= 0"),
    ],
)
def test_loss_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContrastiveCorrelationLoss(**kwargs)


def test_batch_of_one_cannot_form_negatives():
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def batch(seed=5, b=4, c=6, d=3, s=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, s, s, generator=g), torch.randn(b, c, s, s, generator=g),
            torch.randn(b, d, s, s, generator=g), torch.randn(b, d, s, s, generator=g))


def test_anchor_shifts_are_each_anchors_quantile_of_its_random_correlations():
    g = torch.Generator().manual_seed(0)
    negatives = [torch.randn(2, 3, 3, 3, 3, generator=g) for _ in range(4)]
    shifts = ContrastiveCorrelationLoss.anchor_shifts(negatives, 0.75)
    assert shifts.shape == (2, 3, 3, 1, 1)
    for b, h, w in itertools.product(range(2), range(3), range(3)):
        pooled = torch.cat([n[b, h, w].flatten() for n in negatives])  # 4 x 9 values of this anchor
        assert shifts[b, h, w, 0, 0].item() == pytest.approx(torch.quantile(pooled, 0.75).item(), abs=1e-6)


def test_per_anchor_loss_equals_the_pair_losses_at_those_shifts():
    """Replay the loss's own draws: same coordinates and derangements, shifts from the random pairs."""
    f, fp, c, cp = batch()
    weights = dict(self=0.67, knn=0.25, rand=0.63)
    loss = ContrastiveCorrelationLoss(weights=weights, anchor_quantile=0.8, feature_samples=4, neg_samples=3)
    out = loss(f, fp, c, cp, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    c1x, c2x = loss.random_coords(4, "cpu", gen), loss.random_coords(4, "cpu", gen)
    perms = [derangement(4, gen) for _ in range(3)]
    f1, f2, k1, k2 = sample_points(f, c1x), sample_points(fp, c2x), sample_points(c, c1x), sample_points(cp, c2x)
    f_rand = [feature_correlation(f1, sample_points(f[p], c2x), pointwise=True, add_back_mean=True) for p in perms]
    shift = ContrastiveCorrelationLoss.anchor_shifts(f_rand, 0.8)
    expected = {
        "self": loss.pair_loss(f1, f1, k1, k1, shift).mean(),
        "knn": loss.pair_loss(f1, f2, k1, k2, shift).mean(),
        "rand": torch.cat([loss.pair_loss(f1, sample_points(f[p], c2x), k1, sample_points(c[p], c2x), shift)
                           for p in perms]).mean(),
    }
    for k in expected:
        assert out.terms[k].item() == pytest.approx(expected[k].item(), rel=1e-5)
    assert "teacher" not in out.terms


def test_teacher_term_distils_the_teachers_correlations():
    f, fp, c, cp = batch(seed=7)
    t, tp = batch(seed=8)[2:]
    loss = ContrastiveCorrelationLoss(shifts=dict(self=0.3, knn=0.3, rand=0.5), weights=dict(self=1, knn=1, rand=1),
                                      teacher_weight=0.5, teacher_quantile=0.6, feature_samples=4, neg_samples=2)
    plain = loss(f, fp, c, cp, generator=torch.Generator().manual_seed(2))
    out = loss(f, fp, c, cp, teacher=(t, tp), generator=torch.Generator().manual_seed(2))
    assert set(out.terms) == {"self", "knn", "rand", "teacher"}
    assert out.total.item() == pytest.approx(plain.total.item() + 0.5 * out.terms["teacher"].item(), rel=1e-5)
    # by hand: K_T on the KNN and random pairs, shifted per anchor by the 0.6 quantile of its random K_T
    gen = torch.Generator().manual_seed(2)
    c1x, c2x = loss.random_coords(4, "cpu", gen), loss.random_coords(4, "cpu", gen)
    perms = [derangement(4, gen) for _ in range(2)]
    t1 = sample_points(t, c1x)
    t_rand = [correlation(t1, sample_points(t[p], c2x)) for p in perms]
    shift = ContrastiveCorrelationLoss.anchor_shifts(t_rand, 0.6)
    k1 = sample_points(c, c1x)
    pairs = [(correlation(t1, sample_points(tp, c2x)), sample_points(cp, c2x))]
    pairs += [(tr, sample_points(c[p], c2x)) for tr, p in zip(t_rand, perms)]
    by_hand = torch.cat([-correlation(k1, k2).clamp(min=0) * (target - shift) for target, k2 in pairs]).mean()
    assert out.terms["teacher"].item() == pytest.approx(by_hand.item(), rel=1e-5)
