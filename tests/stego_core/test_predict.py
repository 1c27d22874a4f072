import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stego_core.head import SegmentationHead
from stego_core.predict import ClusterReadout, LinearReadout, predict
from stego_core.probes import LinearProbe


def test_cluster_prediction_is_nearest_centroid_after_upsampling_and_flip_average():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 6, 4, 4)).astype(np.float16)
    flips = rng.normal(size=(5, 6, 4, 4)).astype(np.float16)
    cents = rng.normal(size=(3, 6)).astype(np.float32)
    out = predict(feats, flips, None, ClusterReadout(cents), (8, 8), progress=False)
    avg = (torch.from_numpy(feats.astype(np.float32)) + torch.from_numpy(flips.astype(np.float32))) / 2
    up = F.normalize(F.interpolate(avg, size=(8, 8), mode="bilinear", align_corners=False), dim=1)
    expected = torch.einsum("bdhw,kd->bkhw", up, F.normalize(torch.from_numpy(cents), dim=1)).argmax(1)
    assert out.dtype == np.uint8 and out.shape == (5, 8, 8)
    assert (out == expected.numpy()).all()
    # A tiny memory budget forces batches of one image: same answer.
    assert (predict(feats, flips, None, ClusterReadout(cents), (8, 8), max_batch_bytes=1, progress=False) == out).all()


def test_LinearReadout_through_a_head_and_crf_hook():
    torch.manual_seed(0)
    head, probe = SegmentationHead(6, 4).eval(), LinearProbe(4, 3).eval()
    feats = np.random.default_rng(1).normal(size=(3, 6, 4, 4)).astype(np.float32)
    seen = []

    def crf(rows, probs):
        seen.append(list(rows))
        assert probs.shape == (len(rows), 3, 8, 8) and np.allclose(probs.sum(1), 1, atol=1e-5)
        return [np.roll(p, 1, axis=0) for p in probs]  # a visible change: class c -> c+1

    with torch.no_grad():
        plain = predict(feats, None, head, LinearReadout(probe), (8, 8), progress=False)
        hooked = predict(feats, None, head, LinearReadout(probe), (8, 8), crf=crf, batch=2, progress=False)
    assert seen == [[0, 1], [2]]
    assert (hooked == (plain + 1) % 3).all()


def test_too_many_clusters_for_uint8():
    with pytest.raises(ValueError, match="at most 255"):
        predict(np.zeros((1, 2, 2, 2), np.float32), None, None, ClusterReadout(np.eye(300, 2)), (2, 2), progress=False)


@pytest.mark.parametrize("seed", range(5))
def test_labels_at_low_resolution_are_the_argmax_of_the_upsampled_probabilities(seed):
    """Scores computed before upsampling (K channels) pick the same class as the probabilities computed
    from the upsampled, normalised maps (D channels): bilinear upsampling is linear."""
    rng = np.random.default_rng(seed)
    maps = torch.from_numpy(rng.normal(size=(3, 16, 5, 7)).astype(np.float32))
    size = (int(rng.integers(5, 40)), int(rng.integers(7, 40)))
    cluster = ClusterReadout(rng.normal(size=(6, 16)), temperature=float(rng.uniform(0.5, 5)))
    torch.manual_seed(seed)
    linear = LinearReadout(LinearProbe(16, 4).eval())
    with torch.no_grad():
        for readout in (cluster, linear):
            probs = readout(maps, size)
            assert probs.shape == (3, readout.num_outputs, *size)
            assert torch.equal(readout.labels(maps, size), probs.argmax(1))
