"""What the Prefect flow costs over calling the stages directly, on the tiny CamVid pipeline.

The same config (``camvid-quick`` + ``tests_helpers.TINY``: 4 training frames -> 20 crops, 3
evaluation frames, small resolutions, a few steps, the offline DINOv2 weights, CPU) is run

(i)   directly: the :mod:`stego_core.stages` functions in the flow's order, each into its own folder
      of a fresh temporary folder (the bare baseline);
(ii)  through ``stego_pipeline`` (MLflow tracking off) with a fresh artifact root;
(iii) through ``stego_pipeline`` again on that root: every stage cached.

Overhead = (ii) - (i), the fixed cost of the orchestration (input checks, cache keys, artifact
checksums and manifests, task runs and result persistence). The one-time start of Prefect's local
API server (first flow of a process) is measured apart on an empty flow. Runs alternate
(direct, flow, direct, flow, ...) and each figure is the mean of ``--repeats``.

Usage::

    python bench/orchestration.py                   # writes bench/results/orchestration.json
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
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository and the test helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RESULTS = Path(__file__).resolve().parent / "results"


def isolated_home(prefix: str) -> Path:
    """A temporary $STEGO_HOME (artifacts, MLflow store) and $PREFECT_HOME, reusing the converted
    backbone weights of the real home; returns the temporary folder. Call before importing Prefect."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    real_weights = Path(os.environ.get("STEGO_HOME", Path.home() / ".cache" / "stego")).expanduser() / "weights"
    (work / "home").mkdir()
    if real_weights.is_dir():
        (work / "home" / "weights").symlink_to(real_weights)
    os.environ["STEGO_HOME"] = str(work / "home")
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(work / "prefect" / "results")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return work


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


