"""Segmentation metrics: a dataset-wide confusion matrix, Hungarian matching and scores.

STEGO (Hamilton et al., ICLR 2022) scores unsupervised clusters by accumulating ONE confusion
matrix ``M`` of shape ``(K, C)`` (``K`` predicted cluster ids, ``C`` ground-truth classes) over the
whole evaluation set, matching clusters to classes with the Hungarian algorithm (maximising the
number of matched pixels), and reporting pixel accuracy and mIoU.

With ``K > C`` some clusters stay unmatched. The reference implementation silently dropped their
pixels; here they count as wrong: they are false negatives of their true class and stay in the
accuracy denominator.

For class ``c`` after matching, ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; mIoU is the mean over the
classes present in the ground truth (absent classes report ``None``).

Example:
    >>> cm = ConfusionMatrix(num_predictions=2, num_classes=2)
    >>> cm.update(np.array([[1, 0]]), np.array([[0, 1]]))
    >>> scores_from_confusion(cm.matrix, matched=True)["accuracy"]
    1.0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from stego_core.data.io import check_label_ids, read_id_map

logger = logging.getLogger(__name__)

__all__ = ["ConfusionMatrix", "hungarian_match", "scores_from_confusion", "evaluate_folders"]


def _to_numpy(array: Any, name: str) -> np.ndarray:
    """Return ``array`` (numpy or torch) as a numpy integer array; reject float/bool inputs."""
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"ConfusionMatrix.update: `{name}` must hold integer ids, got dtype {array.dtype}; "
            f"take the argmax over classes (and cast to int64) before calling update()."
        )
    return array


class ConfusionMatrix:
    """Accumulates an int64 confusion matrix ``(num_predictions, num_classes)`` over many batches.

    ``matrix[k, c]`` counts pixels predicted as id ``k`` whose ground truth is class ``c``. Pixels
    whose target equals ``ignore_index`` or is negative (void) are skipped.

    Args:
        num_predictions: number of predicted ids ``K`` (clusters, or classes for a linear probe).
        num_classes: number of ground-truth classes ``C``.
        ignore_index: target value marking void pixels (default 255).

    Raises:
        ValueError: if ``num_predictions`` or ``num_classes`` is not a positive integer.
    """

    def __init__(self, num_predictions: int, num_classes: int, ignore_index: int = 255) -> None:
        for field, value in (("num_predictions", num_predictions), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ConfusionMatrix: `{field}` must be a positive integer, got {value!r}.")
        self.num_predictions = int(num_predictions)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._matrix = np.zeros((self.num_predictions, self.num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add one batch. ``pred`` and ``target``: integer arrays (numpy or torch) of equal shape.

        Raises:
            ValueError: on a shape mismatch, non-integer dtypes, predicted ids outside
                ``[0, num_predictions)`` or target ids outside ``[0, num_classes)`` (void excluded).
                Predictions at void pixels are not checked.
        """
        pred_np = _to_numpy(pred, "pred")
        target_np = _to_numpy(target, "target")
        if pred_np.shape != target_np.shape:
            raise ValueError(
                f"ConfusionMatrix.update: pred shape {tuple(pred_np.shape)} != target shape "
                f"{tuple(target_np.shape)}; resize predictions to the label size (nearest) first."
            )
        pred_flat = pred_np.reshape(-1).astype(np.int64, copy=False)
        target_flat = target_np.reshape(-1).astype(np.int64, copy=False)
        keep = (target_flat != self.ignore_index) & (target_flat >= 0)
        pred_flat, target_flat = pred_flat[keep], target_flat[keep]
        if target_flat.size == 0:
            return
        bad_target = np.unique(target_flat[target_flat >= self.num_classes])
        if bad_target.size:
            raise ValueError(
                f"ConfusionMatrix.update: target ids {bad_target.tolist()[:20]} are outside the valid "
                f"range [0, {self.num_classes}) and are not ignore_index={self.ignore_index}; "
                f"fix num_classes or map these ids to ignore_index."
            )
        bad_pred = np.unique(pred_flat[(pred_flat < 0) | (pred_flat >= self.num_predictions)])
        if bad_pred.size:
            raise ValueError(
                f"ConfusionMatrix.update: predicted ids {bad_pred.tolist()[:20]} are outside the valid "
                f"range [0, {self.num_predictions}); increase num_predictions."
            )
        flat_index = pred_flat * self.num_classes + target_flat
        counts = np.bincount(flat_index, minlength=self.num_predictions * self.num_classes)
        self._matrix += counts.reshape(self.num_predictions, self.num_classes).astype(np.int64)

    def reset(self) -> None:
        """Zero the accumulated counts."""
        self._matrix[:] = 0

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the accumulated counts, ``(num_predictions, num_classes)`` int64."""
        return self._matrix.copy()

    def compute(self, *, matched: bool = True, class_names: list[str] | None = None) -> dict:
        """Scores of the accumulated matrix; see :func:`scores_from_confusion`."""
        return scores_from_confusion(self._matrix, matched=matched, class_names=class_names)


def _check_confusion(confusion: np.ndarray, where: str) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] < 1 or confusion.shape[1] < 1:
        raise ValueError(f"{where}: confusion must be a non-empty 2-D (K, C) array, got shape {confusion.shape}.")
    if not np.all(np.isfinite(confusion)) or np.any(confusion < 0):
        raise ValueError(f"{where}: confusion must hold finite, non-negative counts.")
    return confusion


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """Match clusters to classes maximising the number of matched pixels.

    Args:
        confusion: ``(K, C)`` counts, rows = cluster ids, columns = classes.

    Returns:
        int64 array of length ``K``: the class matched to each cluster, ``-1`` for clusters left
        unmatched (only when ``K > C``). Each class is used at most once.

    Raises:
        ValueError: if ``confusion`` is not a non-empty 2-D array of non-negative counts.
    """
    confusion = _check_confusion(confusion, "hungarian_match")
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    assignment = np.full(confusion.shape[0], -1, dtype=np.int64)
    assignment[rows] = cols
    return assignment


def scores_from_confusion(
    confusion: np.ndarray, *, matched: bool, class_names: list[str] | None = None
) -> dict:
    """Pixel accuracy, mIoU and per-class IoU from a ``(K, C)`` confusion matrix.

    Args:
        confusion: ``(K, C)`` counts, rows = predicted ids, columns = ground-truth classes.
        matched: ``True`` maps clusters to classes with :func:`hungarian_match` (pixels of
            unmatched clusters count as wrong); ``False`` treats rows as classes already
            (linear probe) and needs ``K == C``.
        class_names: optional ``C`` names used as keys of ``per_class_iou`` (default: int ids).

    Returns:
        ``{"accuracy", "mIoU", "per_class_iou", "confusion", "assignment", "num_pixels",
        "unmatched_pixels"}`` where ``confusion`` is the ``(C, C)`` matrix after matching as
        nested lists (rows = true class, columns = predicted class; unmatched pixels are not in
        it, they are counted in ``unmatched_pixels``), ``assignment`` is the cluster -> class list
        (``None`` when ``matched=False``) and ``per_class_iou`` holds ``None`` for classes absent
        from the ground truth.

    Raises:
        ValueError: on a malformed matrix, an empty matrix, ``K != C`` with ``matched=False`` or
            a wrong number of class names.
    """
    confusion = _check_confusion(confusion, "scores_from_confusion").astype(np.int64)
    num_clusters, num_classes = confusion.shape
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"scores_from_confusion: got {len(class_names)} class_names for {num_classes} classes; "
            f"pass one name per ground-truth class."
        )
    num_pixels = int(confusion.sum())
    if num_pixels == 0:
        raise ValueError("scores_from_confusion: the confusion matrix is empty (no labelled pixels were accumulated).")

    if matched:
        assignment = hungarian_match(confusion)
        true_by_pred = np.zeros((num_classes, num_classes), dtype=np.int64)
        for cluster, cls in enumerate(assignment):
            if cls >= 0:
                true_by_pred[:, cls] += confusion[cluster]
        assignment_list: list[int] | None = assignment.tolist()
    else:
        if num_clusters != num_classes:
            raise ValueError(
                f"scores_from_confusion: matched=False needs as many prediction ids as classes, got "
                f"K={num_clusters} and C={num_classes}; use matched=True for cluster ids."
            )
        true_by_pred = confusion.T.copy()
        assignment_list = None

    gt_pixels = confusion.sum(axis=0)  # every labelled pixel of each class, matched or not
    tp = np.diag(true_by_pred)
    fn = gt_pixels - tp  # includes pixels of unmatched clusters
    fp = true_by_pred.sum(axis=0) - tp
    names = list(class_names) if class_names is not None else list(range(num_classes))
    per_class: dict[Any, float | None] = {}
    present_ious = []
    for c, name in enumerate(names):
        if gt_pixels[c] == 0:
            per_class[name] = None
            continue
        iou = float(tp[c] / (tp[c] + fp[c] + fn[c]))
        per_class[name] = iou
        present_ious.append(iou)
    unmatched = num_pixels - int(true_by_pred.sum())
    if unmatched:
        logger.debug("scores_from_confusion: %d pixels in unmatched clusters counted as wrong", unmatched)
    return {
        "accuracy": float(tp.sum() / num_pixels),
        "mIoU": float(np.mean(present_ious)),
        "per_class_iou": per_class,
        "confusion": true_by_pred.tolist(),
        "assignment": assignment_list,
        "num_pixels": num_pixels,
        "unmatched_pixels": unmatched,
    }


def _read_ids(path: Path, role: str) -> np.ndarray:
    """Read a single-channel PNG of integer ids as a 2-D array (errors name the file)."""
    return read_id_map(path, role).astype(np.int64)


def _paired_pngs(pred_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    for role, folder in (("pred_dir", pred_dir), ("label_dir", label_dir)):
        if not folder.is_dir():
            raise ValueError(f"evaluate_folders: {role} {folder} is not a directory.")
    preds = {p.stem: p for p in pred_dir.glob("*.png")}
    labels = {p.stem: p for p in label_dir.glob("*.png")}
    if not preds:
        raise ValueError(f"evaluate_folders: no .png predictions in {pred_dir}.")
    only_pred = sorted(preds.keys() - labels.keys())
    only_label = sorted(labels.keys() - preds.keys())
    if only_pred or only_label:
        raise ValueError(
            "evaluate_folders: predictions and labels do not pair up by file stem; "
            f"predictions without a label ({len(only_pred)}): {only_pred[:20]}; "
            f"labels without a prediction ({len(only_label)}): {only_label[:20]}."
        )
    return [(preds[stem], labels[stem]) for stem in sorted(preds)]


def _load_pair(pred_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    pred, label = _read_ids(pred_path, "prediction"), _read_ids(label_path, "label")
    if pred.shape != label.shape:
        raise ValueError(
            f"evaluate_folders: prediction {pred_path} has size {pred.shape[::-1]} (W, H) but its label "
            f"{label_path} has {label.shape[::-1]}; predictions must be at label resolution."
        )
    return pred, label


def evaluate_folders(
    pred_dir: str | Path,
    label_dir: str | Path,
    *,
    num_classes: int,
    ignore_index: int = 255,
    num_predictions: int | None = None,
    matched: bool = True,
    class_names: list[str] | None = None,
) -> dict:
    """Score a folder of prediction PNGs against a folder of label PNGs (paired by file stem).

    Args:
        pred_dir: folder of single-channel PNGs of predicted ids.
        label_dir: folder of single-channel PNGs of class ids (``ignore_index`` = void).
        num_classes: number of ground-truth classes ``C``.
        ignore_index: void label value.
        num_predictions: number of predicted ids ``K``; default ``max(pred id over labelled
            pixels) + 1`` across all files, at least ``num_classes``.
        matched: Hungarian matching (clusters) or not (linear probe), as in
            :func:`scores_from_confusion`.
        class_names: optional class names for ``per_class_iou``.

    Returns:
        The dict of :func:`scores_from_confusion` plus ``num_images`` and ``num_predictions``.

    Raises:
        ValueError: on unpaired stems, size mismatches, colour PNGs or out-of-range ids.
    """
    pairs = _paired_pngs(Path(pred_dir), Path(label_dir))
    if num_predictions is None:
        max_id = num_classes - 1
        for pred_path, label_path in pairs:
            pred, label = _load_pair(pred_path, label_path)
            valid = (label != ignore_index) & (label >= 0)
            if valid.any():
                max_id = max(max_id, int(pred[valid].max()))
        num_predictions = max_id + 1
    matrix = ConfusionMatrix(num_predictions, num_classes, ignore_index)
    for pred_path, label_path in pairs:
        pred, label = _load_pair(pred_path, label_path)
        check_label_ids(label, num_classes=num_classes, ignore_index=ignore_index, source=label_path)
        try:
            matrix.update(pred, label)
        except ValueError as err:
            raise ValueError(f"evaluate_folders: {pred_path}: {err}") from err
    logger.info("evaluate_folders: %d image pairs, K=%d, C=%d", len(pairs), num_predictions, num_classes)
    scores = matrix.compute(matched=matched, class_names=class_names)
    scores.update(num_images=len(pairs), num_predictions=num_predictions)
    return scores
