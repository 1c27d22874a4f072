"""Tests for stego_core.metrics on hand-computed cases and slow reference loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from stego_core.metrics import ConfusionMatrix, evaluate_folders, hungarian_match, scores_from_confusion

# 2x3 case: class 0 -> TP 1, FP 1, FN 1 (IoU 1/3); class 1 -> TP 3, FP 1, FN 1 (IoU 3/5); acc 4/6.
TARGET_2X3 = np.array([[0, 0, 1], [1, 1, 1]])
PRED_2X3 = np.array([[0, 1, 1], [1, 1, 0]])


def _scores(pred, target, k, c, *, matched, ignore_index=255, class_names=None):
    cm = ConfusionMatrix(k, c, ignore_index)
    cm.update(pred, target)
    return scores_from_confusion(cm.matrix, matched=matched, class_names=class_names)


def test_perfect_prediction_with_permuted_cluster_ids():
    target = np.array([[0, 1, 2], [2, 1, 0], [1, 1, 2]])
    perm = np.array([2, 0, 1])  # class c is predicted as cluster perm[c]
    scores = _scores(perm[target], target, 3, 3, matched=True)
    assert scores["accuracy"] == 1.0
    assert scores["mIoU"] == 1.0
    assert scores["assignment"] == [1, 2, 0]  # cluster k -> class perm^-1(k)
    assert scores["confusion"] == [[2, 0, 0], [0, 4, 0], [0, 0, 3]]
    assert scores["num_pixels"] == 9 and scores["unmatched_pixels"] == 0


def test_hand_computed_2x3_linear_and_matched():
    linear = _scores(PRED_2X3, TARGET_2X3, 2, 2, matched=False, class_names=["a", "b"])
    assert linear["accuracy"] == pytest.approx(4 / 6)
    assert linear["per_class_iou"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(3 / 5)}
    assert linear["mIoU"] == pytest.approx(7 / 15)
    assert linear["confusion"] == [[1, 1], [1, 3]]  # rows true, cols predicted
    assert linear["assignment"] is None
    # Same prediction with swapped cluster ids: matching recovers identical scores.
    matched = _scores(1 - PRED_2X3, TARGET_2X3, 2, 2, matched=True)
    assert matched["assignment"] == [1, 0]
    assert matched["accuracy"] == pytest.approx(4 / 6)
    assert matched["mIoU"] == pytest.approx(7 / 15)


def test_void_pixels_are_ignored():
    target = np.concatenate([TARGET_2X3, [[255, -1, 255]]])
    pred = np.concatenate([PRED_2X3, [[0, 1, 7]]])  # predictions at void pixels are not checked
    scores = _scores(pred, target, 2, 2, matched=False)
    assert scores["num_pixels"] == 6
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["mIoU"] == pytest.approx(7 / 15)
    custom = _scores(np.array([0, 1, 1]), np.array([0, 9, 1]), 2, 2, matched=False, ignore_index=9)
    assert custom["num_pixels"] == 2 and custom["accuracy"] == 1.0


def test_extra_cluster_pixels_count_as_wrong():
    target = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 2, 1, 1, 1, 2])  # cluster 2 takes one pixel of each class
    scores = _scores(pred, target, 3, 2, matched=True)
    assert scores["assignment"] == [0, 1, -1]
    assert scores["unmatched_pixels"] == 2 and scores["num_pixels"] == 8
    assert scores["accuracy"] == pytest.approx(6 / 8)
    assert scores["per_class_iou"] == {0: pytest.approx(3 / 4), 1: pytest.approx(3 / 4)}  # FN = 1 each
    assert scores["confusion"] == [[3, 0], [0, 3]]
    # The reference's defect (dropping unmatched clusters) would report a perfect score.
    dropped = _scores(pred[pred != 2], target[pred != 2], 3, 2, matched=True)
    assert dropped["accuracy"] == 1.0 and dropped["mIoU"] == 1.0
    assert scores["accuracy"] < dropped["accuracy"] and scores["mIoU"] < dropped["mIoU"]


def test_class_absent_from_ground_truth_is_excluded_from_miou():
    scores = _scores(np.array([0, 2, 1, 1]), np.array([0, 0, 1, 1]), 3, 3, matched=False)
    assert scores["per_class_iou"] == {0: pytest.approx(0.5), 1: 1.0, 2: None}
    assert scores["mIoU"] == pytest.approx(0.75)  # not (0.5 + 1 + 0) / 3
    assert scores["accuracy"] == pytest.approx(0.75)


def test_fewer_clusters_than_classes_leaves_classes_unpredicted():
    scores = _scores(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]), 2, 3, matched=True)
    assert scores["assignment"] == [0, 1] or scores["assignment"] == [0, 2]
    assert scores["accuracy"] == pytest.approx(3 / 4)
    assert sorted(scores["per_class_iou"].values()) == pytest.approx([0.0, 0.5, 1.0])


def _slow_linear_scores(pred, target, c):
    """Per-pixel loop straight from the definitions (no matching)."""
    tp, fp, fn, correct, total = [0] * c, [0] * c, [0] * c, 0, 0
    for p, t in zip(pred.ravel(), target.ravel()):
        if t == 255:
            continue
        total += 1
        if p == t:
            tp[t] += 1
            correct += 1
        else:
            fn[t] += 1
            fp[p] += 1
    ious = [tp[i] / (tp[i] + fp[i] + fn[i]) for i in range(c) if tp[i] + fn[i] > 0]
    return correct / total, sum(ious) / len(ious)


def test_linear_scores_match_slow_reference_loop():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 5, size=(17, 13))
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.6, np.minimum(target, 4), rng.integers(0, 5, target.shape))
    scores = _scores(pred, target, 5, 5, matched=False)
    accuracy, miou = _slow_linear_scores(pred, target, 5)
    assert scores["accuracy"] == pytest.approx(accuracy)
    assert scores["mIoU"] == pytest.approx(miou)


@pytest.mark.parametrize("k,c", [(3, 3), (4, 2), (2, 4), (5, 5), (6, 3)])
def test_hungarian_matches_brute_force(k, c):
    rng = np.random.default_rng(k * 10 + c)
    for _ in range(5):
        confusion = rng.integers(0, 50, size=(k, c))
        assignment = hungarian_match(confusion)
        assert assignment.shape == (k,)
        used = assignment[assignment >= 0]
        assert len(set(used.tolist())) == len(used) == min(k, c)
        value = sum(confusion[i, a] for i, a in enumerate(assignment) if a >= 0)
        if k <= c:
            best = max(sum(confusion[i, perm[i]] for i in range(k)) for perm in itertools.permutations(range(c), k))
        else:
            best = max(sum(confusion[perm[j], j] for j in range(c)) for perm in itertools.permutations(range(k), c))
        assert value == best


def test_accumulation_equals_one_update_and_accepts_torch():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(6, 20, 20))
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, 7, size=target.shape)
    whole = ConfusionMatrix(7, 4)
    whole.update(pred, target)
    chunks = ConfusionMatrix(7, 4)
    for i in range(6):
        chunks.update(torch.from_numpy(pred[i]), torch.from_numpy(target[i]).to(torch.uint8))
    assert chunks.matrix.dtype == np.int64
    np.testing.assert_array_equal(chunks.matrix, whole.matrix)
    assert whole.matrix.sum() == np.count_nonzero(target != 255)
    assert whole.compute(matched=True) == scores_from_confusion(whole.matrix, matched=True)
    whole.reset()
    assert whole.matrix.sum() == 0


def test_confusion_matrix_validation():
    with pytest.raises(ValueError, match="num_classes.*positive integer"):
        ConfusionMatrix(3, 0)
    with pytest.raises(ValueError, match="num_predictions.*positive integer"):
        ConfusionMatrix(2.5, 3)
    cm = ConfusionMatrix(3, 2)
    with pytest.raises(ValueError, match=r"pred shape \(2, 3\) != target shape \(3, 2\)"):
        cm.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"predicted ids \[-1, 3\] .* range \[0, 3\)"):
        cm.update(np.array([3, -1, 0]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"target ids \[2, 5\] .* range \[0, 2\)"):
        cm.update(np.array([0, 0, 0]), np.array([2, 5, 1]))
    with pytest.raises(ValueError, match="integer ids, got dtype float"):
        cm.update(np.zeros(3), np.zeros(3, int))
    assert cm.matrix.sum() == 0  # failed updates add nothing


def test_scoring_validation():
    with pytest.raises(ValueError, match="non-empty 2-D"):
        hungarian_match(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="non-negative"):
        hungarian_match(np.array([[1, -2], [0, 1]]))
    with pytest.raises(ValueError, match="empty"):
        scores_from_confusion(np.zeros((2, 2)), matched=True)
    with pytest.raises(ValueError, match="matched=False needs as many .* K=3 and C=2"):
        scores_from_confusion(np.ones((3, 2)), matched=False)
    with pytest.raises(ValueError, match="got 1 class_names for 2 classes"):
        scores_from_confusion(np.ones((2, 2)), matched=True, class_names=["x"])


def _write(folder, name, array):
    """Save a uint8 PNG: 2-D -> mode L (ids), (H, W, 3) -> RGB."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(folder / f"{name}.png")


