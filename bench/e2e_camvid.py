"""End to end: the ``camvid-dinov2s14`` preset through the ``stego_pipeline`` flow, every stage computed.

A fresh artifact root (and a temporary $STEGO_HOME / $PREFECT_HOME, see
:func:`bench.orchestration.isolated_home`), so nothing is cached. Written: each stage's wall time
and the process's peak RSS after it (the flow result's ``usage``; peak RSS is the process's
high-water mark so far, so it only grows), the flow's total wall time, the one-time start of
Prefect's local API server (measured apart, on an empty flow), the peak RSS of this process and of
its children (CRF workers, loader workers), and the metrics.

Usage::

    python bench/e2e_camvid.py                                    # ~13 min on 2 CPU cores
    python bench/e2e_camvid.py --set data.train_limit=4 --set data.eval_limit=3 --set knn.k=10 \
        --set knn.num_neighbors=3 --set train.steps=20 --json /tmp/e2e_smoke.json     # smoke test, ~1 min
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.orchestration import RESULTS, isolated_home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="camvid-dinov2s14")
    parser.add_argument("--data-root", default=os.environ.get("STEGO_DATA_ROOT", "../shared/data"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. --set data.train_limit=4")
    parser.add_argument("--no-tracking", action="store_true", help="run without MLflow tracking")
    parser.add_argument("--json", type=Path, default=RESULTS / "e2e_camvid.json")
    args = parser.parse_args()

    work = isolated_home("stego-e2e-bench-")
    import torch
    from prefect import flow

    from flows.pipeline import stego_pipeline
    from stego_core.presets import build_config
    from stego_core.training import resolve_device

    cfg = build_config(args.preset, overrides=[f"data.data_root={Path(args.data_root).resolve()}", *args.set])

    @flow(name="noop")
    def noop() -> int:
        return 0

    started = time.perf_counter()
    noop()
    server_s = time.perf_counter() - started
    started = time.perf_counter()
    result = stego_pipeline(config=cfg, artifact_root=str(work / "artifacts"), tracking=not args.no_tracking)
    total = time.perf_counter() - started
    if any(result["cached"].values()):
        raise SystemExit(f"a fresh artifact root computed only part of the pipeline: {result['cached']}")

    stages = [{"stage": name, **usage} for name, usage in result["usage"].items()]
    in_stages = sum(s["wall_s"] for s in stages)
    device = resolve_device(cfg.device)
    report = {
        "what": f"{args.preset} through stego_pipeline (tracking {'off' if args.no_tracking else 'on'}), fresh "
                "artifact root: per-stage wall time and process peak RSS after the stage, total wall",
        "overrides": args.set,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform(), "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
        "command": "python bench/e2e_camvid.py " + " ".join(sys.argv[1:]),
        "stages": stages,
        "flow_wall_s": round(total, 2),
        "stages_wall_s": round(in_stages, 2),
        "outside_stages_s": round(total - in_stages, 2),
        "prefect_server_start_s": round(server_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "metrics": {m: {"accuracy": v["accuracy"], "mIoU": v["mIoU"]} for m, v in result["metrics"].items()},
    }
    print("\n| stage | wall s | peak RSS MB |\n|---|---|---|")
    for s in stages:
        print(f"| {s['stage']} | {s['wall_s']} | {s['peak_rss_mb']} |")
    print(f"| **flow total** | {report['flow_wall_s']} | {report['peak_rss_mb']} |")
    print(f"\noutside the stages: {report['outside_stages_s']} s; Prefect server start (apart): {report['prefect_server_start_s']} s")
    for m, v in report["metrics"].items():
        print(f"{m}: accuracy {v['accuracy']:.3f}, mIoU {v['mIoU']:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
