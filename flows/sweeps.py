"""Sweeps: one child ``stego_pipeline`` run per configuration, nested under the sweep's run.

``backbone_sweep`` varies ``embed.backbone``; ``param_sweep`` takes a grid (every combination) and/or
a list of points over any config fields, e.g. the loss shifts and weights, which the spec says are
dataset- and backbone-specific.

With ``deployment`` set (the default), every child is its own flow run of that deployment, queued
on its work pool, so N GPU workers run N children at once; the children are linked to the sweep's
flow run (nested in the Prefect UI) and their MLflow runs are children of the sweep's MLflow run.
With ``deployment=None`` the children run here, one after another, as subflows (a laptop without
a server or workers).

Stages the children share (same data, same backbone) are computed once: the artifact store is
content-addressed, so a child finds what an earlier child or an earlier sweep computed, on any
machine that sees the same ``artifact_root`` (a shared path or an fsspec URL such as s3://...).
"""
from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from prefect import flow

from flows.pipeline import stego_pipeline
from flows.run_form import DEFAULT_PRESET, BackboneName, PresetName, backbone_point, form_config
from stego_core.config import ExperimentConfig
from stego_core.home import stego_home
from stego_core.presets import ConfigError, apply_overrides
from stego_core.validation import check_config
from tasks.run_artifacts import publish_sweep
from tasks.tracking import NullTracker, RunTracker, resolve_tracking_uri

logger = logging.getLogger(__name__)

PIPELINE_DEPLOYMENT = "stego_pipeline/stego-pipeline"
SWEEP_BACKBONES = ["dino_vits8", "dino_vitb8", "mocov2_r50", "resnet50"]
POLL_SECONDS = 5.0


@dataclass
class Child:
    """One member of a sweep: its overrides of the base config, and what became of it."""

    label: str
    overrides: dict[str, Any]
    config: ExperimentConfig
    outcome: dict[str, Any] = field(default_factory=dict)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid ``{"loss.b_self": [0.1, 0.2], "train.lr": [1e-4]}`` (keys in order)."""
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"sweep grid {key!r}: give a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def sweep_children(base: ExperimentConfig, points: Sequence[Mapping[str, Any]]) -> list[Child]:
    """Validate every point against the config model before anything runs (a bad key or value in
    point 7 fails the sweep before point 1 starts); identical points are run once."""
    if not points:
        raise ConfigError("the sweep is empty: give at least one backbone, grid value or point")
    children: dict[str, Child] = {}
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ConfigError(f"sweep point {i} must be a mapping of config field -> value, got {point!r}")
        label = ",".join(f"{k}={v}" for k, v in point.items()) or "base"
        try:
            config = apply_overrides(base, point)
            check_config(config)
        except ValueError as exc:
            raise ConfigError(f"sweep point {i} ({label}): {exc}") from None
        children.setdefault(label, Child(label, dict(point), config))
    return list(children.values())


def run_sweep(kind: str, base: ExperimentConfig, points: Sequence[Mapping[str, Any]], *, deployment: str | None,
              artifact_root: str | None, tracking: bool, tracking_uri: str | None, experiment: str | None,
              check_inputs: bool, timeout_minutes: float | None,
              report: Callable[[RunTracker | NullTracker, dict], None] | None = None) -> dict:
    """Run the children (on workers or here), log the summary to the sweep's MLflow run, return it;
    ``report(tracker, summary)`` adds what a kind of sweep shows on its parent run (a table, a plot).

    Raises ``RuntimeError`` after the summary is logged when any child did not complete.
    """
    children = sweep_children(base, points)
    uri = resolve_tracking_uri(tracking_uri, stego_home()) if tracking else None
    exp = experiment or base.name
    tracker = (RunTracker.start(config=base.model_dump(mode="json"), tracking_uri=uri, experiment=exp, run_name=None,
                                tags={"sweep": kind, "sweep.size": str(len(children)),
                                      "sweep.points": json.dumps([c.overrides for c in children])})
               if tracking else NullTracker())
    shared = {"artifact_root": artifact_root, "tracking": tracking, "tracking_uri": uri, "experiment": exp,
              "parent_run_id": tracker.run_id, "check_inputs": check_inputs}
    with tracker:
        logger.info("%s: %d children %s", kind, len(children), "on " + deployment if deployment else "in this process")
        if deployment:
            run_on_workers(kind, deployment, children, shared, timeout_minutes)
        else:
            run_here(children, shared)
        summary = {"sweep": kind, "mlflow_run_id": tracker.run_id, "tracking_uri": uri,
                   "children": [{"label": c.label, "overrides": c.overrides, **c.outcome} for c in children]}
        tracker.log_sweep(summary)
        publish_sweep(summary, exp)  # one table of all children on the sweep's flow-run page
        if report is not None:
            report(tracker, summary)
        failed = [c for c in children if c.outcome.get("state") != "Completed"]
        if failed:
            raise RuntimeError(f"{kind}: {len(failed)} of {len(children)} children did not complete: "
                               + "; ".join(f"{c.label}: {c.outcome.get('state')} {c.outcome.get('message', '')}" for c in failed))
    return summary


def child_outcome(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the sweep keeps of a child's pipeline result: metrics per method, cache hits, its MLflow run."""
    return {"metrics": {m: {"accuracy": v["accuracy"], "mIoU": v["mIoU"]} for m, v in result["metrics"].items()},
            "cached": result.get("cached", {}), "mlflow_run_id": result.get("mlflow_run_id")}


