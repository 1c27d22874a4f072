"""The successors' ideas, one at a time and together, on CamVid with DINOv2 ViT-S/14 (docs/RESULTS.md).

Every row is the real `stego_pipeline` flow (tracking off, the shared artifact cache, so rows that
share a stage compute it once), trained on CamVid train and scored on val and, once, on test, for
each of ``--seeds``. Every row's settings are fixed here in advance: no label is used to choose
anything in a row (the linear probes are supervised by definition). All rows differ from the
``base`` row (the label-free preset of the previous release, pinned below so that a later change of
the shipped preset cannot move it) only by the overrides listed.

Raw-feature rows: the pipeline's own baselines (k-means best of 5 by objective, linear probe), and
the robust readouts applied to the raw tokens (same stage code, no head), to tell what the head adds
from what the readout adds.

Common to every row: no CRF (the preset row of docs/RESULTS.md has it), and linear probes scored on
label class shares pooled to 32x32 (``linear.loss_resolution=32``, the same probe as at full label
resolution on val: 88.3 / 48.8 vs 88.4 / 48.8 for the raw one, about 3x faster).

    python bench/ablation.py                       # 3 seeds, val + test, ~2 h on 2 CPU cores
    python bench/ablation.py --seeds 0 --rows base per_anchor
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import BEFORE_CLUSTERBOOK, ROOT, machine, mean_std, run_main, run_pipeline, scores  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ablation.json"
PRESET = "camvid-dinov2s14"
# The previous release's label-free preset, field by field (calibrated shifts, 400 steps at 1e-4,
# k-means best of 5 by objective).
BASE = ["loss.shift_mode=calibrated", "loss.q_self=0.5", "loss.q_knn=0.5", "loss.q_rand=0.8", "train.steps=400",
        "train.lr=1e-4", "train.ema_decay=0", "loss.w_teacher=0", "cluster.method=kmeans", "cluster.select=objective",
        "cluster.kmeans_restarts=5", "cluster.refine_steps=0", "embed.train_resolution=224", "data.five_crop=true",
        *BEFORE_CLUSTERBOOK]
COMMON = ["crf.enabled=false", "linear.loss_resolution=32"]
PER_ANCHOR = ["loss.shift_mode=per_anchor", "loss.q_anchor=0.8"]
TEACHER = ["train.ema_decay=0.99", "loss.w_teacher=0.5", "loss.q_teacher=0.8"]
BALANCE = ["cluster.select=balance", "cluster.kmeans_restarts=10"]
CONSENSUS = ["cluster.method=consensus", "cluster.kmeans_restarts=20", "cluster.overcluster=100"]
REFINE = ["cluster.refine_steps=200"]
RES168 = ["embed.train_resolution=168"]
ROWS: dict[str, tuple[str, list[str]]] = {
    "reference_shifts": ("STEGO, the published shifts (COCO ViT-S/8: .08 / .02 / .66, fixed)",
                         ["loss.shift_mode=fixed", "loss.b_self=0.08", "loss.b_knn=0.02", "loss.b_rand=0.66"]),
    "base": ("STEGO, label-free calibrated shifts (previous preset)", []),
    "readout_balance": ("+ k-means restart with the most even cluster sizes (of 10)", BALANCE),
    "readout_consensus": ("+ consensus of 20 k-means over 100 overclusters", CONSENSUS),
    "refine": ("+ pseudo-label refinement of the centroids (200 steps)", REFINE),
    "per_anchor": ("+ per-anchor shifts (hidden positives from the backbone, q 0.8)", PER_ANCHOR),
    "ema_teacher": ("+ EMA teacher (0.99) and teacher positives (weight 0.5)", TEACHER),
    "train_168": ("+ training crops at 168 px (the evaluation's pixel scale)", RES168),
    "combined": ("all of the above except consensus", PER_ANCHOR + TEACHER + BALANCE + REFINE + RES168),
}
RAW_READOUTS = {"raw_balance": BALANCE, "raw_consensus": CONSENSUS}
RAW_BASELINES_OF = {"base": "raw_baselines", "train_168": "raw_baselines_168"}  # rows whose raw baselines are kept
METHODS = ("stego_cluster", "stego_linear")


def config(row: str, seed: int, split: str):
    from stego_core.presets import build_config

    return build_config(PRESET, overrides=BASE + COMMON + ROWS[row][1] + [f"seed={seed}", f"data.eval_split={split}"])


def raw_readout(result: dict, root: str, overrides: list[str], seed: int, split: str) -> dict:
    """A robust readout on the raw tokens of a pipeline run's embeddings: cluster, predict, score."""
    from stego_core import stages
    from stego_core.presets import build_config
    from tasks.remote_store import open_store

    store = open_store(root)
    cfg = build_config(PRESET, overrides=BASE + COMMON + overrides + [f"seed={seed}", f"data.eval_split={split}"])
    emb_train = store.open("embed", result["artifacts"]["embed_train"]).path
    emb_eval = store.open("embed", result["artifacts"]["embed_eval"]).path
    info = stages.split_info(cfg, "eval")
    with tempfile.TemporaryDirectory() as tmp:
        cluster, pred, score = (Path(tmp) / d for d in ("cluster", "predict", "evaluate"))
        for d in (cluster, pred, score):
            d.mkdir()
        stages.cluster_stage(cfg, emb_train, None, cluster, info.num_classes)
        stages.predict_stage(cfg, emb_eval, None, cluster, pred)
        return stages.evaluate_stage(emb_eval, {"m": pred}, score, num_classes=info.num_classes,
                                     class_names=info.class_names, matched={"m": True})["m"]


