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
        result = stego_pipeline(config=cfg, artifact_root=artifact_root, output=str(output), check_inputs=False)
    except USER_ERRORS as exc:
        fail(exc)
    typer.echo(metrics_table(result["metrics"]))
    typer.echo("\n" + usage_table(result))
    typer.echo(f"\nwrote {output / 'metrics.json'}")


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
    run_dir: Path = typer.Option(..., "--run", help="a finished run folder (from `stego run --output`)"),
    images: Path = typer.Option(..., help="folder of images to segment"),
    out: Path = typer.Option(..., help="output folder for cluster-id PNGs and overlays"),
    crf: bool = typer.Option(False, help="refine with the dense CRF"),
) -> None:
    """Segment new images with a finished run."""
    from stego_core.inference import predict_images

    try:
        written = predict_images(run_dir, images, out, use_crf=crf)
    except USER_ERRORS as exc:
        fail(exc)
    typer.echo(f"wrote {len(written)} predictions (+ overlays) to {out}")


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