def run_here(children: Sequence[Child], shared: Mapping[str, Any]) -> None:
    """Children as subflows of this flow run, one after another; a failing child does not stop the rest."""
    for child in children:
        try:
            result = stego_pipeline.with_options(flow_run_name=child.label)(config=child.config, **shared)
        except Exception as exc:  # recorded and reported with the others at the end
            logger.exception("sweep child %s failed", child.label)
            child.outcome = {"state": "Failed", "message": f"{type(exc).__name__}: {exc}"}
        else:
            child.outcome = {"state": "Completed", **child_outcome(result)}


def run_on_workers(kind: str, deployment: str, children: Sequence[Child], shared: Mapping[str, Any],
                   timeout_minutes: float | None) -> None:
    """Queue one flow run of ``deployment`` per child (as the UI's Run button does, linked to this
    flow run), then wait until every one is final."""
    from flows.deploy import queue_run, wait_for_runs

    by_run: dict[str, Child] = {}
    for child in children:
        run = queue_run(deployment, {"config": child.config.model_dump(mode="json"), **shared},
                        name=f"{kind}: {child.label}", tags=[kind],
                        hint="or set deployment=None to run the children in this process")
        child.outcome = {"flow_run_id": str(run.id)}
        by_run[str(run.id)] = child
        logger.info("queued %s as flow run %s", child.label, run.id)

    def finished(run: Any) -> None:
        child = by_run[str(run.id)]
        child.outcome.update(finished_outcome(run))
        logger.info("%s: %s", child.label, run.state.name)

    try:
        wait_for_runs(list(by_run), timeout_s=60 * timeout_minutes if timeout_minutes else None, poll_s=POLL_SECONDS,
                      on_final=finished, what=f"{kind} children")
    except TimeoutError as exc:
        raise TimeoutError(f"{kind}: {exc}") from None


def finished_outcome(run: Any) -> dict[str, Any]:
    """State, pool and process of a finished child flow run, plus its result when it completed."""
    out = {"state": run.state.name, "work_pool": run.work_pool_name, "infrastructure_pid": run.infrastructure_pid}
    if not run.state.is_completed():
        return {**out, "state": "Failed" if run.state.is_failed() else run.state.name, "message": run.state.message or ""}
    try:
        return {**out, "state": "Completed", **child_outcome(run.state.result())}
    except Exception as exc:  # the run completed but its result is not readable from here
        return {**out, "state": "Completed", "message": f"result unreadable here ({exc}); give the workers a shared "
                "result storage: `stego deploy --result-storage URL`"}


