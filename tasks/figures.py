"""Figures of a pipeline run, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

Every function takes plain arrays / dicts and returns a :class:`matplotlib.figure.Figure`; the
tracking layer (:mod:`tasks.tracking`) saves them as PNG artifacts with :func:`save_png`.

* :func:`overlay_grid`: one row per validation image: the image, the ground truth and each
  method's prediction, coloured with the dataset's class colours blended over the image.
* :func:`confusion_figure`: the ``(C, C)`` confusion matrix after Hungarian matching,
  row-normalised (each true class sums to 1, i.e. the diagonal is the per-class recall).
* :func:`iou_figure`: per-class IoU bars, one group per class and one bar per method.
* :func:`loss_figure`: the head's loss curves (total and self / KNN / random terms).
* :func:`comparison_figure`: one metric across several runs (``stego compare --plot``).
* :func:`dimension_figure`: mIoU and accuracy against the code dimension (``stego sweep --dims``).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stego_core.colours import blend, class_colours, class_ids_from_clusters, colorize

logger = logging.getLogger(__name__)

def overlay_grid(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], predictions: Mapping[str, Sequence[np.ndarray]],
                 colours: np.ndarray, class_names: Sequence[str], ignore_index: int = 255) -> Figure:
    """Rows = images; columns = image, ground truth, then one per method (class ids, already matched).

    Raises:
        ValueError: no images, or a label / prediction list of another length than ``images``.
    """
    n = len(images)
    if n == 0:
        raise ValueError("overlay_grid: no images; pass at least one (image, label) pair")
    for name, seq in {"labels": labels, **predictions}.items():
        if len(seq) != n:
            raise ValueError(f"overlay_grid: {len(seq)} {name} for {n} images; pass one per image")
    columns = [("image", None), ("ground truth", labels), *predictions.items()]
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * n + 0.6), dpi=80, layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)
    for r, image in enumerate(images):
        for c, (title, maps) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(image if maps is None else blend(image, colorize(maps[r], colours, ignore_index)))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    handles = [_patch(colour, name) for colour, name in zip(np.asarray(colours) / 255.0, class_names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=7)
    return fig


def _patch(colour, label):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, label=label)


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """``confusion / confusion.sum(1)``; rows with no pixels stay zero."""
    m = np.asarray(confusion, dtype=np.float64)
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Heatmap of the row-normalised ``(C, C)`` matrix (rows = true class, columns = predicted class).

    Raises:
        ValueError: the matrix is not square with one row per class name.
    """
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(f"confusion_figure: need a ({len(class_names)}, {len(class_names)}) matrix, got {m.shape}")
    frac = row_normalised(m)
    size = 2.5 + 0.45 * len(class_names)
    fig = Figure(figsize=(size, size), dpi=80, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted (after matching)")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if len(class_names) <= 30:
        for (i, j), v in np.ndenumerate(frac):
            if v >= 0.005:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6, color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def iou_figure(per_class_iou: Mapping[str, Mapping[str, float | None]], class_names: Sequence[str]) -> Figure:
    """Grouped bars: per-class IoU (x = class, one bar per method); absent classes (None) are left empty."""
    methods = list(per_class_iou)
    fig = Figure(figsize=(max(6.0, 0.6 * len(class_names) * max(1, len(methods)) / 2), 4), dpi=80, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(class_names))
    for i, method in enumerate(methods):
        values = [per_class_iou[method].get(name) for name in class_names]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, [np.nan if v is None else v for v in values], width, label=method)
    ax.set_xticks(x, class_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.legend(fontsize=7, ncol=min(3, max(1, len(methods))))
    return fig


def loss_figure(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss curves from ``history.json`` rows ``{"step", "loss", "loss_self", ...}``: one line per term.

    Raises:
        ValueError: empty history or a row without ``step``.
    """
    if not history or any("step" not in row for row in history):
        raise ValueError("loss_figure: history must be a non-empty list of rows holding 'step'")
    steps = [row["step"] for row in history]
    terms = [k for k in history[0] if k != "step"]
    fig = Figure(figsize=(6, 3.5), dpi=80, layout="constrained")
    ax = fig.subplots()
    for term in terms:
        ax.plot(steps, [row.get(term, np.nan) for row in history], label=term, lw=2 if term == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def comparison_figure(labels: Sequence[str], values: Mapping[str, Sequence[float]]) -> Figure:
    """Grouped bars: x = run label, one bar per metric column (``values[metric][i]`` for run ``i``)."""
    if not labels:
        raise ValueError("comparison_figure: no runs to plot; widen the filter or pick another experiment")
    fig = Figure(figsize=(max(6.0, 1.2 * len(labels) * max(1, len(values)) / 2), 4), dpi=80, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(values))
    x = np.arange(len(labels))
    for i, (metric, vals) in enumerate(values.items()):
        ax.bar(x + (i - (len(values) - 1) / 2) * width, np.asarray(vals, dtype=float), width, label=metric)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


def class_share_figure(class_names: Sequence[str], shares: Sequence[float], colours: np.ndarray, title: str) -> Figure:
    """Horizontal bars: each class's share of the labelled pixels, in its own colour, largest on top."""
    order = np.argsort(np.asarray(shares, dtype=float))
    fig = Figure(figsize=(6, max(2.5, 0.25 * len(class_names) + 1)), dpi=80, layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), 100 * np.asarray(shares, dtype=float)[order], color=np.asarray(colours)[order] / 255.0,
            edgecolor="black", linewidth=0.3)
    ax.set_yticks(np.arange(len(order)), [class_names[i] for i in order], fontsize=8)
    ax.set_xlabel("share of labelled pixels (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def dimension_figure(rows: Sequence[Mapping], panels: Mapping[str, Sequence[str]]) -> Figure:
    """Mean mIoU and accuracy against the code dimension, one line per method with the seeds' standard deviation
    as error bars: rows = metric (mIoU, accuracy), columns = ``panels`` (e.g. cluster / linear methods).
    ``rows``: ``{"dim", "method", "mIoU_mean", "mIoU_std", "accuracy_mean", "accuracy_std"}`` (fractions).

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("dimension_figure: no finished children to plot")
    fig = Figure(figsize=(5.0 * len(panels), 7.0), dpi=80, layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    dims = sorted({r["dim"] for r in rows})
    for c, (panel, methods) in enumerate(panels.items()):
        for r, metric in enumerate(("mIoU", "accuracy")):
            ax = axes[r, c]
            for method in methods:
                points = sorted((row["dim"], row[f"{metric}_mean"], row[f"{metric}_std"]) for row in rows
                                if row["method"] == method)
                if points:
                    x, mean, std = (np.asarray(v, dtype=float) for v in zip(*points))
                    ax.errorbar(x, 100 * mean, yerr=100 * std, label=method, marker="o", capsize=3,
                                ls="--" if method.startswith("raw") else "-")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(dims, [str(d) for d in dims])
            ax.set_xlabel("code dimension (train.dim)")
            ax.set_ylabel(f"{metric} (%)")
            ax.set_title(f"{panel}: {metric}", fontsize=9)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` with the Agg canvas to ``path`` (PNG) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def run_figures(metrics: Mapping[str, Mapping], history: Sequence[Mapping[str, float]], *, eval_embed_dir: Path,
                predict_dirs: Mapping[str, Path], dataset: str, class_names: Sequence[str],
                num_images: int = 4) -> dict[str, Figure]:
    """Every figure of a finished run, by artifact name: ``overlays`` (the first ``num_images``
    validation images, in the split's fixed order), ``confusion_<method>``, ``per_class_iou`` and
    ``loss_curves``. Predictions are read from the predict artifacts (``predictions.npy``)."""
    from stego_core.features import open_embedding
    from stego_core.stages import eval_images

    data = open_embedding(eval_embed_dir)
    rows = list(range(min(num_images, len(data.labels))))
    size = int(data.labels.shape[-1])
    images = eval_images(data.index, rows, size)
    labels = [np.asarray(data.labels[i]) for i in rows]
    preds = {}
    for method, folder in predict_dirs.items():
        raw = np.load(Path(folder) / "predictions.npy", mmap_mode="r")
        preds[method] = [class_ids_from_clusters(raw[i], metrics[method].get("assignment")) for i in rows]
    colours = class_colours(dataset, len(class_names))
    figures = {"overlays": overlay_grid(images, labels, preds, colours, class_names)}
    for method, m in metrics.items():
        figures[f"confusion_{method}"] = confusion_figure(np.asarray(m["confusion"]), class_names,
                                                          f"{method}: acc {100 * m['accuracy']:.1f}%, mIoU {100 * m['mIoU']:.1f}%")
    figures["per_class_iou"] = iou_figure({k: m["per_class_iou"] for k, m in metrics.items()}, class_names)
    if history:
        figures["loss_curves"] = loss_figure(history)
    return figures
