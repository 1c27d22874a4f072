"""What a finished run shows on its flow-run page in the Prefect UI (the Artifacts tab).

A pipeline run gets a table of every method's accuracy and mIoU, a markdown summary (dataset, backbone,
preset, per-stage wall time and cache hits, the MLflow run) and, when the run is tracked on an MLflow
server the browser can reach (an http(s) tracking URI), the overlay figure as an image artifact that the
UI loads from that server. A sweep parent gets one table of all its children.

Best effort: outside a flow run (a plain function call) nothing is created, and an artifact the server
refuses is a warning in the run's log, never a failed run.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

logger = logging.getLogger(__name__)

OVERLAY = "figures/overlays.png"  # logged by tasks.tracking.RunTracker.log_result


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text: ``camvid`` -> ``camvid-metrics``."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower())).strip("-")[:100] or "stego"


def publish(create: Callable[..., Any], **kwargs: Any) -> bool:
    """``create(**kwargs)`` (a ``prefect.artifacts.create_*_artifact``) inside a flow or task run; False
    (and a warning when it failed) when no artifact was created."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return False
    try:
        create(**kwargs)
    except Exception as exc:  # the run's results are safe already; the page just lacks this artifact
        logger.warning("could not create the Prefect artifact %r: %s", kwargs.get("key"), exc)
        return False
    return True


def metrics_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per method: accuracy and mIoU in percent, best mIoU first."""
    rows = [{"method": m, "accuracy (%)": round(100 * v["accuracy"], 2), "mIoU (%)": round(100 * v["mIoU"], 2)}
            for m, v in metrics.items()]
    return sorted(rows, key=lambda r: -r["mIoU (%)"])


def mlflow_urls(tracking_uri: str | None, run_id: str | None) -> tuple[str | None, str | None]:
    """``(run page, overlay image)`` URLs on an MLflow server, or ``(None, None)`` for a local store
    (a browser cannot open a sqlite file or load a file:// image into the Prefect UI)."""
    if not run_id or not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None, None
    base = tracking_uri.rstrip("/")
    try:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except Exception as exc:  # the link is a convenience; the run id is in the summary anyway
        logger.warning("could not read MLflow run %s for its link: %s", run_id, exc)
        return None, None
    return (f"{base}/#/experiments/{experiment_id}/runs/{run_id}",
            f"{base}/get-artifact?path={quote(OVERLAY)}&run_uuid={run_id}")


def summary_markdown(result: Mapping[str, Any], run_url: str | None) -> str:
    """Dataset, backbone, preset, the scores' best method, per-stage wall time and cache hits, the MLflow run."""
    cfg = result["config"]
    data, embed = cfg["data"], cfg["embed"]
    evaluation = data.get("eval_dataset") or data["dataset"]
    lines = [f"## {cfg.get('name', 'stego')}: {data['dataset']} -> {evaluation} ({data.get('eval_split', '')})", "",
             f"- backbone: `{embed['backbone']}`" + ("" if embed.get("pretrained", True) else " (random weights)"),
             f"- preset: `{cfg.get('preset') or '-'}`, seed {cfg.get('seed')}"]
    best = metrics_rows(result["metrics"])[:1]
    if best:
        lines.append(f"- best mIoU: `{best[0]['method']}` {best[0]['mIoU (%)']:.1f}% (accuracy {best[0]['accuracy (%)']:.1f}%)")
    run_id = result.get("mlflow_run_id")
    if run_id:
        where = f"[{run_id}]({run_url})" if run_url else f"`{run_id}` in {result.get('tracking_uri')} (`stego ui` opens it)"
        lines.append(f"- MLflow run: {where}")
    else:
        lines.append("- MLflow: not tracked")
    lines += ["", "| stage | wall s | peak RSS MB | cached |", "|---|---:|---:|---|"]
    for stage, cached in result.get("cached", {}).items():
        u = (result.get("usage") or {}).get(stage) or {}
        wall = f"{u['wall_s']:.1f}" if "wall_s" in u else "-"
        rss = f"{u['peak_rss_mb']:.0f}" if "peak_rss_mb" in u else "-"
        lines.append(f"| {stage} | {wall} | {rss} | {'yes' if cached else 'no'} |")
    return "\n".join(lines) + "\n"


def publish_run(result: Mapping[str, Any]) -> list[str]:
    """The pipeline run's artifacts (see the module docstring); returns the keys created."""
    from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

    name = str(result["config"].get("name") or "stego")
    run_url, image_url = mlflow_urls(result.get("tracking_uri"), result.get("mlflow_run_id"))
    made = []
    for key, create, args in (
            (artifact_key(name, "metrics"), create_table_artifact,
             {"table": metrics_rows(result["metrics"]), "description": "accuracy and mIoU per method (Hungarian-matched)"}),
            (artifact_key(name, "summary"), create_markdown_artifact,
             {"markdown": summary_markdown(result, run_url), "description": "what ran, stage times, cache hits, MLflow run"}),
            (artifact_key(name, "overlays"), create_image_artifact if image_url else None,
             {"image_url": image_url, "description": "image / ground truth / every method on fixed validation images"})):
        if create is not None and publish(create, key=key, **args):
            made.append(key)
    return made


def sweep_rows(children: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per child of a sweep: its label, state, and each method's mIoU and accuracy (percent)."""
    methods = sorted({m for c in children for m in (c.get("metrics") or {})})
    rows = []
    for child in children:
        row: dict[str, Any] = {"child": child["label"], "state": child.get("state", "")}
        for m in methods:
            score = (child.get("metrics") or {}).get(m)
            row[f"{m} mIoU (%)"] = round(100 * score["mIoU"], 2) if score else None
            row[f"{m} acc (%)"] = round(100 * score["accuracy"], 2) if score else None
        rows.append(row)
    return rows


def publish_sweep(summary: Mapping[str, Any], name: str) -> list[str]:
    """The sweep parent's table of all children; returns the keys created."""
    from prefect.artifacts import create_table_artifact

    key = artifact_key(name, summary["sweep"])
    ok = publish(create_table_artifact, key=key, table=sweep_rows(summary["children"]),
                 description=f"{summary['sweep']}: method scores per child")
    return [key] if ok else []
