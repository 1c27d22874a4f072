"""Segmentation quality on CamVid: the protocol of docs/RESULTS.md, one command per phase.

Runs the real `stego_pipeline` flow in this process (tracking off, the shared artifact cache under
``--artifact-root``, so phases reuse each other's embeddings and heads):

* ``seeds``: the preset with ``seed`` = each of ``--seeds``, scored on val and, once, on test: every
  method's accuracy and mIoU as mean +- std over seeds, and the per-class IoU on test.
* ``sweep``: the project's own `param_sweep` (here, children in this process) over the loss
  quantiles and weights on **val** (this uses labels to choose): its best against the label-free
  calibrated shifts (the ablation's ``base`` row, bench/ablation.py, seed 0).
* ``dynamics``: val mIoU of the cluster (k-means) and linear readouts of the code against
  ``train.steps`` (each a full run of that length, the ablation's ``base`` row otherwise), and
  where its fixed schedule lands.
* ``figure``: test images with ground truth, raw k-means, STEGO and STEGO + CRF (seed 0).

Writes ``bench/results/quality.json`` (merged across phases) and the figures under ``docs/``.

    python bench/quality.py --phase all            # ~1-2 h on 2 CPU cores with an empty cache
    python bench/quality.py --phase seeds --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import ROOT, machine, mean_std, run_main, run_pipeline as run, scores  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "quality.json"
PRESET = "camvid-dinov2s14"
SWEEP_GRID = {"loss.q_self": [0.3, 0.5, 0.7], "loss.q_rand": [0.7, 0.8, 0.9]}
SWEEP_POINTS = [{"loss.w_self": 0.25, "loss.w_knn": 0.67}, {"loss.w_rand": 0.3}]  # the weights, at the base quantiles
DYNAMICS_STEPS = [100, 200, 400, 800, 1600]
METHODS = ["raw_kmeans", "raw_linear", "stego_cluster", "stego_cluster_crf", "stego_linear"]


def config(*overrides: str):
    from stego_core.presets import build_config

    return build_config(PRESET, overrides=list(overrides))


def phase_seeds(seeds: list[int], root: str, save=lambda part: None) -> dict:
    """Every seed on val and test; ``save`` gets the summary of the seeds done so far after each one."""
    per_seed: dict[str, dict] = {"val": {}, "test": {}}
    per_class = {}
    done: list[int] = []
    for seed in seeds:
        for split in ("val", "test"):
            t0 = time.perf_counter()
            result = run(config(f"seed={seed}", f"data.eval_split={split}"), root)
            per_seed[split][seed] = scores(result)
            if split == "test":
                per_class[seed] = {m: v["per_class_iou"] for m, v in result["metrics"].items()}
            print(f"seed {seed} {split}: " + ", ".join(f"{m} {100 * v['mIoU']:.1f}" for m, v in scores(result).items())
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        done.append(seed)
        save(seeds_summary(done, per_seed, per_class))
    return seeds_summary(done, per_seed, per_class)


def seeds_summary(seeds: list[int], per_seed: dict, per_class: dict) -> dict:
    summary = {split: {m: {k: mean_std([per_seed[split][s][m][k] for s in seeds]) for k in ("accuracy", "mIoU")}
                       for m in per_seed[split][seeds[0]]} for split in per_seed}
    classes = list(per_class[seeds[0]]["stego_cluster"])
    test_per_class = {m: {c: statistics.fmean(vals) if (vals := [per_class[s][m][c] for s in seeds
                                                                   if per_class[s][m][c] is not None]) else None
                          for c in classes} for m in per_class[seeds[0]]}
    return {"preset": PRESET, "seeds": seeds, "summary": summary, "per_seed": {k: {str(s): v[s] for s in seeds} for k, v in per_seed.items()},
            "test_per_class_iou": test_per_class}


def base_config(*overrides: str):
    """The ablation's ``base`` row (label-free calibrated shifts, 400 steps), seed 0, scored on val."""
    from ablation import BASE, COMMON

    return config(*BASE, *COMMON, "seed=0", "data.eval_split=val", "baselines=false", *overrides)


def phase_sweep(root: str) -> dict:
    from flows.sweeps import param_sweep

    summary = param_sweep(config=base_config(), grid=SWEEP_GRID, points=SWEEP_POINTS, deployment=None,
                          artifact_root=root, tracking=False, check_inputs=False)
    children = [{"overrides": c["overrides"], "val": c["metrics"]} for c in summary["children"]]
    best = max(children, key=lambda c: c["val"]["stego_cluster"]["mIoU"])
    label_free = next(c for c in children if c["overrides"] == {"loss.q_self": 0.5, "loss.q_rand": 0.8})
    return {"grid": SWEEP_GRID, "points": SWEEP_POINTS, "selected_by": "val stego_cluster mIoU", "children": children,
            "best": best, "label_free_preset": label_free}


