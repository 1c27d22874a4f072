"""Transfer across datasets: heads trained on one dataset, scored on another (docs/RESULTS.md).

A train-dataset x eval-dataset matrix of cluster mIoU for the head's code (the previous default: the dinov2 recipe
without the clusterbook, recipe ``no_concepts``), its label-free
choice of code, PCA to the code dimension and raw k-means, from the real `stego_pipeline` flow with
``data.eval_dataset`` (the number of clusters is the evaluation dataset's). The runs use the robustness
protocol's settings (``bench/robustness.py``), so the diagonal and the training stages are shared with it.

    python bench/transfer.py                    # CamVid and LabelMeFacade, seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import ROOT, machine, mean_std, parse_run_args, run_main, run_pipeline, scores  # noqa: E402
from robustness import DATASETS, config  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "transfer.json"
METHODS = ("stego_cluster_head", "stego_cluster", "pca_kmeans", "raw_kmeans")
EVAL_SPLIT = "test"  # both datasets' test splits: the reported ones


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["camvid", "labelmefacade"], choices=list(DATASETS))
    args, root, out = parse_run_args(ap, RESULTS)
    from stego_core.presets import apply_overrides

    cells = out.setdefault("cells", {})
    out.update(what=__doc__.splitlines()[0], split=EVAL_SPLIT, methods=list(METHODS))
    for seed in args.seeds:
        for train in args.datasets:
            for target in args.datasets:
                cell = cells.setdefault(f"{train}->{target}", {})
                if str(seed) in cell:
                    continue
                cfg = config(train, "no_concepts", seed, EVAL_SPLIT)
                if target != train:
                    cfg = apply_overrides(cfg, {"data.eval_dataset": target})
                t0 = time.perf_counter()
                result = run_pipeline(cfg, root)
                cell[str(seed)] = {m: v for m, v in scores(result).items() if m in METHODS}
                cell[str(seed)]["cluster_code"] = result["cluster_code"]["chosen"]
                print(f"{train} -> {target} seed {seed}: " + ", ".join(
                    f"{m} {100 * v['mIoU']:.1f}" for m, v in cell[str(seed)].items() if m in METHODS)
                    + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
                out["summary"] = {name: {m: mean_std([c[m]["mIoU"] for c in by_seed.values()]) for m in METHODS}
                                  for name, by_seed in cells.items() if by_seed}
                out["machine"] = machine()
                args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
