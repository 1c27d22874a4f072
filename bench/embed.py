"""Embed stage throughput against a bare backbone loop, measured in the same run.

(a) The stage: :func:`stego_core.features.extract_features` end to end (read + decode + resize on the
    loader's workers, normalise, forward, cast to float16, write ``features.npy`` / ``labels.npy``)
    on a real :class:`~stego_core.data.SegmentationDataset` of CamVid frames (the split's files
    repeated to ``--images``), into a temporary folder, per loader (threads / processes) and
    worker count.
(b) The bare loop: the same backbone object on ``--images`` pre-loaded random tensors already on
    the device, same batch size, same torch thread count, and the forward the stage runs
    (:func:`stego_core.features.embed_batch`: bf16 autocast + channels-last on CUDA).

Passes alternate (bare, stage per loader, bare, ...) after a warm-up; each figure is the best of
``--repeats``. Ratio = stage images/s / bare images/s. Timed apart, not in the stage figures: the
backbone's construction (weights read; once per stage call) and the start of the processes
loader's fork server (once per Python process; ``first_call_images_per_s`` counts it). Also
reported: decoding alone (the loader without a backbone), whether the loaders wrote identical
bytes, on CUDA whether the device-side normalisation / float16 cast give the CPU's bits, and a
summary (best ratio, the ceiling decoding alone allows).

Usage::

    python bench/embed.py --images 32 --repeats 3          # CPU, writes bench/results/embed_cpu.json
    python bench/embed.py --device cuda --random-weights --images 2048 --batch-size 64 --workers 4,8,15 --repeats 3
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Before torch loads OpenMP: with actively spinning OpenMP threads the bare loop ran 2.3x slower than
# the same forward inside the stage on the shared 2-core machine (the stage's decoding thread makes
# libgomp throttle its spinning); passive waiting gives both the same, faster, conditions.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from bench.gpu_camvid import fmt_table, sync
from stego_core.backbones import create_backbone
from stego_core.data import SegmentationDataset, dataset_samples, resolve_data_root
from stego_core.features import (
    _to_float16,
    default_num_workers,
    embed_batch,
    extract_features,
    prefetch_batches,
    process_batches,
    resolve_loader,
)

RESULTS = Path(__file__).resolve().parent / "results"


def camvid_dataset(args, backbone) -> SegmentationDataset:
    files = dataset_samples("camvid", args.split, args.data_root)
    samples = [files[i % len(files)] for i in range(args.images)]
    return SegmentationDataset(samples, resolution=args.resolution, mean=backbone.spec.mean, std=backbone.spec.std,
                               num_classes=11, label_map="camvid11")


def raw_pixels(ds: SegmentationDataset) -> SegmentationDataset:
    """The dataset as the stage's loaders read it: uint8 images."""
    raw = copy.copy(ds)
    raw.normalize = False
    return raw


def bare_pass(backbone, x: torch.Tensor, batch: int, flip: bool) -> float:
    """Seconds for the stage's forward over pre-loaded ``x`` (on the device) in batches."""
    sync(x.device)
    started = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            embed_batch(backbone, x[s : s + batch], flip=flip)
    sync(x.device)
    return time.perf_counter() - started


