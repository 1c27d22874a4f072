"""``dim_sweep``: STEGO as a dimensionality reduction. One child pipeline run per code dimension and seed, each
scoring the head's code, PCA and a random projection at that dimension (``reduce.methods``) with the same
readouts; the sweep's MLflow run gets the table (``dim_sweep.json``, ``dim_sweep.md``) and the plot
(``figures/dim_sweep.png``: mIoU and accuracy against the dimension, cluster and linear methods, one line
per method, the seeds' standard deviation as error bars).

Children are queued on the pipeline deployment (or run here, ``deployment=None``) exactly as in
:mod:`flows.sweeps`; stages that do not depend on the dimension (crops, embeddings, KNN, the raw baselines)
are computed once for all of them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional

import numpy as np
from prefect import flow

from flows.run_form import DEFAULT_PRESET, PresetName, form_config
from flows.sweeps import PIPELINE_DEPLOYMENT, run_sweep
from stego_core.config import ExperimentConfig
from stego_core.presets import ConfigError, apply_overrides

DIMS = [3, 9, 27, 70, 128, 384]
PANELS = {"cluster": ("stego_cluster", "stego_cluster_crf", "pca_kmeans", "randproj_kmeans", "raw_kmeans"),
          "linear": ("stego_linear", "pca_linear", "randproj_linear", "raw_linear")}


def dim_points(dims: Sequence[int], seeds: Sequence[int]) -> list[dict]:
    """``{"train.dim": d, "seed": s}`` for every dimension and seed (each dimension at least 1)."""
    if not dims or not seeds:
        raise ConfigError("the dimension sweep needs at least one dimension (--dims 3,9,27) and one seed")
    for what, values, low in (("--dims: dimensions", dims, 1), ("--seeds: seeds", seeds, 0)):
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < low]
        if bad:
            raise ConfigError(f"{what} are integers >= {low}, got {bad}")
    return [{"train.dim": int(d), "seed": int(s)} for d in dims for s in seeds]


def dimension_table(summary: Mapping) -> list[dict]:
    """One row per (dimension, method) over the completed children: mean and standard deviation across seeds of
    mIoU and accuracy (fractions), and how many seeds."""
    scores: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for child in summary["children"]:
        if child.get("state") != "Completed":
            continue
        dim = int(child["overrides"]["train.dim"])
        for method, m in (child.get("metrics") or {}).items():
            scores.setdefault((dim, method), []).append((m["mIoU"], m["accuracy"]))
    rows = []
    for (dim, method), values in sorted(scores.items()):
        miou, acc = (np.asarray(v, dtype=float) for v in zip(*values))
        rows.append({"dim": dim, "method": method, "seeds": len(values),
                     "mIoU_mean": float(miou.mean()), "mIoU_std": float(miou.std()),
                     "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std())})
    return rows


def markdown_table(rows: Sequence[Mapping]) -> str:
    """Rows = dimensions, columns = methods: ``mIoU / accuracy`` in percent, ``± std`` over seeds."""
    methods = [m for group in PANELS.values() for m in group if any(r["method"] == m for r in rows)]
    by = {(r["dim"], r["method"]): r for r in rows}
    lines = ["| dim | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for dim in sorted({r["dim"] for r in rows}):
        cells = []
        for m in methods:
            r = by.get((dim, m))
            cells.append("-" if r is None else f"{100 * r['mIoU_mean']:.1f} ± {100 * r['mIoU_std']:.1f} / "
                         f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}")
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmIoU / accuracy (%), mean ± std over seeds\n"


def report(tracker, summary: dict) -> None:
    """The table and the plot on the sweep's MLflow run (and the table in the summary)."""
    import json

    from tasks.figures import dimension_figure

    rows = dimension_table(summary)
    summary["table"] = rows
    if rows:
        tracker.log_report({"dim_sweep.json": json.dumps(rows, indent=1), "dim_sweep.md": markdown_table(rows)},
                           {"dim_sweep": dimension_figure(rows, PANELS)})


@flow(name="dim_sweep", log_prints=True)
def dim_sweep(preset: PresetName = DEFAULT_PRESET,  # type: ignore[valid-type]
              dims: list[int] = DIMS,  # noqa: B006 (never mutated)
              seeds: list[int] = [0],  # noqa: B006
              reductions: list[Literal["pca", "randproj"]] = ["pca", "randproj"],  # noqa: B006
              data_root: Optional[str] = None,
              overrides: dict[str, Any] = {},  # noqa: B006
              config: Optional[ExperimentConfig] = None,
              deployment: Optional[str] = PIPELINE_DEPLOYMENT, artifact_root: Optional[str] = None,
              tracking: bool = True, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
              check_inputs: bool = True, timeout_minutes: Optional[float] = None) -> dict:
    """The head trained at each code dimension, scored beside PCA and a random projection to the same dimension.

    Args:
        preset: the shipped preset every child starts from (`stego presets`); each child sets `train.dim` and `seed`.
        dims: code dimensions, one child per dimension and seed (PCA needs each <= the backbone's channels).
        seeds: seeds, one child per dimension and seed (the plot's error bars).
        reductions: the reductions scored beside the head (reduce.methods of every child).
        data_root: the folder holding the datasets, on the workers; empty: $STEGO_DATA_ROOT.
        overrides: dotted config keys -> values applied to the base, as the CLI's --set,
            e.g. {"train.steps": 500}.
        config: advanced: a whole experiment config, the base instead of the preset.
        deployment: the pipeline deployment the children run as; empty to run them in this process.
        artifact_root: the shared artifact cache (path or fsspec URL); default $STEGO_HOME/artifacts.
        tracking: record the sweep and its children in MLflow (the table and plot on the sweep's run).
        tracking_uri: MLflow store; default $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db.
        experiment: MLflow experiment; default the config's name.
        check_inputs: each child checks the config and every image/label before computing.
        timeout_minutes: give up waiting for the children after this long (they keep running).
    """
    base = apply_overrides(form_config(preset, config, data_root=data_root, overrides=overrides),
                           {"reduce.methods": list(reductions)})
    return run_sweep("dim_sweep", base, dim_points(dims, seeds), deployment=deployment or None,
                     artifact_root=artifact_root, tracking=tracking, tracking_uri=tracking_uri, experiment=experiment,
                     check_inputs=check_inputs, timeout_minutes=timeout_minutes, report=report)
