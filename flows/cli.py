"""The ``stego`` command line: parse, build the config, call one function, exit with its status."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="STEGO unsupervised semantic segmentation.")

# Errors a user can fix: printed as one clear message, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def metrics_table(metrics: dict) -> str:
    lines = [f"{'method':<20} {'accuracy':>9} {'mIoU':>7}", "-" * 38]
    for name, m in metrics.items():
        lines.append(f"{name:<20} {100 * m['accuracy']:>8.1f}% {100 * m['mIoU']:>6.1f}%")
    return "\n".join(lines)


def usage_table(result: dict) -> str:
    lines = [f"{'stage':<28} {'wall s':>8} {'peak RSS MB':>12}", "-" * 50]
    for name, cached in result["cached"].items():
        u = result["usage"].get(name)
        lines.append(f"{name:<28} {'cached':>8} {'':>12}" if cached or not u else
                     f"{name:<28} {u['wall_s']:>8.1f} {u['peak_rss_mb']:>12.0f}")
    return "\n".join(lines)


@app.command()
def run(
    preset: Optional[str] = typer.Option(None, help="named preset (see `stego presets`)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.steps=500 (repeatable)"),
    data_root: Optional[Path] = typer.Option(None, help="data root (default: $STEGO_DATA_ROOT)"),
    output: Path = typer.Option(Path("runs/latest"), help="run folder: metrics.json and the model files"),
    artifact_root: Optional[str] = typer.Option(None, help="artifact cache (default: $STEGO_HOME/artifacts)"),
    tracking: bool = typer.Option(True, "--tracking/--no-tracking", help="record the run in MLflow"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: the config's name)"),
) -> None:
    """Run the pipeline flow and print the metrics table."""
    from stego_core.presets import build_config

    overrides = list(set_) + ([f"data.data_root={data_root.resolve()}"] if data_root else [])
    try:
        cfg = build_config(preset, config, overrides)
        from flows.pipeline import resolve_config, stego_pipeline
        from stego_core.validation import preflight

        cfg = resolve_config(cfg)
        preflight(cfg, progress=True)  # bad files and values fail here, in seconds, before the flow starts
        result = stego_pipeline(config=cfg, artifact_root=artifact_root, output=str(output), check_inputs=False,
                                tracking=tracking, tracking_uri=tracking_uri, experiment=experiment)
    except USER_ERRORS as exc:
        fail(exc)
    typer.echo(metrics_table(result["metrics"]))
    typer.echo("\n" + usage_table(result))
    typer.echo(f"\nwrote {output / 'metrics.json'}")
    if result.get("mlflow_run_id"):
        typer.echo(f"MLflow run {result['mlflow_run_id']} ({result['tracking_uri']}); `stego compare` lists it")


@app.command()
def evaluate(
    pred: Path = typer.Option(..., help="folder of predicted cluster-id PNGs"),
    labels: Path = typer.Option(..., help="folder of label PNGs (matched by file stem)"),
    num_classes: int = typer.Option(..., help="number of classes"),
    ignore_index: int = typer.Option(255, help="void label id"),
    linear: bool = typer.Option(False, help="predictions are class ids already (no Hungarian matching)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON"),
) -> None:
    """Hungarian evaluation of a folder of predictions against a folder of labels."""
    from stego_core.metrics import evaluate_folders

    try:
        scores = evaluate_folders(pred, labels, num_classes=num_classes, ignore_index=ignore_index, matched=not linear)
    except USER_ERRORS as exc:
        fail(exc)
    typer.echo(metrics_table({"predictions": scores}))
    if json_out:
        json_out.write_text(json.dumps(scores, indent=1))


@app.command()
def predict(
    run_ref: str = typer.Option(..., "--run", help="a run folder (`stego run --output`) or an MLflow run id / runs:/<id>"),
    images: Path = typer.Option(..., help="folder of images to segment"),
    out: Path = typer.Option(..., help="output folder for cluster-id PNGs and overlays"),
    crf: bool = typer.Option(False, help="refine with the dense CRF"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store holding the run (default: as `stego run`)"),
) -> None:
    """Segment new images with a finished run (a folder, or a run tracked in MLflow)."""
    from stego_core.inference import predict_images

    try:
        run_dir = Path(run_ref)
        if not run_dir.exists():
            from stego_core.home import stego_home
            from tasks.tracking import download_run, parse_run_ref, resolve_tracking_uri

            run_id = parse_run_ref(run_ref)
            if run_id is not None:
                run_dir = download_run(run_id, tracking_uri=resolve_tracking_uri(tracking_uri, stego_home()),
                                       cache_root=stego_home() / "mlflow-runs")
        written = predict_images(run_dir, images, out, use_crf=crf)
    except USER_ERRORS as exc:
        fail(exc)
    typer.echo(f"wrote {len(written)} predictions (+ overlays) to {out}")


@app.command()
def compare(
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: all)"),
    filter_: str = typer.Option("", "--filter", help="MLflow filter, e.g. \"params.train.lr = '0.001'\" (back-tick names holding '/')"),
    sort: Optional[str] = typer.Option(None, help="column to sort by, best first (default: the first *.mIoU)"),
    ascending: bool = typer.Option(False, help="sort smallest first"),
    all_metrics: bool = typer.Option(False, help="every metric (per-class IoU, usage, losses), not just accuracy / mIoU"),
    csv: Optional[Path] = typer.Option(None, help="also write the table as CSV"),
    plot: Optional[Path] = typer.Option(None, help="also write a bar chart of the runs' mIoU (PNG)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
) -> None:
    """Tracked runs side by side: the parameters that differ and the metrics."""
    import pandas as pd

    from flows.compare import compare_runs
    from stego_core.home import stego_home
    from tasks.tracking import resolve_tracking_uri

    try:
        table = compare_runs(tracking_uri=resolve_tracking_uri(tracking_uri, stego_home()), experiment=experiment,
                             filter_string=filter_, sort=sort, ascending=ascending, all_metrics=all_metrics, csv=csv, plot=plot)
    except USER_ERRORS as exc:
        fail(exc)
    if table.empty:
        typer.echo("no runs found (run `stego run` first, or check --experiment / --filter / --tracking-uri)")
        return
    shown = table.assign(run_id=table["run_id"].str[:8])
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4f}".format):
        typer.echo(shown.to_string(index=False))
    for path in (csv, plot):
        if path:
            typer.echo(f"wrote {path}")


@app.command()
def ui(
    port: int = typer.Option(5000, help="port on 127.0.0.1"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
) -> None:
    """Serve the MLflow UI for the local store on 127.0.0.1 (one worker; Ctrl-C stops it)."""
    import subprocess

    from stego_core.home import stego_home
    from tasks.tracking import local_artifact_root, resolve_tracking_uri, server_command, server_env, sqlite_path

    uri = resolve_tracking_uri(tracking_uri, stego_home())
    if sqlite_path(uri) is None:
        typer.echo(f"runs are tracked on {uri}: open that address in a browser, or pass --tracking-uri sqlite:///FILE")
        return
    sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C stops it)")
    proc = subprocess.Popen(server_command(uri, local_artifact_root(uri), port), env=server_env())
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)


@app.command()
def presets() -> None:
    """List the shipped presets."""
    from stego_core.presets import list_presets

    for name, desc in list_presets().items():
        typer.echo(f"{name:<22} {desc}")


@app.command()
def backbones() -> None:
    """List the registered backbones."""
    from stego_core.backbones import BACKBONES

    for name, spec in sorted(BACKBONES.items()):
        typer.echo(f"{name:<16} C={spec.embed_dim:<5} patch={spec.patch_size:<3} {spec.weights}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("STEGO_LOG_LEVEL", "WARNING"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # With no server configured Prefect starts a temporary one; its 20 s default is tight on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    app()


if __name__ == "__main__":
    sys.exit(main())
