"""What MLflow tracking costs a pipeline run: the tiny CamVid pipeline with and without tracking.

Every run gets a fresh artifact root, so each one computes every stage. Runs alternate
(off, on, off, on, ...): the first tracked run also creates the SQLite store (a one-time cost,
reported apart). Besides the end-to-end wall times, the tracking calls themselves are timed
(start + params/tags, loss curves, figures, final metrics + artifacts, end), which is the
overhead free of the run-to-run noise of the compute.

Usage::

    python bench/tracking_overhead.py --data-root ../shared/data --repeats 2 --json bench/results/tracking_overhead.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository and the test helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TIMINGS: dict[str, float] = defaultdict(float)


def timed(name, fn):
    """``fn`` that adds its wall time to ``TIMINGS[name]`` (a stopwatch, not a stand-in)."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMINGS[name] += time.perf_counter() - started
    return wrapper


def instrument() -> None:
    import flows.pipeline as pipeline
    from tasks.tracking import RunTracker

    pipeline.run_figures = timed("figures", pipeline.run_figures)
    RunTracker.start = classmethod(timed("start", RunTracker.start.__func__))
    for method in ("log_training", "log_result", "__exit__"):
        setattr(RunTracker, method, timed(method.strip("_"), getattr(RunTracker, method)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("STEGO_DATA_ROOT", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stego-tracking-bench-"))
    real_weights = Path(os.environ.get("STEGO_HOME", Path.home() / ".cache" / "stego")).expanduser() / "weights"
    os.environ["STEGO_HOME"] = str(work / "home")
    (work / "home").mkdir()
    if real_weights.is_dir():  # reuse the converted backbone weights instead of converting them again
        (work / "home" / "weights").symlink_to(real_weights)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

    from flows.pipeline import stego_pipeline
    from stego_core.presets import build_config
    from tests_helpers import TINY

    instrument()
    cfg = build_config("camvid-quick", overrides=[f"data.data_root={Path(args.data_root).resolve()}", *TINY])
    rows = []
    for i in range(args.repeats):
        for tracking in (False, True):
            TIMINGS.clear()
            started = time.perf_counter()
            result = stego_pipeline(config=cfg, artifact_root=str(work / f"art-{i}-{int(tracking)}"), tracking=tracking)
            wall = time.perf_counter() - started
            assert not any(result["cached"].values()), "every stage must compute"
            rows.append({"tracking": tracking, "wall_s": round(wall, 2), "tracking_s": round(sum(TIMINGS.values()), 3),
                         "parts_s": {k: round(v, 3) for k, v in TIMINGS.items()}})
            print(json.dumps(rows[-1]), flush=True)

    on = [r for r in rows if r["tracking"]]
    off = [r["wall_s"] for r in rows if not r["tracking"]]
    steady = [r["tracking_s"] for r in on[1:]] or [on[0]["tracking_s"]]
    summary = {
        "wall_s_without": statistics.mean(off), "wall_s_with": statistics.mean(r["wall_s"] for r in on),
        "tracking_calls_s_first_run": on[0]["tracking_s"], "tracking_calls_s_later_runs": statistics.mean(steady),
    }
    summary["overhead_s_end_to_end"] = round(summary["wall_s_with"] - summary["wall_s_without"], 2)
    summary["overhead_ratio_end_to_end"] = round(summary["wall_s_with"] / summary["wall_s_without"], 3)
    summary["overhead_ratio_tracking_calls"] = round(summary["tracking_calls_s_later_runs"] / summary["wall_s_without"], 3)
    report = {"what": "tiny camvid-quick pipeline (tests_helpers.TINY), local SQLite store, fresh artifacts per run",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": rows, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
