"""What the quality scripts share: running the pipeline in this process, and summarising scores."""
from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The dinov2 recipe before the concept clusterbook joined it: scripts whose recorded numbers were measured then
# pin it, so that rerunning them reproduces their JSON.
BEFORE_CLUSTERBOOK = ["loss.w_concept=0"]


def parse_run_args(ap, results: Path):
    """Add the options every multi-seed quality script shares (``--seeds``, ``--artifact-root``, ``--json``), parse
    them, and return ``(args, artifact root, the JSON written so far or {})``: reruns skip what is there."""
    import json
    import logging

    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--artifact-root", default=None, help="default: $STEGO_HOME/artifacts")
    ap.add_argument("--json", type=Path, default=results)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from flows.pipeline import default_artifact_root
    from stego_core.data.registry import resolve_data_root

    resolve_data_root(None)  # no data root: say so before a Prefect server starts

    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    return args, args.artifact_root or default_artifact_root(), previous


def run_main(main) -> None:
    """Run a quality script's ``main`` as ``stego`` runs a command (:mod:`flows.errors`): an expected failure
    (no data root, a bad override, a missing folder) is one ``error:`` line and exit 2, a bug one line and the
    path of a log with its traceback (exit 1); ``STEGO_DEBUG=1`` prints the traceback. Finished stages stay
    in the artifact cache and the JSON keeps the runs written so far, so a rerun goes on from there."""
    import prefect  # noqa: F401 - its console handlers exist from here on, to be diverted
    from flows.errors import DEBUG_ENV, divert_logged_tracebacks, report

    divert_logged_tracebacks()
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - every failure goes through the one error path
        status, line = report(exc, debug=bool(os.environ.get(DEBUG_ENV)))
        print(line, file=sys.stderr)
        raise SystemExit(status) from None


def run_pipeline(cfg, root: str) -> dict:
    """The real `stego_pipeline` flow, tracking off, inputs not re-checked, artifacts under ``root``."""
    from flows.pipeline import stego_pipeline

    return stego_pipeline(config=cfg, artifact_root=root, tracking=False, check_inputs=False)


def scores(result: dict) -> dict:
    """``{method: {"accuracy", "mIoU"}}`` of a pipeline result."""
    return {m: {"accuracy": v["accuracy"], "mIoU": v["mIoU"]} for m, v in result["metrics"].items()}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
