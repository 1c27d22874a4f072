import numpy as np
import pytest

from stego_core.coherence import spatial_coherence


def direct_kappa(maps: np.ndarray, step: int) -> float:
    """Cohen's kappa of every pixel's label against its right and lower neighbours', by explicit loops."""
    sub = maps[:, ::step, ::step]
    same = pairs = 0
    for m in sub:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                for di, dj in ((1, 0), (0, 1)):
                    if i + di < m.shape[0] and j + dj < m.shape[1]:
                        same += int(m[i, j] == m[i + di, j + dj])
                        pairs += 1
    labels, counts = np.unique(sub, return_counts=True)
    expected = ((counts / counts.sum()) ** 2).sum()
    return (same / pairs - expected) / (1 - expected)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_matches_a_direct_computation_and_does_not_depend_on_chunks(step):
    rng = np.random.default_rng(step)
    # Blocky maps with noise: some neighbours agree, some do not.
    maps = np.kron(rng.integers(0, 5, size=(7, 4, 5)), np.ones((1, 3, 3), np.int64))
    maps = np.where(rng.random(maps.shape) < 0.2, rng.integers(0, 5, size=maps.shape), maps).astype(np.uint8)
    expected = direct_kappa(maps, step)
    assert spatial_coherence(maps, step=step) == pytest.approx(expected, abs=1e-12)
    assert spatial_coherence(maps, step=step, chunk=2) == pytest.approx(expected, abs=1e-12)


def test_contiguous_segments_score_high_and_noise_scores_zero():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 6, size=(20, 64, 64))
    blocks = np.kron(rng.integers(0, 6, size=(20, 4, 4)), np.ones((1, 16, 16), np.int64))
    assert abs(spatial_coherence(noise, step=1)) < 0.01
    assert spatial_coherence(blocks, step=1) > 0.85
    # One big cluster is not rewarded for its equal neighbours: kappa discounts what the sizes explain.
    mostly_one = np.where(rng.random((20, 64, 64)) < 0.9, 0, noise)
    assert (mostly_one[:, 1:] == mostly_one[:, :-1]).mean() > 0.8 and abs(spatial_coherence(mostly_one, step=1)) < 0.01


def test_edge_cases():
    assert spatial_coherence(np.zeros((3, 8, 8), np.uint8)) == 1.0
    assert np.isnan(spatial_coherence(np.zeros((2, 1, 1), np.uint8)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        spatial_coherence(np.zeros((8, 8), np.uint8))
