import numpy as np
import pytest

from stego_core.access import sample_tokens as tokens
from stego_core.kmeans import spherical_kmeans
from stego_core.knn import global_descriptors, knn_search


def brute_force_knn(x, k):
    sims = x @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.mark.parametrize("index", ["exact", "hnsw", "ivf"])
def test_knn_matches_brute_force(index):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 16, 3, 3)).astype(np.float16)
    desc = global_descriptors(feats)
    assert np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-5)
    ref = feats.astype(np.float32).mean(axis=(2, 3))
    assert np.allclose(desc, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    nbrs, sims = knn_search(desc, 10, index=index)
    ref_idx, ref_sims = brute_force_knn(desc, 10)
    assert np.allclose(sims, ref_sims, atol=1e-5)
    assert (nbrs[:, 0] == np.arange(200)).all()  # rank 0 is the image itself
    assert (nbrs == ref_idx).mean() > 0.98  # ties aside, the same neighbours


def test_knn_k_larger_than_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"knn k must be in \[1, 5\]"):
        knn_search(np.eye(5, dtype=np.float32), 6)


def test_knn_auto_switches_to_an_inverted_file_above_threshold():
    x = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    info = {}
    knn_search(x, 5, index="auto", approx_threshold=10, info=info)
    assert info["index"] == "ivf" and info["nlist"] == 12  # 500 // 39 cells at most: enough training points each
    small = {}
    knn_search(x, 5, index="auto", approx_threshold=1000, info=small)
    assert small == {"index": "exact"}


def clustered_unit_vectors(n=6000, d=32, clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + rng.normal(scale=0.7, size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("index,knob", [("ivf", "nprobe"), ("hnsw", "efSearch")])
def test_approximate_index_widens_its_search_until_the_recall_target(index, knob):
    from stego_core.knn import recall_at_k

    x = clustered_unit_vectors()
    truth, _ = knn_search(x, 7, index="exact")
    narrow, wide = {}, {}
    start = dict(nprobe=1, nlist=200) if index == "ivf" else dict(ef_search=7, hnsw_m=4)
    found_narrow, _ = knn_search(x, 7, index=index, min_recall=0, info=narrow, **start)
    found_wide, _ = knn_search(x, 7, index=index, min_recall=0.99, info=wide, **start)
    assert narrow[knob] < wide[knob]  # the tuning widened the search ...
    assert wide["recall_at_7"] >= 0.99 and wide["min_recall"] == 0.99  # ... until the sample met the target
    assert recall_at_k(found_wide, truth) >= 0.98  # and the whole search is as good as the sample said
    assert recall_at_k(found_wide, truth) > recall_at_k(found_narrow, truth)


def test_recall_at_k_closed_form():
    from stego_core.knn import recall_at_k

    assert recall_at_k(np.array([[0, 1, 2], [3, 4, 5]]), np.array([[2, 1, 9], [3, 4, 5]])) == pytest.approx((2 / 3 + 1) / 2)


def test_spherical_kmeans_recovers_directions():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8, dtype=np.float32) * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(300, 8)) for c in centres]) * rng.uniform(0.5, 3, size=(1200, 1))
    cents = spherical_kmeans(x, 4, restarts=3)
    assert np.allclose(np.linalg.norm(cents, axis=1), 1, atol=1e-5)
    # every true direction has a centroid within a small angle
    cos = (centres / 5) @ cents.T
    assert (cos.max(axis=1) > 0.95).all()


def test_kmeans_validation_and_tokens():
    with pytest.raises(ValueError, match="k-means needs"):
        spherical_kmeans(np.ones((3, 2), np.float32), 4)
    f = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    t = tokens(f)
    assert t.shape == (8, 3) and (t[1] == f[0, :, 0, 1]).all()
    assert tokens(f, max_tokens=5).shape == (5, 3)


def test_assign_gives_the_nearest_centroid_by_cosine_and_its_similarity():
    from stego_core.kmeans import assign, normalize_rows

    rng = np.random.default_rng(3)
    x, c = normalize_rows(rng.normal(size=(500, 16))), normalize_rows(rng.normal(size=(7, 16)))
    labels, cosines = assign(x, c)
    np.testing.assert_array_equal(labels, (x @ c.T).argmax(1))
    np.testing.assert_allclose(cosines, (x @ c.T).max(1), rtol=1e-5, atol=1e-6)


def test_kmeans_on_an_overwritten_sample_gives_the_same_centroids_bit_for_bit():
    """``overwrite`` (the cluster stage's own token sample normalised in place: one copy of the sample
    fewer at the peak) changes no number, for the plain, balanced and consensus fits."""
    from stego_core.consensus import balanced_kmeans_choice, consensus_kmeans

    rng = np.random.default_rng(3)
    sample = (rng.normal(size=(3000, 24)) + 4 * rng.normal(size=(6, 24))[rng.integers(0, 6, 3000)]).astype(np.float32)
    fits = {
        "plain": lambda x, **o: spherical_kmeans(x, 6, restarts=2, seed=1, **o),
        "balance": lambda x, **o: balanced_kmeans_choice(x, 6, restarts=2, seed=1, **o)[0],
        "consensus": lambda x, **o: consensus_kmeans(x, 6, restarts=3, fine=20, seed=1, **o)[0],
    }
    for name, fit in fits.items():
        kept, owned = sample.copy(), sample.copy()
        expected = fit(kept)
        assert np.array_equal(kept, sample), name  # without overwrite the input is left alone
        got = fit(owned, overwrite=True)
        assert np.array_equal(got, expected), name
        assert np.allclose(np.linalg.norm(owned, axis=1), 1.0, atol=1e-5), name  # normalised where it lay
