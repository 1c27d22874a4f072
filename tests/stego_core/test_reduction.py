"""PCA and random-projection baselines: PCA against an independent numpy SVD of the same token sample,
the random projection reproducible from its seed, and both read through the same code path as the head."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stego_core import stages
from stego_core.access import sample_tokens
from stego_core.features import open_embedding
from stego_core.reduction import fit_pca, load_projection, random_projection
from stego_core.training import head_code
from tests_helpers import SYNTHETIC_CLASSES as CLASSES
from tests_helpers import synthetic_config, synthetic_folder


def correlated_tokens(m=3000, c=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(c, c)) * np.linspace(3.0, 0.1, c)[:, None]  # distinct variances
    return (rng.normal(size=(m, c)) @ mixing + rng.normal(size=c) * 5).astype(np.float32)


def svd_components(tokens: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The independent computation: numpy SVD of the centred sample (float64)."""
    x = tokens.astype(np.float64)
    _, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return vt[:dim], s[:dim] ** 2 / (len(x) - 1)


def same_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    signs = np.sign((a * b).sum(axis=1, keepdims=True))
    return np.allclose(a, signs * b, atol=atol)


@pytest.mark.parametrize("block_rows", [None, 1024])  # the covariance in one block, or in three
def test_pca_components_are_the_svd_directions_of_the_sample(block_rows, monkeypatch):
    if block_rows:
        monkeypatch.setattr("stego_core.reduction.COV_BLOCK_BYTES", 8 * 12 * block_rows)
    tokens = correlated_tokens()
    proj, summary = fit_pca(tokens, 5)
    vt, variance = svd_components(tokens, 5)
    assert same_up_to_sign(proj.weight.numpy(), vt, atol=1e-5)
    assert np.allclose(summary["explained_variance"], variance, rtol=1e-6)
    assert np.allclose(proj.mean.numpy(), tokens.mean(axis=0), atol=1e-4)
    # applied to maps it is (x - mean) @ V^T, token by token
    maps = torch.from_numpy(tokens[:64].reshape(4, 4, 4, 12).transpose(0, 3, 1, 2).copy())
    code = proj(maps).numpy().transpose(0, 2, 3, 1).reshape(-1, 5)
    expected = (tokens[:64].astype(np.float64) - tokens.mean(axis=0, dtype=np.float64)) @ proj.weight.numpy().T.astype(np.float64)
    assert np.allclose(code, expected, atol=1e-3)


def test_whitened_pca_gives_unit_variance_components():
    tokens = correlated_tokens()
    proj, _ = fit_pca(tokens, 4, whiten=True)
    maps = torch.from_numpy(tokens.reshape(-1, 10, 10, 12).transpose(0, 3, 1, 2).copy())
    code = proj(maps).numpy().transpose(0, 2, 3, 1).reshape(-1, 4).astype(np.float64)
    assert np.allclose(code.var(axis=0, ddof=1), 1.0, rtol=1e-3)
    assert np.allclose(code.mean(axis=0), 0.0, atol=1e-3)
    unwhitened, _ = fit_pca(tokens, 4)
    assert np.allclose(proj.weight.numpy(), unwhitened.weight.numpy())


def test_pca_refuses_a_dimension_above_the_channels():
    with pytest.raises(ValueError, match=r"train.dim=13 needs 1 <= dim <= the features' 12 channels"):
        fit_pca(correlated_tokens(), 13)


def test_random_projection_is_reproducible_from_the_seed_and_differs_across_seeds():
    a, b, other = (random_projection(384, 70, seed=s).weight.numpy() for s in (3, 3, 4))
    assert np.array_equal(a, b)
    assert not np.allclose(a, other)
    assert a.shape == (70, 384)
    assert abs(a.mean()) < 0.01 and a.std() == pytest.approx(1 / np.sqrt(70), rel=0.02)  # N(0, 1/D)
    assert np.array_equal(random_projection(384, 70, seed=3).mean.numpy(), np.zeros(384))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reduce")
    synthetic_folder(root, "train", 4, 0)
    synthetic_folder(root, "val", 2, 1)
    cfg = synthetic_config(root)
    crop, embed = root / "crop", root / "embed"
    crop.mkdir()
    embed.mkdir()
    stages.crop_stage(cfg, crop)
    stages.embed_stage(cfg, "train", embed, crop)
    return root, embed


def test_the_reduce_stage_fits_pca_on_the_seeded_token_sample(embedded, tmp_path):
    root, embed = embedded
    cfg = synthetic_config(root).model_copy(update={"seed": 5})
    cfg = cfg.model_copy(update={"reduce": cfg.reduce.model_copy(update={"max_tokens": 200})})
    out = tmp_path / "pca"
    out.mkdir()
    summary = stages.reduce_stage(cfg, embed, out, "pca", 6)
    assert summary["in_dim"] == 384 and summary["dim"] == 6 and 0 < summary["explained_variance_ratio"] < 1
    features = open_embedding(embed).features
    sample = sample_tokens(features, max_tokens=200, seed=5)  # the same sample (of 320 tokens), drawn independently
    assert sample.shape == (200, 384)
    vt, _ = svd_components(sample, 6)
    proj = load_projection(out)
    assert same_up_to_sign(proj.weight.numpy(), vt, atol=1e-4)
    assert json.loads((out / "projection.json").read_text())["method"] == "pca"
    # the readouts read it as they read the head's code: a table computed batch by batch
    code = head_code(stages.load_code_map(out), features)
    assert code.shape == (len(features), 6, *features.shape[2:])
    first = np.asarray(features[:2], dtype=np.float32)
    direct = np.einsum("bchw,dc->bdhw", first - proj.mean.numpy()[None, :, None, None], proj.weight.numpy())
    assert np.allclose(code[:2], direct, atol=1e-4)


def test_readouts_and_predictions_run_on_a_projection(embedded, tmp_path):
    """The same cluster, linear and predict stages as the head's, given the reduce artifact's folder."""
    root, embed = embedded
    cfg = synthetic_config(root)
    reduce_dir, cluster_dir, linear_dir = (tmp_path / n for n in ("reduce", "cluster", "linear"))
    for d in (reduce_dir, cluster_dir, linear_dir):
        d.mkdir()
    stages.reduce_stage(cfg, embed, reduce_dir, "randproj", 6)
    stages.cluster_stage(cfg, embed, reduce_dir, cluster_dir, CLASSES, "kmeans")
    assert np.load(cluster_dir / "centroids.npy").shape == (CLASSES, 6)
    stages.linear_stage(cfg, embed, reduce_dir, linear_dir, CLASSES)
    assert json.loads((linear_dir / "linear.json").read_text()) == {"dim": 6, "num_classes": CLASSES}
    eval_embed, pred = tmp_path / "eval", tmp_path / "pred"
    eval_embed.mkdir()
    pred.mkdir()
    stages.embed_stage(cfg, "eval", eval_embed)
    stages.predict_stage(cfg, eval_embed, reduce_dir, linear_dir, pred)
    preds = np.load(pred / "predictions.npy")
    assert preds.shape == (2, 32, 32) and preds.max() < CLASSES
