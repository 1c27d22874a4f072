"""Tests for stego_core.crf: dense CRF refinement and its process-pool batch runner."""

from __future__ import annotations

import numpy as np
import pytest

from stego_core.crf import CrfParams, dense_crf, dense_crf_batch


def _two_regions(height=40, width=60, seed=0, noise=0.25):
    """Left half dark (class 0), right half bright (class 1), with a noisy, weakly informative map."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 30, dtype=np.uint8)
    image[:, width // 2 :] = 220
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, width // 2 :] = 1
    p1 = np.clip(np.where(truth == 1, 0.6, 0.4) + rng.normal(0, noise, truth.shape), 0.01, 0.99)
    return image, np.stack([1 - p1, p1]), truth


def test_crf_cleans_noisy_two_region_map():
    image, probs, truth = _two_regions()
    refined = dense_crf(image, probs)
    before = (probs.argmax(0) == truth).mean()
    after = (refined.argmax(0) == truth).mean()
    assert before < 0.75
    assert after > 0.97
    assert after - before > 0.2
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-5)
    assert refined.min() >= 0


def test_uniform_probabilities_on_flat_image_stay_uniform():
    # Symmetric unaries and a Potts model: every label gets the same message, marginals stay 1/C.
    image = np.full((12, 16, 3), 100, dtype=np.uint8)
    probs = np.full((4, 12, 16), 0.25)
    np.testing.assert_allclose(dense_crf(image, probs), 0.25, atol=1e-6)


def test_confident_correct_map_is_kept_and_more_iterations_sharpen():
    image, _, truth = _two_regions()
    probs = np.stack([np.where(truth == 0, 0.9, 0.1), np.where(truth == 1, 0.9, 0.1)])
    one = dense_crf(image, probs, CrfParams(iterations=1))
    ten = dense_crf(image, probs, CrfParams(iterations=10))
    np.testing.assert_array_equal(ten.argmax(0), truth)
    confidence_one = np.take_along_axis(one, truth[None], 0).mean()
    confidence_ten = np.take_along_axis(ten, truth[None], 0).mean()
    assert confidence_ten >= confidence_one > 0.9


def test_non_contiguous_and_read_only_inputs_give_same_result():
    image, probs, _ = _two_regions(seed=2)
    expected = dense_crf(image, probs)
    image_view = np.asfortranarray(image)[:, ::-1][:, ::-1]
    probs_view = probs.astype(np.float32).transpose(0, 2, 1).copy().transpose(0, 2, 1)
    assert not image_view.flags.c_contiguous and not probs_view.flags.c_contiguous
    np.testing.assert_allclose(dense_crf(image_view, probs_view), expected, atol=1e-5)
    # Read-only buffers (np.asarray of a PIL image) are rejected by pydensecrf unless copied.
    readonly_image, readonly_probs = image.copy(), probs.copy()
    readonly_image.flags.writeable = False
    readonly_probs.flags.writeable = False
    np.testing.assert_allclose(dense_crf(readonly_image, readonly_probs), expected)
    # Channel-last probabilities moved to channel-first by a view (a common caller mistake).
    np.testing.assert_allclose(dense_crf(image, np.moveaxis(np.moveaxis(probs, 0, -1), -1, 0)), expected)


def test_batch_in_spawned_pool_equals_inline_and_keeps_order():
    items = [_two_regions(height=20 + 4 * i, width=30, seed=i) for i in range(3)]
    images, probs = [it[0] for it in items], [it[1] for it in items]
    inline = dense_crf_batch(images, probs, processes=1, progress=False)
    pooled = dense_crf_batch(images, probs, processes=2, progress=False)
    assert [r.shape for r in pooled] == [p.shape for p in probs]
    for a, b, single in zip(inline, pooled, (dense_crf(i, p) for i, p in zip(images, probs))):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, single)
    assert dense_crf_batch([], [], progress=False) == []


def test_bad_inputs_raise():
    image, probs, _ = _two_regions(height=8, width=10)
    with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) RGB"):
        dense_crf(image[..., 0], probs)
    with pytest.raises(ValueError, match="image must be uint8 RGB"):
        dense_crf(image.astype(np.float32) / 255, probs)
    with pytest.raises(ValueError, match=r"probs must be a \(C, H, W\)"):
        dense_crf(image, probs[0])
    with pytest.raises(ValueError, match="probs must be floating point"):
        dense_crf(image, (probs > 0.5).astype(np.int64))
    with pytest.raises(ValueError, match=r"spatial size \(8, 9\) != image size \(8, 10\)"):
        dense_crf(image, probs[:, :, :9])
    with pytest.raises(ValueError, match="at least 2 classes"):
        dense_crf(image, np.ones((1, 8, 10)))
    with pytest.raises(ValueError, match="finite and non-negative"):
        dense_crf(image, np.where(probs > 0.9, np.nan, probs))
    with pytest.raises(ValueError, match="sum to 1 over axis 0.*softmax"):
        dense_crf(image, probs * 3)


def test_bad_params_and_batch_arguments_raise():
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        CrfParams(iterations=0)
    with pytest.raises(ValueError, match="bilateral_srgb must be a finite number > 0"):
        CrfParams(bilateral_srgb=0)
    with pytest.raises(ValueError, match="gaussian_compat must be a finite number >= 0"):
        CrfParams(gaussian_compat=-1)
    with pytest.raises(ValueError, match=r"prob_clip must be in \(0, 1\)"):
        CrfParams(prob_clip=0)
    image, probs, _ = _two_regions(height=8, width=10)
    with pytest.raises(ValueError, match="got 2 images but 1 probability maps"):
        dense_crf_batch([image, image], [probs], progress=False)
    with pytest.raises(ValueError, match="processes must be an integer >= 1"):
        dense_crf_batch([image], [probs], processes=0, progress=False)
    with pytest.raises(ValueError, match="item 1: dense_crf: image must be uint8"):
        dense_crf_batch([image, image.astype(float)], [probs, probs], processes=2, progress=False)