def stage_pass(backbone, ds, args, device, loader: str, workers: int, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    sync(device)
    started = time.perf_counter()
    extract_features(backbone, ds, out, batch_size=args.batch_size, num_workers=workers, device=device,
                     flip=args.flip, progress=False, loader=loader)
    sync(device)
    return time.perf_counter() - started


def decode_pass(ds, args, loader: str, workers: int, pin: bool) -> float:
    """Images/s of the loader alone (uint8 batches, as the stage asks for them), no backbone."""
    load = process_batches if loader == "processes" else prefetch_batches
    batches = load(raw_pixels(ds), args.batch_size, workers, pin=pin)
    started = time.perf_counter()
    n = sum(len(b["image"]) for b in batches)
    return n / (time.perf_counter() - started)


def device_checks(ds, backbone, device: torch.device) -> dict:
    """On CUDA: the device-side normalisation and float16 cast give the CPU's bits (every uint8 value,
    every channel; 1M floats), and a batch normalised on the GPU embeds to the same features as the
    same batch normalised on the CPU (the old recipe)."""
    if device.type != "cuda":
        return {}
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    cpu = ds.normalize_images(values)
    gpu = ds.normalize_images(values.to(device)).cpu()
    x = torch.randn(1_000_000) * 10.0 ** torch.randint(-9, 6, (1_000_000,))
    with np.errstate(over="ignore"):
        expected = x.numpy().astype(np.float16)
    half_same = np.array_equal(_to_float16(x.to(device)).view(np.uint16), expected.view(np.uint16))
    items = [ds[i] for i in range(min(8, len(ds)))]
    pixels = torch.stack([raw_pixels(ds)[i]["image"] for i in range(len(items))])
    with torch.inference_mode():
        f_old, _ = embed_batch(backbone, torch.stack([it["image"] for it in items]).to(device))
        f_new, _ = embed_batch(backbone, ds.normalize_images(pixels.to(device)))
    return {"normalise_cuda_equals_cpu": bool(torch.equal(cpu, gpu)), "float16_cast_cuda_equals_numpy": bool(half_same),
            "features_gpu_normalised_equal_cpu_normalised": bool(torch.equal(f_old, f_new))}


def run(args) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    weights = None if args.random_weights else args.weights
    backbone = create_backbone(args.backbone, weights=weights, pretrained=not args.random_weights).to(device).eval()
    sync(device)
    setup_s = time.perf_counter() - started
    if args.resolution % backbone.patch_size:
        raise SystemExit(f"--resolution {args.resolution} is not a multiple of the patch size {backbone.patch_size}")
    ds = camvid_dataset(args, backbone)
    x = torch.randn(args.images, 3, args.resolution, args.resolution, device=device)
    work = Path(tempfile.mkdtemp(prefix="stego-embed-bench-"))
    loaders = [(loader, w) for loader in args.loaders for w in args.workers]
    rows = [{"loader": resolve_loader(loader, device, w, args.images), "workers": w} for loader, w in loaders]
    checks = device_checks(ds, backbone, device)
    # warm-up: kernels / clocks, the page cache, the fork server
    with torch.inference_mode():
        embed_batch(backbone, x[: args.batch_size], flip=args.flip)
    started = time.perf_counter()
    next(iter(process_batches(raw_pixels(ds), 1, 1)))  # starts the fork server: once per process, not per stage
    fork_server_s = time.perf_counter() - started
    for row in rows:
        row["decode_only_images_per_s"] = decode_pass(ds, args, row["loader"], row["workers"], device.type == "cuda")
    bare, stage = [], {i: [] for i in range(len(rows))}
    for _ in range(args.repeats):
        bare.append(bare_pass(backbone, x, args.batch_size, args.flip))
        for i, row in enumerate(rows):
            stage[i].append(stage_pass(backbone, ds, args, device, row["loader"], row["workers"], work / f"out{i}"))
    bare_rate = args.images / min(bare)
    out0 = work / "out0"
    for i, row in enumerate(rows):
        rate = args.images / min(stage[i])
        first = args.images / (min(stage[i]) + (fork_server_s if row["loader"] == "processes" else 0.0))
        row.update(stage_wall_s=round(min(stage[i]), 3), stage_images_per_s=round(rate, 1),
                   first_call_images_per_s=round(first, 1),
                   bare_images_per_s=round(bare_rate, 1), ratio=round(rate / bare_rate, 3),
                   decode_only_images_per_s=round(row["decode_only_images_per_s"], 1),
                   same_bytes_as_first=all((work / f"out{i}" / f).read_bytes() == (out0 / f).read_bytes()
                                           for f in ("features.npy", "labels.npy")))
    shutil.rmtree(work, ignore_errors=True)
    res = {
        "key": f"{args.backbone}_r{args.resolution}_b{args.batch_size}{'_flip' if args.flip else ''}",
        "backbone": args.backbone, "weights": "random" if args.random_weights else (args.weights or "default (offline)"),
        "resolution": args.resolution, "batch_size": args.batch_size, "flip": args.flip, "images": args.images,
        "split": args.split, "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "backbone_setup_s": round(setup_s, 2),
        "fork_server_start_s": round(fork_server_s, 2),
        "bare": {"wall_s": [round(t, 3) for t in bare], "images_per_s": round(bare_rate, 1)},
        "rows": rows, "checks": checks,
    }
    res["summary"] = summarize(res)
    return res


def summarize(res: dict) -> dict:
    """The best stage row against the bare loop, and what decoding alone allows (its ceiling)."""
    best = max(res["rows"], key=lambda r: r["ratio"])
    ceiling = max(r["decode_only_images_per_s"] for r in res["rows"]) / res["bare"]["images_per_s"]
    verdict = ("meets the 0.9 target" if best["ratio"] >= 0.9 else
               f"below the 0.9 target: decode-bound (decoding alone reaches {ceiling:.2f} of the bare loop)"
               if ceiling < 0.9 else "below the 0.9 target with decoding fast enough: the stage's own work is the gap")
    return {"best_loader": best["loader"], "best_workers": best["workers"], "best_ratio": best["ratio"],
            "decode_ceiling_ratio": round(ceiling, 3), "verdict": verdict}


def machine(device: torch.device) -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_args(argv=None):
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", default="dinov2_vits14")
    ap.add_argument("--weights", help="local weights file (default: the backbone's offline default source)")
    ap.add_argument("--random-weights", action="store_true", help="random init: same speed, no weights to read")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU (the config's), 64 on CUDA")
    ap.add_argument("--images", type=int, default=None, help="images per pass (default 32 on CPU, 2048 on CUDA)")
    ap.add_argument("--split", default="train", help="CamVid split whose frames are read (repeated as needed)")
    ap.add_argument("--data-root", default=None, help="folder holding camvid/ (default $STEGO_DATA_ROOT)")
    ap.add_argument("--flip", action="store_true", help="also embed the flipped images (the eval role)")
    ap.add_argument("--loaders", type=lambda v: v.split(","), default=["threads", "processes"])
    ap.add_argument("--workers", type=ints, default=None, help="decoding workers to try (default: the stage's default)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes of each (best kept)")
    ap.add_argument("--json", type=Path, default=None, help="default bench/results/embed_<device>.json (runs merged by key)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.batch_size = args.batch_size or (64 if cuda else 8)
    args.images = args.images or (2048 if cuda else 32)
    args.workers = args.workers or [default_num_workers(args.device)]
    args.data_root = str(resolve_data_root(args.data_root))
    args.json = args.json or RESULTS / f"embed_{'cuda' if cuda else 'cpu'}.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    res = run(args)
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report.update(what="embed stage (extract_features on CamVid frames, end to end) vs bare backbone loop on "
                       "pre-loaded tensors, same batch size / threads / autocast / channels-last, same run",
                  machine=machine(device))
    report.setdefault("runs", {})[res["key"]] = {**res, "command": "python bench/embed.py " + " ".join(sys.argv[1:])}
    print(f"{res['key']} on {report['machine'].get('gpu', 'cpu')}, {res['images']} images, {res['torch_threads']} torch "
          f"threads, backbone setup {res['backbone_setup_s']} s, fork server start {res['fork_server_start_s']} s (once per process, not in the stage figures); bare loop {res['bare']['images_per_s']} img/s")
    print(fmt_table(res["rows"], ["loader", "workers", "decode_only_images_per_s", "stage_wall_s", "stage_images_per_s",
                                  "bare_images_per_s", "ratio", "first_call_images_per_s", "same_bytes_as_first"]))
    if res["checks"]:
        print("checks:", res["checks"])
    print("summary:", res["summary"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
