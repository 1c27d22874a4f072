"""Which label-free signal picks a good k-means solution among restarts? (docs/RESULTS.md)

For the trained heads of the ablation's ``base`` row (one per seed; the flow's cache gives them back)
and for the raw tokens, run ``--restarts`` single spherical k-means (one seed each) on the training
tokens and record, per restart, two label-free signals, the k-means objective (sum of cosines) and
the entropy of the cluster sizes, and the val mIoU of that restart's predictions (labels are used
here only to judge the signals, never by the pipeline). Reported: Spearman correlation of each
signal with val mIoU, and the val mIoU of the restart each signal would pick, against the mean over
restarts.

    python bench/readout_choice.py --restarts 10     # as in docs/RESULTS.md: seeds 0 1 2, ~20 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablation import config  # noqa: E402
from protocol import ROOT, machine, run_main, run_pipeline  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "readout_choice.json"


def study(cfg, result: dict, root: str, head: bool, restarts: int) -> dict:
    from scipy.stats import spearmanr

    from stego_core import stages
    from stego_core.consensus import size_entropy
    from stego_core.access import sample_tokens as tokens
    from stego_core.kmeans import assign, normalize_rows, spherical_kmeans
    from tasks.remote_store import open_store

    store = open_store(root)
    emb_train = store.open("embed", result["artifacts"]["embed_train"]).path
    emb_eval = store.open("embed", result["artifacts"]["embed_eval"]).path
    head_dir = store.open("train_head", result["artifacts"]["head"]).path if head else None
    with tempfile.TemporaryDirectory() as scratch:
        maps, _, _ = stages._readout_maps(cfg, emb_train, head_dir, Path(scratch))
        x = normalize_rows(tokens(maps, max_tokens=cfg.cluster.kmeans_max_tokens, seed=cfg.seed))
        del maps
    info = stages.split_info(cfg, "eval")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(restarts):
            centroids = spherical_kmeans(x, info.num_classes, restarts=1, seed=r)  # one restart, as the pipeline's
            labels, cosines = assign(x, centroids)
            folder = Path(tmp) / str(r)
            for d in ("c", "p", "e"):
                (folder / d).mkdir(parents=True)
            np.save(folder / "c" / "centroids.npy", centroids)
            stages.predict_stage(cfg, emb_eval, head_dir, folder / "c", folder / "p")
            score = stages.evaluate_stage(emb_eval, {"m": folder / "p"}, folder / "e", num_classes=info.num_classes,
                                          class_names=info.class_names, matched={"m": True})["m"]
            rows.append({"restart": r, "objective": float(cosines.sum(dtype=np.float64)), "entropy": size_entropy(labels, info.num_classes),
                         "mIoU": score["mIoU"], "accuracy": score["accuracy"]})
    miou = [row["mIoU"] for row in rows]
    out = {"rows": rows, "mean_mIoU": float(np.mean(miou)), "min_mIoU": min(miou), "max_mIoU": max(miou)}
    for signal in ("objective", "entropy"):
        values = [row[signal] for row in rows]
        out[f"spearman_{signal}"] = float(spearmanr(values, miou).correlation)
        out[f"picked_by_{signal}_mIoU"] = rows[int(np.argmax(values))]["mIoU"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--raw-restarts", type=int, default=10)
    ap.add_argument("--artifact-root", default=None, help="default: $STEGO_HOME/artifacts")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from flows.pipeline import default_artifact_root

    root = args.artifact_root or default_artifact_root()
    started = time.perf_counter()
    out = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "restarts": args.restarts, "heads": {}}
    for i, seed in enumerate(args.seeds):
        cfg = config("base", seed, "val")
        result = run_pipeline(cfg, root)
        out["heads"][f"seed {seed}"] = study(cfg, result, root, True, args.restarts)
        if i == 0:
            out["raw"] = study(cfg, result, root, False, args.raw_restarts)
        for name, s in [*out["heads"].items(), ("raw", out.get("raw"))]:
            if s:
                print(f"{name}: mean {100 * s['mean_mIoU']:.1f} [{100 * s['min_mIoU']:.1f}, {100 * s['max_mIoU']:.1f}]"
                      f" by entropy {100 * s['picked_by_entropy_mIoU']:.1f} (rho {s['spearman_entropy']:+.2f})"
                      f" by objective {100 * s['picked_by_objective_mIoU']:.1f} (rho {s['spearman_objective']:+.2f})",
                      flush=True)
        out.update(machine=machine(), wall_s=round(time.perf_counter() - started, 1))
        RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
