"""The ``stego_predict`` flow: segment a folder of new images with a finished run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from prefect import flow

from stego_core.home import stego_home
from stego_core.inference import SUMMARY_FILE, predict_images
from tasks.registry import download_model, parse_model_ref
from tasks.tracking import check_reachable, download_run, parse_run_ref, resolve_tracking_uri


def resolve_run_dir(run: str, tracking_uri: str | None = None) -> Path:
    """A run folder (``stego run --output``) as is; an MLflow run id / ``runs:/<id>`` fetched into
    ``$STEGO_HOME/mlflow-runs/<id>``; a registered model ``models:/NAME/VERSION`` / ``models:/NAME@ALIAS``
    fetched into ``$STEGO_HOME/mlflow-models/<model id>`` (its run folder)."""
    run_dir = Path(run)
    if run_dir.exists():
        return run_dir
    model = parse_model_ref(run)
    run_id = parse_run_ref(run) if model is None else None
    if model is None and run_id is None:
        raise FileNotFoundError(f"run {run!r} is neither a run folder, an MLflow run id (runs:/<id>) nor a registered "
                                "model (models:/NAME/VERSION, models:/NAME@ALIAS); pass the --output folder of "
                                "`stego run`, an id from `stego compare`, or a name from `stego register`")
    uri = resolve_tracking_uri(tracking_uri, stego_home())
    check_reachable(uri)  # MLflow's client would retry an unreachable server for minutes
    if model is not None:
        return download_model(model, tracking_uri=uri, cache_root=stego_home() / "mlflow-models")
    return download_run(run_id, tracking_uri=uri, cache_root=stego_home() / "mlflow-runs")


@flow(name="stego_predict", log_prints=True)
def stego_predict(run: str, images: str, out: str, crf: bool = False, device: str = "auto",
                  tracking_uri: Optional[str] = None) -> dict:
    """Full-size class maps (the run's matched classes, else cluster ids), overlays with a legend and
    per-image class shares (JSON) for every image in a folder, plus ``_summary.json``.

    Args:
        run: a run folder written by `stego run --output`, an MLflow run id / runs:/<id>, or a registered
            model models:/NAME/VERSION / models:/NAME@ALIAS.
        images: folder of images to segment (on the worker's filesystem).
        out: output folder (on the worker's filesystem).
        crf: refine the clusters with the dense CRF.
        device: auto | cpu | cuda | cuda:N.
        tracking_uri: MLflow store holding the run; default $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db.
    """
    written = predict_images(resolve_run_dir(run, tracking_uri), images, out, use_crf=crf, device=device)
    return {"out": str(out), "count": len(written), "summary": str(Path(out) / SUMMARY_FILE)}