def direct(cfg, work: Path) -> dict:
    """The flow's stages (``flows.pipeline.run_stages``) called in order; seconds per stage."""
    from stego_core import stages as s

    walls: dict[str, float] = {}

    def stage(name: str, fn) -> Path:
        """``fn(out_dir)`` into ``work/name``, timed."""
        out = work / name
        out.mkdir(parents=True)
        walls[name], _ = timed(fn, out)
        return out

    info = s.split_info(cfg, "eval")
    k, names = info.num_classes, list(info.class_names)
    crop = stage("crop", lambda out: s.crop_stage(cfg, out))
    emb_train = stage("embed_train", lambda out: s.embed_stage(cfg, "train", out, crop))
    emb_eval = stage("embed_eval", lambda out: s.embed_stage(cfg, "eval", out))
    knn = stage("knn", lambda out: s.knn_stage(cfg, emb_train, out))
    head = stage("head", lambda out: s.train_stage(cfg, emb_train, knn, out))
    readouts = {
        "stego_cluster": stage("readout_stego_cluster", lambda out: s.cluster_stage(cfg, emb_train, head, out, k, method=cfg.cluster.method)),
        "stego_linear": stage("readout_stego_linear", lambda out: s.linear_stage(cfg, emb_train, head, out, k)),
        "raw_cluster": stage("readout_raw_cluster", lambda out: s.cluster_stage(cfg, emb_train, None, out, k, method="kmeans")),
        "raw_linear": stage("readout_raw_linear", lambda out: s.linear_stage(cfg, emb_train, None, out, k)),
    }
    plan = {"stego_cluster": ("stego_cluster", False), "stego_linear": ("stego_linear", False),
            "raw_kmeans": ("raw_cluster", False), "raw_linear": ("raw_linear", False)}
    if cfg.crf.enabled:
        plan["stego_cluster_crf"] = ("stego_cluster", True)
    preds = {m: stage(f"predict_{m}", lambda out, r=r, crf=crf: s.predict_stage(
        cfg, emb_eval, head if r.startswith("stego") else None, readouts[r], out, use_crf=crf)) for m, (r, crf) in plan.items()}
    stage("evaluate", lambda out: s.evaluate_stage(emb_eval, preds, out, num_classes=k, class_names=names,
                                                   matched={m: not m.endswith("linear") for m in preds}))
    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    return {"stages_s": {n: round(v, 3) for n, v in walls.items()}, "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("STEGO_DATA_ROOT", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=2, help="direct and flow runs each (alternating)")
    parser.add_argument("--preset", default="camvid-quick")
    parser.add_argument("--set", action="append", default=[], help="extra config override key=value (repeatable)")
    parser.add_argument("--json", type=Path, default=RESULTS / "orchestration.json")
    args = parser.parse_args()

    work = isolated_home("stego-orchestration-bench-")
    from prefect import flow

    from flows.pipeline import stego_pipeline
    from stego_core.presets import build_config
    from stego_core.validation import preflight
    from tests_helpers import TINY

    cfg = build_config(args.preset, overrides=[f"data.data_root={Path(args.data_root).resolve()}", *TINY, *args.set])

    @flow(name="noop")
    def noop() -> int:
        return 0

    server_s, _ = timed(noop)  # starts Prefect's local API server: once per process
    preflight_s, _ = timed(preflight, cfg)
    rows = []
    for i in range(args.repeats):
        t_direct, d = timed(direct, cfg, work / f"direct-{i}")
        root = work / f"artifacts-{i}"
        t_flow, result = timed(stego_pipeline, config=cfg, artifact_root=str(root), tracking=False)
        assert not any(result["cached"].values()), "a fresh artifact root must compute every stage"
        rows.append({"direct_s": round(t_direct, 2), "flow_s": round(t_flow, 2), "same_metrics": result["metrics"] == d["metrics"],
                     "overhead_s": round(t_flow - t_direct, 2), "direct_stages_s": d["stages_s"],
                     "flow_stages_s": {n: u["wall_s"] for n, u in result["usage"].items()}})
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("stages_s")}), flush=True)
    t_cached, again = timed(stego_pipeline, config=cfg, artifact_root=str(root), tracking=False)
    assert all(again["cached"].values()), again["cached"]

    direct_s = statistics.mean(r["direct_s"] for r in rows)
    flow_s = statistics.mean(r["flow_s"] for r in rows)
    in_stages = statistics.mean(sum(r["flow_stages_s"].values()) for r in rows)
    summary = {"direct_s": round(direct_s, 2), "flow_s": round(flow_s, 2), "overhead_s": round(flow_s - direct_s, 2),
               "overhead_ratio": round(flow_s / direct_s, 3),
               "flow_outside_stage_bodies_s": round(flow_s - in_stages, 2),
               "cached_rerun_s": round(t_cached, 2), "cached_rerun_ratio": round(t_cached / direct_s, 3),
               "prefect_server_start_s": round(server_s, 2), "preflight_s": round(preflight_s, 2)}
    report = {
        "what": f"{args.preset} + tests_helpers.TINY {' '.join(args.set)}: stego_core stages called directly vs the "
                "stego_pipeline flow (tracking off, fresh artifact root) vs the flow again (all cached)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]},
        "note": "2 shared cores with other jobs running: timings are under contention; overhead_s is a "
                "difference of two noisy totals, flow_outside_stage_bodies_s (flow wall - the stages' own "
                "wall times) the steadier figure of the same cost",
        "command": "python bench/orchestration.py " + " ".join(sys.argv[1:]),
        "runs": rows, "summary": summary,
    }
    print("\n| direct s | flow s | overhead s | flow / direct | flow outside stages s | cached rerun s | server start s | preflight s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {summary['direct_s']} | {summary['flow_s']} | {summary['overhead_s']} | {summary['overhead_ratio']} | "
          f"{summary['flow_outside_stage_bodies_s']} | {summary['cached_rerun_s']} | {summary['prefect_server_start_s']} | "
          f"{summary['preflight_s']} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
