import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stego_core.head import SegmentationHead
from stego_core.predict import cluster_readout, linear_readout, predict
from stego_core.probes import LinearProbe


def test_cluster_prediction_is_nearest_centroid_after_upsampling_and_flip_average():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 6, 4, 4)).astype(np.float16)
    flips = rng.normal(size=(5, 6, 4, 4)).astype(np.float16)
    cents = rng.normal(size=(3, 6)).astype(np.float32)
    out = predict(feats, flips, None, cluster_readout(cents), (8, 8), progress=False)
    avg = (torch.from_numpy(feats.astype(np.float32)) + torch.from_numpy(flips.astype(np.float32))) / 2
    up = F.normalize(F.interpolate(avg, size=(8, 8), mode="bilinear", align_corners=False), dim=1)
    expected = torch.einsum("bdhw,kd->bkhw", up, F.normalize(torch.from_numpy(cents), dim=1)).argmax(1)
    assert out.dtype == np.uint8 and out.shape == (5, 8, 8)
    assert (out == expected.numpy()).all()
    # A tiny memory budget forces batches of one image: same answer.
    assert (predict(feats, flips, None, cluster_readout(cents), (8, 8), max_batch_bytes=1, progress=False) == out).all()


def test_linear_readout_through_a_head_and_crf_hook():
    torch.manual_seed(0)
    head, probe = SegmentationHead(6, 4).eval(), LinearProbe(4, 3).eval()
    feats = np.random.default_rng(1).normal(size=(3, 6, 4, 4)).astype(np.float32)
    seen = []

    def crf(rows, probs):
        seen.append(list(rows))
        assert probs.shape == (len(rows), 3, 8, 8) and np.allclose(probs.sum(1), 1, atol=1e-5)
        return [np.roll(p, 1, axis=0) for p in probs]  # a visible change: class c -> c+1

    with torch.no_grad():
        plain = predict(feats, None, head, linear_readout(probe), (8, 8), progress=False)
        hooked = predict(feats, None, head, linear_readout(probe), (8, 8), crf=crf, batch=2, progress=False)
    assert seen == [[0, 1], [2]]
    assert (hooked == (plain + 1) % 3).all()


def test_too_many_clusters_for_uint8():
    with pytest.raises(ValueError, match="at most 255"):
        predict(np.zeros((1, 2, 2, 2), np.float32), None, None, cluster_readout(np.eye(300, 2)), (2, 2), progress=False)