def summarize(per_seed: dict) -> dict:
    """``{split: {method: {metric: mean_std}}}`` over the seeds present in every split."""
    out = {}
    for split, by_seed in per_seed.items():
        seeds = sorted(by_seed)
        methods = by_seed[seeds[0]].keys() if seeds else []
        out[split] = {m: {k: mean_std([by_seed[s][m][k] for s in seeds]) for k in ("accuracy", "mIoU")} for m in methods}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS) + list(RAW_READOUTS), choices=list(ROWS) + list(RAW_READOUTS))
    ap.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"])
    ap.add_argument("--artifact-root", default=None, help="default: $STEGO_HOME/artifacts")
    ap.add_argument("--redo", action="store_true", help="rerun rows already in the JSON (default: skip them)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from flows.pipeline import default_artifact_root

    root = args.artifact_root or default_artifact_root()
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out.update(preset=PRESET, base=BASE, common=COMMON)
    rows = out.setdefault("rows", {})
    for seed in args.seeds:
        for name in args.rows:
            raw = name in RAW_READOUTS
            description, overrides = (f"raw tokens, {name.split('_')[1]} readout", RAW_READOUTS[name]) if raw else ROWS[name]
            row = rows.setdefault(name, {})
            row.update(description=description, overrides=overrides)
            for split in args.splits:
                if not args.redo and str(seed) in row.get("per_seed", {}).get(split, {}):
                    continue
                t0 = time.perf_counter()
                result = run_pipeline(config("base" if raw else name, seed, split), root)
                if raw:
                    got = {"raw_readout": raw_readout(result, root, overrides, seed, split)}
                else:
                    got = {m: v for m, v in scores(result).items() if m in METHODS}
                    if name in RAW_BASELINES_OF:  # the raw baselines depend on the training tokens and restarts
                        raw_row = rows.setdefault(RAW_BASELINES_OF[name], {"description": "the pipeline's raw baselines"})
                        raw_row.setdefault("per_seed", {}).setdefault(split, {})[str(seed)] = \
                            {m: v for m, v in scores(result).items() if m.startswith("raw_")}
                row.setdefault("per_seed", {}).setdefault(split, {})[str(seed)] = got
                if not raw:
                    row.setdefault("usage", {})[f"{split}/{seed}"] = {k: v.get("wall_s") for k, v in result["usage"].items()}
                print(f"seed {seed} {split} {name}: " + ", ".join(f"{m} {100 * v['mIoU']:.1f}" for m, v in got.items())
                      + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
                for r in rows.values():
                    if "per_seed" in r:
                        r["summary"] = summarize(r["per_seed"])
                out["machine"] = machine()
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
