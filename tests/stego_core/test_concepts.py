"""The concept clusterbook (modularity ascent) and the concept-wise contrastive term of the head's loss."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from stego_core import stages
from stego_core.concepts import affinity, assign_concepts, fit_clusterbook, modularity
from stego_core.config import ExperimentConfig
from stego_core.losses import ConceptContrastiveLoss, ContrastiveCorrelationLoss
from stego_core.sampling import PairSampler
from stego_core.training import train_head
from tasks.views import config_from_view, stage_view
from tests_helpers import synthetic_config, synthetic_folder


def direct_modularity(a: np.ndarray, p: np.ndarray) -> float:
    """Newman's modularity, summed pair by pair from its definition (soft: sum_k P_ik P_jk for delta)."""
    two_m = a.sum()
    d = a.sum(axis=1)
    total = 0.0
    for i in range(len(a)):
        for j in range(len(a)):
            total += (a[i, j] - d[i] * d[j] / two_m) * float(p[i] @ p[j])
    return total / two_m


def nmi(x: np.ndarray, y: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean of the entropies)."""
    joint = np.zeros((x.max() + 1, y.max() + 1))
    np.add.at(joint, (x, y), 1)
    joint /= joint.sum()
    px, py = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(px, py)[nz])).sum())
    h = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())  # noqa: E731
    return 2 * mi / (h(px) + h(py))


def blobs(n_per=120, k=5, c=24, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per)
    x = rng.normal(size=(k, c))[labels] + noise * rng.normal(size=(len(labels), c))
    return x.astype(np.float32), labels


@pytest.mark.parametrize("hard", [False, True])
def test_modularity_matches_the_pairwise_definition(hard):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    a = affinity(torch.from_numpy(x))
    assert torch.allclose(a, a.T) and bool((a >= 0).all())
    p = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 9)] if hard else rng.dirichlet(np.ones(3), 9).astype(np.float32)
    got = float(modularity(a, torch.from_numpy(p)))
    assert got == pytest.approx(direct_modularity(a.numpy().astype(np.float64), p.astype(np.float64)), abs=1e-5)


def test_modularity_of_two_disconnected_cliques():
    a = np.kron(np.eye(2), np.ones((3, 3))).astype(np.float32)  # two triangles with self loops
    split = np.repeat(np.eye(2, dtype=np.float32), 3, axis=0)
    assert float(modularity(torch.from_numpy(a), torch.from_numpy(split))) == pytest.approx(0.5)
    assert float(modularity(torch.from_numpy(a), torch.ones(6, 1))) == pytest.approx(0.0, abs=1e-6)


def test_clusterbook_recovers_planted_clusters_and_leaves_extra_concepts_unused():
    x, labels = blobs()
    book, info = fit_clusterbook(x, num_concepts=12, steps=80, batch=256, seed=0)
    ids = assign_concepts(torch.from_numpy(x), torch.from_numpy(book)).numpy()
    assert nmi(labels, ids) > 0.9
    assert info["modularity"] > info["modularity_init"]
    assert info["used_concepts"] <= 8
    assert book.shape == (12, 24) and np.allclose(np.linalg.norm(book, axis=1), 1, atol=1e-5)


def test_clusterbook_is_seeded():
    x, _ = blobs(n_per=40)
    a, _ = fit_clusterbook(x, num_concepts=6, steps=10, batch=64, seed=0)
    b, _ = fit_clusterbook(x, num_concepts=6, steps=10, batch=64, seed=0)
    c, _ = fit_clusterbook(x, num_concepts=6, steps=10, batch=64, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_clusterbook_validation():
    x, _ = blobs(n_per=2)
    with pytest.raises(ValueError, match="num_concepts=20 must be in"):
        fit_clusterbook(x, num_concepts=20)
    with pytest.raises(ValueError, match="temperature"):
        fit_clusterbook(x, num_concepts=3, temperature=0)
    with pytest.raises(ValueError, match="concept_temperature"):
        ConceptContrastiveLoss(torch.ones(3, 2), temperature=0)
    with pytest.raises(ValueError, match="concept_weight"):
        ContrastiveCorrelationLoss(shifts=dict(self=0, knn=0, rand=0), weights=dict(self=1, knn=1, rand=1),
                                   concept_weight=1.0)
    with pytest.raises(ValidationError, match="num_concepts"):
        ExperimentConfig.model_validate({"concepts": {"num_concepts": 500, "tokens": 200}})


def test_concept_loss_is_low_when_codes_follow_the_concepts():
    book = torch.eye(2, 4)
    feats = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1.0, 0, 0], [0.1, 0.9, 0, 0]])
    loss = ConceptContrastiveLoss(book, temperature=0.1)
    aligned = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    crossed = aligned[[0, 2, 1, 3]]
    assert float(loss(feats, aligned, aligned)) < float(loss(feats, crossed, crossed))
    assert float(loss(feats, aligned, aligned)) == pytest.approx(np.log(2), abs=1e-3)  # 2 equal positives each


def two_region_features(n=16, c=16, s=6, seed=0):
    """Images whose left half has feature A and right half feature B (plus noise); KNN = the next images."""
    rng = np.random.default_rng(seed)
    f = np.repeat(rng.normal(size=(2, c)), s // 2, axis=0).T[None, :, None, :].repeat(n, 0).repeat(s, 2)
    f = f + rng.normal(scale=0.3, size=f.shape)
    knn = np.stack([np.roll(np.arange(n), -i) for i in range(5)], axis=1)
    return f.astype(np.float16), knn


def correlation_loss(book=None, weight=0.0):
    return ContrastiveCorrelationLoss(
        shifts=dict(self=0.3, knn=0.3, rand=0.6), weights=dict(self=0.67, knn=0.25, rand=0.63), feature_samples=5,
        neg_samples=2, concept=None if book is None else ConceptContrastiveLoss(torch.from_numpy(book)),
        concept_weight=weight)


def test_training_with_concepts_is_seeded_and_changes_the_head():
    f, knn = two_region_features()
    tokens = f.astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, f.shape[1])
    book, _ = fit_clusterbook(tokens, num_concepts=4, steps=20, batch=256, seed=0)

    def run(loss, ema=0.0):
        return train_head(PairSampler(f, knn, batch_size=8, num_neighbors=3, seed=0), loss, in_dim=16, dim=4, steps=8, seed=0,
                          log_every=4, progress=False, ema_decay=ema)

    off, on, again = run(correlation_loss()), run(correlation_loss(book, 1.0)), run(correlation_loss(book, 1.0))
    zero = run(correlation_loss(book, 0.0))
    state = lambda r: r.head.state_dict()  # noqa: E731
    assert all(torch.equal(state(on)[k], state(again)[k]) for k in state(on))
    assert any(not torch.equal(state(on)[k], state(off)[k]) for k in state(on))
    assert all(torch.equal(state(zero)[k], state(off)[k]) for k in state(off))  # weight 0: the loss as before
    assert "loss_concept" in on.history[0] and "loss_concept" not in off.history[0]
    teacher = run(correlation_loss(book, 1.0), ema=0.75)  # targets from the EMA teacher after 4 steps
    assert np.isfinite(teacher.history[-1]["loss_concept"])


def test_head_key_ignores_the_concept_fields_while_the_term_is_off():
    base = ExperimentConfig()
    other = ExperimentConfig.model_validate({"concepts": {"num_concepts": 64}, "loss": {"concept_temperature": 0.2}})
    assert stage_view("train_head", base) == stage_view("train_head", other)
    view = stage_view("train_head", base)
    assert "concepts" not in view and "w_concept" not in view["loss"]
    on = ExperimentConfig.model_validate({"loss": {"w_concept": 1.0}})
    on64 = ExperimentConfig.model_validate({"loss": {"w_concept": 1.0}, "concepts": {"num_concepts": 64}})
    assert stage_view("train_head", on) != stage_view("train_head", on64)
    assert config_from_view(stage_view("train_head", on64))[0].concepts.num_concepts == 64


@pytest.mark.slow
def test_train_stage_writes_the_clusterbook(tmp_path):
    synthetic_folder(tmp_path / "data", "train", 4, 0)
    synthetic_folder(tmp_path / "data", "val", 1, 1)
    cfg = synthetic_config(tmp_path / "data")
    cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"w_concept": 1.0}),
                                 "concepts": cfg.concepts.model_copy(update={"num_concepts": 8, "tokens": 200, "steps": 5})})
    crop, embed, knn, head = (tmp_path / name for name in ("crop", "embed", "knn", "head"))
    for path in (crop, embed, knn, head):
        path.mkdir()
    stages.crop_stage(cfg, crop)
    stages.embed_stage(cfg, "train", embed, crop)
    stages.knn_stage(cfg, embed, knn)
    summary = stages.train_stage(cfg, embed, knn, head)
    assert summary["concepts"]["num_concepts"] == 8 and 1 <= summary["concepts"]["used_concepts"] <= 8
    book = np.load(head / stages.CONCEPTS_FILE)
    assert book.shape[0] == 8 and json.loads((head / "concepts.json").read_text())["tokens"] == 200
    assert "loss_concept" in json.loads((head / "history.json").read_text())[0]
    # More concepts than training tokens (the default 256 on a tiny dataset): one concept per token, no error.
    feats = stages.open_embedding(embed).features
    tokens = int(np.prod(feats.shape)) // feats.shape[1]
    many = cfg.model_copy(update={"concepts": cfg.concepts.model_copy(update={"num_concepts": tokens + 5, "tokens": tokens + 5})})
    (tmp_path / "many").mkdir()
    book, info = stages.fit_concepts(many, feats, tmp_path / "many", torch.device("cpu"))
    assert book.shape[0] == tokens and info["num_concepts"] == tokens
