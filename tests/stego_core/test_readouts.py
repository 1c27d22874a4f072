"""Robust clustering readouts (consensus, balance choice) and pseudo-label refinement of centroids."""
import numpy as np
import pytest
import torch

from stego_core.consensus import balanced_kmeans_choice, consensus_kmeans, nmi, restart_agreement, size_entropy
from stego_core.kmeans import spherical_kmeans
from stego_core.refine import refine_centroids, smooth_by_affinity


def blobs(sizes, dim=12, spread=0.15, seed=0):
    """Unit-direction blobs: ``sizes[i]`` vectors around direction ``e_i`` (scaled randomly)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.eye(dim)[i] + rng.normal(scale=spread, size=(n, dim)) for i, n in enumerate(sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (x * rng.uniform(0.5, 2.0, size=(len(x), 1))).astype(np.float32), labels


def purity(centroids, x, labels):
    assign = np.argmax(x @ centroids.T, axis=1)
    return sum(np.bincount(labels[assign == c]).max() for c in np.unique(assign)) / len(labels)


def test_size_entropy_closed_forms():
    assert size_entropy(np.array([0, 1, 2, 3]), 4) == pytest.approx(np.log(4))
    assert size_entropy(np.zeros(10, dtype=int), 3) == pytest.approx(0.0)
    assert size_entropy(np.array([0, 0, 0, 1]), 2) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))


def test_consensus_recovers_planted_clusters_as_unit_centroids():
    x, labels = blobs([400, 300, 200, 100])
    centroids, info = consensus_kmeans(x, 4, restarts=6, fine=16, seed=0)
    assert centroids.shape == (4, 12)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert purity(centroids, x, labels) > 0.99
    assert len(info["groups"]) == 16 and sorted(set(info["groups"])) == [0, 1, 2, 3]
    # every fine cluster joins the group of its own blob's direction
    assert (np.abs(centroids @ np.eye(12)[:4].T).max(axis=0) > 0.95).all()


def test_consensus_validation():
    x, _ = blobs([30, 30])
    with pytest.raises(ValueError, match=r"cluster.overcluster \(3\) must be >= the number of clusters \(4\)"):
        consensus_kmeans(x, 4, fine=3)
    with pytest.raises(ValueError, match="exceeds the number of token vectors"):
        consensus_kmeans(x, 2, fine=100)


def test_balance_choice_keeps_the_restart_with_the_most_even_sizes():
    x, _ = blobs([500, 60, 60, 60, 60], spread=0.6, seed=3)
    centroids, info = balanced_kmeans_choice(x, 5, restarts=6, seed=10)
    assert len(info["entropy"]) == 6 and info["chosen"] == int(np.argmax(info["entropy"]))
    # the chosen solution is exactly restart `chosen` run alone
    again = spherical_kmeans(x, 5, restarts=1, seed=10 + info["chosen"])
    assert np.allclose(centroids, again, atol=1e-6)


def test_nmi_matches_the_textbook_formula_and_its_edge_cases():
    """Our NMI (arithmetic normalisation) against a direct computation from the contingency table."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 2000)
    b = np.where(rng.random(2000) < 0.6, a, rng.integers(0, 5, 2000))
    joint = np.zeros((5, 5))
    for i, j in zip(a, b):
        joint[i, j] += 1
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    mi = sum(joint[i, j] * np.log(joint[i, j] / (pa[i] * pb[j])) for i in range(5) for j in range(5) if joint[i, j])
    h = lambda p: -sum(q * np.log(q) for q in p if q)  # noqa: E731
    assert nmi(a, b, 5) == pytest.approx(mi / ((h(pa) + h(pb)) / 2), rel=1e-9)
    assert nmi(a, (a + 2) % 5, 5) == pytest.approx(1.0)  # the same partition, other ids
    assert nmi(a, rng.integers(0, 5, 2000), 5) < 0.01
    assert restart_agreement([a], 5) != restart_agreement([a], 5)  # nan: nothing to compare


def test_restarts_agree_on_planted_clusters_and_disagree_on_noise():
    x, _ = blobs([300, 300, 300, 300])
    _, planted = balanced_kmeans_choice(x, 4, restarts=4, seed=0)
    noise = np.random.default_rng(0).normal(size=(1200, 12)).astype(np.float32)
    _, uniform = balanced_kmeans_choice(noise, 4, restarts=4, seed=0)
    assert planted["agreement"] > 0.95 > 0.6 > uniform["agreement"]


def test_affinity_smoothing_averages_identical_tokens_and_respects_distinct_ones():
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, :, 0] = 1.0  # left column: direction e0
    maps[0, 1, :, 1] = 1.0  # right column: direction e1 (orthogonal)
    probs = torch.rand(1, 3, 2, 2)
    probs = probs / probs.sum(1, keepdim=True)
    out = smooth_by_affinity(maps, probs, sigma_f=0.01, sigma_s=100.0)
    # orthogonal tokens get weight ~exp(-100): each column becomes the mean of its own two tokens
    assert torch.allclose(out[0, :, :, 0], probs[0, :, :, 0].mean(1, keepdim=True).expand(3, 2), atol=1e-4)
    assert torch.allclose(out[0, :, :, 1], probs[0, :, :, 1].mean(1, keepdim=True).expand(3, 2), atol=1e-4)
    assert torch.allclose(out.sum(1), torch.ones(1, 2, 2), atol=1e-5)


def region_maps(n=16, s=8, seed=0):
    """Maps with a top region of direction e0 and a bottom one of e1, plus noise."""
    rng = np.random.default_rng(seed)
    maps = np.zeros((n, 4, s, s), np.float32)
    maps[:, 0, : s // 2] = 1.0
    maps[:, 1, s // 2 :] = 1.0
    return maps + rng.normal(scale=0.2, size=maps.shape).astype(np.float32)


def test_refinement_pulls_perturbed_centroids_back_to_the_regions():
    maps = region_maps()
    start = np.array([[1.0, 0.6, 0.3, 0.0], [0.5, 1.0, 0.0, 0.3]], np.float32)  # tilted away from e0 / e1
    refined = refine_centroids(maps, start, steps=150, lr=0.05, momentum=0.9, seed=0)
    assert refined.shape == (2, 4) and np.allclose(np.linalg.norm(refined, axis=1), 1, atol=1e-5)
    before = start / np.linalg.norm(start, axis=1, keepdims=True)
    assert refined[0, 0] > before[0, 0] and refined[1, 1] > before[1, 1]
    assert refined[0, 0] > 0.9 and refined[1, 1] > 0.9


def test_refinement_with_no_steps_returns_the_normalised_centroids_and_checks_shapes():
    maps = region_maps()
    start = np.array([[2.0, 0, 0, 0], [0, 3.0, 0, 0]], np.float32)
    assert np.allclose(refine_centroids(maps, start, steps=0), np.eye(2, 4))
    with pytest.raises(ValueError, match=r"do not match maps with 4 channels"):
        refine_centroids(maps, np.eye(2, 3, dtype=np.float32), steps=1)
