"""Dense CRF benchmark: images/s with one process and with a pool over all cores, at 320x320.

Inputs: real CamVid val frames resized to 320x320 and smoothed random probability maps (random logits
on a coarse 10x10 grid, bilinearly upsampled, softmax over classes), with 11 and 27 classes and
STEGO's CRF settings (``CrfParams()``, 10 mean-field iterations). For each class count:

- bare baseline: a plain loop of ``stego_core.crf.dense_crf`` in this process;
- ``dense_crf_batch(processes=1)`` (inline, no pool) against that loop: the wrapper's overhead;
- ``dense_crf_batch(processes=os.cpu_count())`` (spawn pool, start-up included) against the
  one-process run: the scaling ratio (ideal = number of cores).

Usage::

    python bench/crf.py                  # 16 images per setting, writes bench/results/crf.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

from stego_core.crf import CrfParams, dense_crf, dense_crf_batch

SIZE = 320


def load_images(image_dir: Path, count: int) -> list[np.ndarray]:
    paths = sorted(image_dir.glob("*.jpg"))[:count]
    if len(paths) < count:
        raise SystemExit(f"need {count} images in {image_dir}, found {len(paths)}; pass --data-root")
    return [np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for p in paths]


def smooth_probs(num_classes: int, count: int, seed: int = 0, grid: int = 10) -> list[np.ndarray]:
    """``count`` maps of shape (C, SIZE, SIZE): softmax of bilinearly upsampled coarse random logits."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        logits = zoom(rng.normal(0, 3, (num_classes, grid, grid)), (1, SIZE / grid, SIZE / grid), order=1)
        e = np.exp(logits - logits.max(axis=0, keepdims=True))
        out.append((e / e.sum(axis=0, keepdims=True)).astype(np.float32))
    return out


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("STEGO_DATA_ROOT", "/work/shared/data")))
    parser.add_argument("--images", type=int, default=16, help="images per setting")
    parser.add_argument("--classes", type=int, nargs="+", default=[11, 27])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="pool size (default: all cores)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "crf.json")
    args = parser.parse_args()

    images = load_images(args.data_root / "camvid" / "images" / "val", args.images)
    params = CrfParams()
    dense_crf(images[0], smooth_probs(2, 1)[0], params)  # warm-up: import pydensecrf, page in the library
    rows = []
    started_all = time.perf_counter()
    for num_classes in args.classes:
        probs = smooth_probs(num_classes, args.images)
        n = len(images)
        t_bare = timed(lambda: [dense_crf(i, p, params) for i, p in zip(images, probs)])
        t_one = timed(lambda: dense_crf_batch(images, probs, params, processes=1, progress=False))
        t_pool = timed(lambda: dense_crf_batch(images, probs, params, processes=args.processes, progress=False))
        rows.append({
            "classes": num_classes, "images": n, "size": SIZE, "pool_processes": args.processes,
            "bare_loop_img_s": round(n / t_bare, 3), "one_process_img_s": round(n / t_one, 3),
            "pool_img_s": round(n / t_pool, 3),
            "one_process_vs_bare": round(t_bare / t_one, 3),
            "scaling_pool_vs_one": round(t_one / t_pool, 3),
            "scaling_efficiency": round(t_one / t_pool / args.processes, 3),
            "seconds": {"bare": round(t_bare, 2), "one_process": round(t_one, 2), "pool": round(t_pool, 2)},
        })
        print(f"C={num_classes}: bare {t_bare:.1f}s, 1 proc {t_one:.1f}s, pool {t_pool:.1f}s", flush=True)

    report = {
        "what": f"stego_core.crf dense CRF (CrfParams defaults, {params.iterations} iterations) on CamVid val frames "
                f"resized to {SIZE}x{SIZE} with smoothed random probability maps; pool = spawn ProcessPoolExecutor, "
                "start-up included",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "python bench/crf.py " + " ".join(sys.argv[1:]),
        "rows": rows, "wall_s": round(time.perf_counter() - started_all, 1),
    }
    print(f"\n| classes | images | bare loop img/s | 1 process img/s (vs bare) | pool x{args.processes} img/s "
          "| scaling (pool / 1 proc) | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['classes']} | {r['images']} | {r['bare_loop_img_s']} | {r['one_process_img_s']} "
              f"({r['one_process_vs_bare']}x) | {r['pool_img_s']} | {r['scaling_pool_vs_one']}x | "
              f"{r['scaling_efficiency']} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json} in {report['wall_s']} s")


if __name__ == "__main__":
    main()