@flow(name="backbone_sweep", log_prints=True)
def backbone_sweep(preset: PresetName = DEFAULT_PRESET,  # type: ignore[valid-type]
                   backbones: list[BackboneName] = SWEEP_BACKBONES,  # type: ignore[valid-type]
                   data_root: Optional[str] = None,
                   overrides: dict[str, Any] = {},  # noqa: B006 (Prefect reads it, never mutates)
                   config: Optional[ExperimentConfig] = None,
                   deployment: Optional[str] = PIPELINE_DEPLOYMENT, artifact_root: Optional[str] = None,
                   tracking: bool = True, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                   check_inputs: bool = True, timeout_minutes: Optional[float] = None) -> dict:
    """The same experiment once per backbone, each child a pipeline run of its own.

    Args:
        preset: the shipped preset every child starts from (`stego presets`; the CLI's --preset).
        backbones: registered backbone names (see `stego backbones`), one child each; resolutions
            that are not a multiple of a backbone's patch size are rounded down for that child.
        data_root: the folder holding the datasets, on the workers; empty: $STEGO_DATA_ROOT.
        overrides: dotted config keys -> values applied to the base, as the CLI's --set,
            e.g. {"train.steps": 500}.
        config: advanced: a whole experiment config, the base instead of the preset.
        deployment: the pipeline deployment the children run as (one flow run each, on its work pool);
            empty to run them in this process, one after another.
        artifact_root: the shared artifact cache: a path or an fsspec URL (s3://bucket/prefix);
            default: each worker's $STEGO_HOME/artifacts.
        tracking: record the sweep and its children in MLflow (children nest under the sweep's run).
        tracking_uri: MLflow store; default $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db.
        experiment: MLflow experiment; default the config's name.
        check_inputs: each child checks the config and every image/label before computing.
        timeout_minutes: give up waiting for the children after this long (they keep running).
    """
    base = form_config(preset, config, data_root=data_root, overrides=overrides)
    return run_sweep("backbone_sweep", base, [backbone_point(base, b) for b in backbones], deployment=deployment or None,
                     artifact_root=artifact_root, tracking=tracking, tracking_uri=tracking_uri, experiment=experiment,
                     check_inputs=check_inputs, timeout_minutes=timeout_minutes)


@flow(name="param_sweep", log_prints=True)
def param_sweep(preset: PresetName = DEFAULT_PRESET,  # type: ignore[valid-type]
                grid: dict[str, list[Any]] = {"loss.q_rand": [0.7, 0.8, 0.9]},  # noqa: B006 (Prefect reads it, never mutates)
                points: list[dict[str, Any]] = [],  # noqa: B006
                data_root: Optional[str] = None,
                overrides: dict[str, Any] = {},  # noqa: B006
                config: Optional[ExperimentConfig] = None,
                deployment: Optional[str] = PIPELINE_DEPLOYMENT, artifact_root: Optional[str] = None,
                tracking: bool = True, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                check_inputs: bool = True, timeout_minutes: Optional[float] = None) -> dict:
    """A grid and/or a list of points over any config fields, one child pipeline run each.

    Args:
        preset: the shipped preset every child starts from (`stego presets`; the CLI's --preset).
        grid: dotted config field -> list of values; every combination is one child,
            e.g. {"loss.b_self": [0.05, 0.1], "loss.b_rand": [0.5, 0.7]} (4 children).
        points: extra children, each a mapping of dotted config field -> value,
            e.g. [{"loss.shift_mode": "fixed", "loss.b_self": 0.18}].
        data_root: the folder holding the datasets, on the workers; empty: $STEGO_DATA_ROOT.
        overrides: dotted config keys -> values applied to the base, as the CLI's --set,
            e.g. {"train.steps": 500}.
        config: advanced: a whole experiment config, the base instead of the preset.
        deployment: the pipeline deployment the children run as; empty to run them in this process.
        artifact_root: the shared artifact cache (path or fsspec URL); default $STEGO_HOME/artifacts.
        tracking: record the sweep and its children in MLflow.
        tracking_uri: MLflow store; default $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db.
        experiment: MLflow experiment; default the config's name.
        check_inputs: each child checks the config and every image/label before computing.
        timeout_minutes: give up waiting for the children after this long (they keep running).
    """
    all_points = (grid_points(grid) if grid else []) + list(points)
    base = form_config(preset, config, data_root=data_root, overrides=overrides)
    return run_sweep("param_sweep", base, all_points, deployment=deployment or None, artifact_root=artifact_root,
                     tracking=tracking, tracking_uri=tracking_uri, experiment=experiment, check_inputs=check_inputs,
                     timeout_minutes=timeout_minutes)