def phase_dynamics(root: str, save=lambda part: None) -> dict:
    """Each length of ``DYNAMICS_STEPS``; ``save`` gets the lengths done so far after each one."""
    rows = []
    for steps in DYNAMICS_STEPS:
        result = run(base_config(f"train.steps={steps}"), root)
        rows.append({"steps": steps, **{m: scores(result)[m] for m in ("stego_cluster", "stego_linear")}})
        print(f"steps {steps}: cluster {100 * rows[-1]['stego_cluster']['mIoU']:.1f} "
              f"linear {100 * rows[-1]['stego_linear']['mIoU']:.1f}", flush=True)
        save({"rows": list(rows), "preset_steps": base_config().train.steps})
    return {"rows": rows, "preset_steps": base_config().train.steps}


def phase_figure(root: str, out: Path, n: int = 4) -> dict:
    from stego_core.features import open_embedding
    from stego_core.stages import eval_images
    from tasks.figures import class_colours, class_ids_from_clusters, overlay_grid, save_png
    from tasks.remote_store import open_store

    result = run(config("seed=0", "data.eval_split=test"), root)
    store = open_store(root)
    data = open_embedding(store.open("embed", result["artifacts"]["embed_eval"]).path)
    rows = list(np.linspace(0, len(data.labels) - 1, n).astype(int))
    images = eval_images(data.index, rows, int(data.labels.shape[-1]))
    preds = {}
    for method, title in (("raw_kmeans", "raw k-means"), ("stego_cluster", "STEGO"), ("stego_cluster_crf", "STEGO + CRF")):
        raw = np.load(store.open("predict", result["artifacts"][f"predict_{method}"]).path / "predictions.npy", mmap_mode="r")
        preds[title] = [class_ids_from_clusters(raw[i], result["metrics"][method]["assignment"]) for i in rows]
    names = list(result["metrics"]["stego_cluster"]["per_class_iou"])
    fig = overlay_grid(images, [np.asarray(data.labels[i]) for i in rows], preds, class_colours("camvid", len(names)), names)
    save_png(fig, out)
    return {"figure": str(out.relative_to(ROOT)), "test_rows": [int(r) for r in rows]}


def dynamics_plot(dyn: dict, out: Path) -> None:
    from matplotlib.figure import Figure

    from tasks.figures import save_png

    steps = [r["steps"] for r in dyn["rows"]]
    fig = Figure(figsize=(5, 3.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    for method, label in (("stego_cluster", "k-means on the code"), ("stego_linear", "linear probe on the code")):
        ax.plot(steps, [100 * r[method]["mIoU"] for r in dyn["rows"]], marker="o", label=label)
    ax.axvline(dyn["preset_steps"], color="grey", ls="--", lw=1, label="preset (label-free, fixed)")
    ax.set_xscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel("val mIoU (%)")
    ax.legend(fontsize=8)
    save_png(fig, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=["seeds", "sweep", "dynamics", "figure", "all"], default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--artifact-root", default=None, help="default: $STEGO_HOME/artifacts")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from flows.pipeline import default_artifact_root

    root = args.artifact_root or default_artifact_root()
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    phases = ["seeds", "figure", "dynamics", "sweep"] if args.phase == "all" else [args.phase]
    for phase in phases:
        t0 = time.perf_counter()
        if phase == "seeds":
            out["seeds"] = phase_seeds(args.seeds, root, save=lambda part: write(out, seeds=part))
        elif phase == "sweep":
            out["sweep"] = phase_sweep(root)
        elif phase == "dynamics":
            out["dynamics"] = phase_dynamics(root, save=lambda part: write(out, dynamics=part))
            dynamics_plot(out["dynamics"], ROOT / "docs" / "quality_dynamics.png")
        else:
            out["figure"] = phase_figure(root, ROOT / "docs" / "quality_test_examples.png")
        out.setdefault("wall_s", {})[phase] = round(time.perf_counter() - t0, 1)
        write(out)
        print(f"phase {phase}: {out['wall_s'][phase]:.0f} s -> {RESULTS}", flush=True)


def write(out: dict, **parts) -> None:
    """Merge ``parts`` into ``out`` and write the JSON (after every seed, so a stopped run keeps what it did)."""
    out.update(parts, machine=machine())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
