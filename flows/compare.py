"""``stego compare``: the tracked runs side by side, with only the parameters that differ.

Reads runs through ``MlflowClient.search_runs`` (every experiment of the store, or one), builds a
pandas table ``run | experiment | name | status | started | <params that differ> | <metrics>``,
sorts it by a metric (best first) and optionally writes it as CSV and a bar chart (PNG).

Metrics shown: each method's ``.accuracy`` and ``.mIoU`` (``all_metrics=True``: every metric,
per-class IoU, usage and the last loss values included). A parameter is shown when its value
(a missing value counts as one) is not the same in every listed run.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

INFO_COLUMNS = ["run_id", "experiment", "run_name", "status", "start_time"]
SUMMARY_SUFFIXES = (".accuracy", ".mIoU")


def fetch_runs(client: Any, *, experiment: str | None = None, filter_string: str = "",
               max_runs: int = 1000) -> tuple[list, dict[str, str]]:
    """Runs of ``experiment`` (default: every experiment) matching the MLflow ``filter_string``,
    newest first, and the experiment names by id. Dotted names work as they are
    (``params.train.lr = '0.001'``, ``metrics.stego_cluster.mIoU > 0.2``); names holding ``/``
    need back-ticks (``metrics.`usage/train_head/wall_s` < 60``).

    Raises:
        ValueError: no experiment of that name (the message lists the ones there are); a filter
            MLflow cannot parse (the message quotes it).
    """
    from mlflow.exceptions import MlflowException

    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment is not None:
        ids = [i for i, name in experiments.items() if name == experiment]
        if not ids:
            raise ValueError(f"no MLflow experiment named {experiment!r}; experiments in this store: "
                             f"{sorted(experiments.values())} (pass one with --experiment)")
    else:
        ids = list(experiments)
    runs, token = [], None
    while ids and len(runs) < max_runs:
        try:
            page = client.search_runs(ids, filter_string=filter_string or "", max_results=min(1000, max_runs - len(runs)),
                                      order_by=["attributes.start_time DESC"], page_token=token)
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise ValueError(f"--filter {filter_string!r} is not a valid MLflow filter: {exc.message}; write clauses "
                             "such as \"params.train.lr = '0.001'\" or \"metrics.stego_cluster.mIoU > 0.2\" joined by AND "
                             "(back-ticks around names holding '/')") from None
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs, experiments


def runs_frame(runs: list, experiment_names: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run: the info columns, ``params.<name>`` and ``metrics.<name>`` (latest value)."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run_id": run.info.run_id,
                               "experiment": (experiment_names or {}).get(run.info.experiment_id, run.info.experiment_id),
                               "run_name": run.info.run_name, "status": run.info.status,
                               "start_time": pd.to_datetime(run.info.start_time, unit="ms").floor("s")}
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=INFO_COLUMNS if not rows else None)


def compare_table(frame: pd.DataFrame, *, sort: str | None = None, ascending: bool = False,
                  all_metrics: bool = False) -> pd.DataFrame:
    """Keep the info columns, the params whose values differ between rows and the metrics; strip the
    ``params.`` / ``metrics.`` prefixes; sort by ``sort`` (a metric or param name; default the first
    ``*.mIoU`` column), best (largest) first unless ``ascending``.

    Raises:
        ValueError: ``sort`` names no column of the table (the message lists them).
    """
    params = [c for c in frame.columns if c.startswith("params.")]
    differing = [c for c in params if frame[c].astype(str).nunique(dropna=False) > 1]
    metrics = sorted(c for c in frame.columns if c.startswith("metrics.")
                     and (all_metrics or c.endswith(SUMMARY_SUFFIXES)))
    table = frame[[c for c in INFO_COLUMNS if c in frame.columns] + sorted(differing) + metrics].copy()
    table.columns = [c.split(".", 1)[1] if c.startswith(("params.", "metrics.")) else c for c in table.columns]
    if sort is None:
        sort = next((c for c in table.columns if c.endswith(".mIoU")), None)
        if sort is None:
            return table.reset_index(drop=True)
    if sort not in table.columns:
        raise ValueError(f"--sort {sort!r} is not a column; choose one of {[c for c in table.columns if c not in INFO_COLUMNS]}")
    return table.sort_values(sort, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def plot_table(table: pd.DataFrame, path: Path, metric_suffix: str = ".mIoU") -> Path:
    """Bar chart of every ``*<metric_suffix>`` column per run (x = run name or short id) as PNG."""
    from tasks.figures import comparison_figure, save_png

    columns = [c for c in table.columns if c.endswith(metric_suffix)]
    labels = [str(name or rid[:8]) for name, rid in zip(table["run_name"], table["run_id"])]
    return save_png(comparison_figure(labels, {c: table[c].tolist() for c in columns}), path)


def compare_runs(*, tracking_uri: str, experiment: str | None = None, filter_string: str = "",
                 sort: str | None = None, ascending: bool = False, all_metrics: bool = False,
                 csv: Path | None = None, plot: Path | None = None) -> pd.DataFrame:
    """Fetch, tabulate, sort; write ``csv`` / ``plot`` when given; return the table."""
    from tasks.tracking import open_client

    runs, names = fetch_runs(open_client(tracking_uri), experiment=experiment, filter_string=filter_string)
    table = compare_table(runs_frame(runs, names), sort=sort, ascending=ascending, all_metrics=all_metrics)
    if csv is not None:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
    if plot is not None and len(table):
        plot_table(table, Path(plot))
    return table