def test_evaluate_folders_matches_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    cm = ConfusionMatrix(5, 3)
    for name in ("b", "a", "c"):
        label = rng.integers(0, 3, size=(8, 12))
        label[0] = 255
        pred = (label + 1) % 3
        pred[rng.random(pred.shape) < 0.2] = 4  # an extra cluster id beyond num_classes
        pred[0] = 0
        _write(tmp_path / "pred", name, pred)
        _write(tmp_path / "label", name, label)
        cm.update(pred, label)
    scores = evaluate_folders(tmp_path / "pred", tmp_path / "label", num_classes=3, class_names=["x", "y", "z"])
    assert scores["num_predictions"] == 5 and scores["num_images"] == 3
    expected = scores_from_confusion(cm.matrix, matched=True, class_names=["x", "y", "z"])
    assert {k: scores[k] for k in expected} == expected
    assert scores["assignment"][:3] == [2, 0, 1]
    # Default K is at least num_classes even if predictions use fewer ids.
    assert evaluate_folders(tmp_path / "label", tmp_path / "label", num_classes=5)["num_predictions"] == 5
    linear = evaluate_folders(tmp_path / "label", tmp_path / "label", num_classes=3, matched=False)
    assert linear["accuracy"] == 1.0 and linear["mIoU"] == 1.0


