"""STEGO as a dimensionality reduction on CamVid with DINOv2 ViT-S/14 (docs/RESULTS.md).

The product's `dim_sweep` flow (children run in this process, tracking off, the shared artifact cache):
at each code dimension and seed the head is trained on CamVid train and scored beside PCA and a seeded
Gaussian random projection of the same backbone features to the same dimension, with the same k-means
readout and the same linear probe; the raw-feature baselines are the full-dimension reference. Scored on
val and on test (the heads are trained once: the test children take them from the cache). No CRF, so
that every row is the readout alone.

Runs seed by seed (val then test) and rewrites the JSON after each, so a stopped run keeps what it did.

    python bench/dim_sweep.py                                  # dims 3 9 27 70 128, seeds 0 1 2: ~12 min a seed on one CPU thread, features cached
    python bench/dim_sweep.py --dims 3 9 --seeds 0 --splits val
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import BEFORE_CLUSTERBOOK, ROOT, machine, parse_run_args, run_main  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "dim_sweep.json"
FIGURE = ROOT / "docs" / "dim_sweep_{split}.png"
PRESET = "camvid-dinov2s14"
COMMON = ["crf.enabled=false", *BEFORE_CLUSTERBOOK]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[3, 9, 27, 70, 128])
    ap.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"])
    args, root, previous = parse_run_args(ap, RESULTS)

    from flows.dim_sweep import PANELS, dim_sweep, dimension_table, markdown_table
    from stego_core.presets import build_config
    from tasks.figures import dimension_figure, save_png

    command = "python bench/dim_sweep.py " + " ".join(sys.argv[1:])
    # A rerun keeps the (split, seed) sweeps already in the JSON and runs the others.
    children: dict[str, list[dict]] = {s: previous.get("children", {}).get(s, []) for s in args.splits}
    out = {"what": __doc__.splitlines()[0], "command": command.strip(), "preset": PRESET, "overrides": COMMON,
           "dims": args.dims, "seeds": previous.get("seeds", []), "machine": machine(),
           "wall_s": previous.get("wall_s", {}), "children": children, "tables": previous.get("tables", {})}
    for seed in args.seeds:
        for split in args.splits:
            if f"{split}/seed{seed}" in out["wall_s"]:
                continue
            t0 = time.perf_counter()
            cfg = build_config(PRESET, overrides=COMMON + [f"data.eval_split={split}"])
            summary = dim_sweep.fn(config=cfg, dims=args.dims, seeds=[seed], deployment=None,
                                   artifact_root=root, tracking=False, check_inputs=False)
            children[split].extend(summary["children"])
            out["wall_s"][f"{split}/seed{seed}"] = round(time.perf_counter() - t0, 1)
            rows = dimension_table({"children": children[split]})
            out["tables"][split] = rows
            save_png(dimension_figure(rows, PANELS), Path(str(FIGURE).format(split=split)))
            print(f"--- {split}, seeds so far {out['seeds'] + [seed]} ---\n{markdown_table(rows)}", flush=True)
            args.json.write_text(json.dumps(out, indent=1))
        out["seeds"] = sorted(set(out["seeds"]) | {seed})
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