def test_evaluate_folders_validation(tmp_path):
    ones = np.ones((4, 6))
    _write(tmp_path / "pred", "x1", ones)
    _write(tmp_path / "pred", "only_pred", ones)
    _write(tmp_path / "label", "x1", ones)
    _write(tmp_path / "label", "only_label", ones)
    with pytest.raises(ValueError, match=r"without a label \(1\): \['only_pred'\].*without a prediction \(1\): \['only_label'\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "label", num_classes=2)
    (tmp_path / "pred" / "only_pred.png").unlink()
    (tmp_path / "label" / "only_label.png").unlink()
    _write(tmp_path / "pred", "x2", np.ones((4, 5)))
    _write(tmp_path / "label", "x2", ones)
    with pytest.raises(ValueError, match=r"prediction .*x2\.png has size \(5, 4\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "label", num_classes=2)
    _write(tmp_path / "pred", "x2", np.full((4, 6), 3))
    with pytest.raises(ValueError, match=r"x2\.png: .*predicted ids \[3\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "label", num_classes=2, num_predictions=2)
    _write(tmp_path / "pred", "x2", np.ones((4, 6, 3)))
    with pytest.raises(ValueError, match=r"prediction .*x2\.png has 3 channels \(mode RGB\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "label", num_classes=2)
    _write(tmp_path / "pred", "x2", ones)
    data = (tmp_path / "pred" / "x2.png").read_bytes()
    (tmp_path / "pred" / "x2.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read prediction .*x2\.png: .*; fix or remove it"):
        evaluate_folders(tmp_path / "pred", tmp_path / "label", num_classes=2)
    with pytest.raises(ValueError, match="is not a directory"):
        evaluate_folders(tmp_path / "missing", tmp_path / "label", num_classes=2)
    with pytest.raises(ValueError, match="no .png predictions"):
        evaluate_folders(tmp_path / "label" / "..", tmp_path / "label", num_classes=2)
