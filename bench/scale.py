"""Memory, time and disk of every stage against the number of training crops (the scale issue's bench).

The project's own stage functions (:mod:`stego_core.stages`) on synthetic folders of 500, 1,000, 2,000
and 4,000 five-crops (100-800 images of 448 x 448, 27 classes) with two registered random backbones of
the paper's shapes: ``scale_vits8`` (ViT-S/8: 384 channels at stride 8, a ``Conv2d(3, 384, 8, stride=8)``)
and ``scale_r50`` (ResNet-50 at stride 8: 2048 channels). Each stage runs in a fresh process (spawned),
whose anonymous memory (``RssAnon`` of /proc: heap and tensors, not the page cache of memory-mapped
files) is sampled every 5 ms; the peak is reported above a bare process that imported the same
modules (measured in the same run). Also: wall time, the bytes the stage wrote, and the peak CUDA
memory when a GPU is present.

The memory budget is set small (``memory.host_gb`` / ``device_gb`` = 0.25 by default) so that the
streaming paths run at these sizes; a resident copy can never exceed the budget, so the default
settings (4 GB each) add at most 4 GB to what is measured here (the projection adds it).

``--code DIR`` runs the same stages from another checkout (e.g. the commit before the scale work)
for a before/after comparison in the same run; that code's stage signatures must match.

Usage::

    python bench/scale.py                                   # both shapes, 500..4000 crops (~1 h on 2 cores)
    python bench/scale.py --shapes scale_vits8 --sizes 500 1000 --json /tmp/scale_smoke.json
    python bench/scale.py --shapes scale_vits8 --sizes 1000 4000 --code /tmp/base-main --json bench/results/scale_before.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHAPES = {"scale_vits8": 384, "scale_r50": 2048}
CLASSES = 27
IMAGE_SIDE = 448  # five-crops of 224 x 224: the training resolution, no resize


# ------------------------------------------------------------------------------------------ the child
def register_shapes() -> None:
    """The random backbones of the paper's shapes, registered in this process."""
    import torch
    from torch import nn

    from stego_core.backbones import BACKBONES, register_backbone
    from stego_core.backbones.base import Backbone
    from stego_core.backbones.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

    class PatchConv(Backbone):
        def _dense(self, images: torch.Tensor) -> torch.Tensor:
            return self.model(images)

    for name, channels in SHAPES.items():
        if name in BACKBONES:
            continue
        spec = BackboneSpec(name=name, architecture=f"conv{channels}_stride8", patch_size=8, embed_dim=channels,
                            mean=IMAGENET_MEAN, std=IMAGENET_STD, weights="random (bench only)", hub_id=None,
                            url="file:///dev/null", license="n/a", default_source="hub")
        register_backbone(spec)(lambda c=channels, s=spec: PatchConv(s, nn.Conv2d(3, c, 8, stride=8)))


class AnonSampler:
    """Peak ``RssAnon`` of this process, sampled every ``period_s`` by a thread."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.peak, self.period, self.stop = 0, period_s, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.period)

    def __enter__(self) -> AnonSampler:
        self.peak = self.read()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.read())


def child(code: str | None, job: dict, queue) -> None:
    """Run one stage (``job["stage"]``) in this fresh process and report its measurements."""
    if code:
        sys.path.insert(0, code)
    else:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import numpy as np  # noqa: F401
        import torch

        from stego_core import stages
        from stego_core.config import ExperimentConfig

        register_shapes()
        cfg = ExperimentConfig.model_validate(job["config"])
        dirs = {k: Path(v) for k, v in job["dirs"].items()}
        out = dirs["out"]
        out.mkdir(parents=True, exist_ok=True)
        cuda = torch.cuda.is_available()
        calls = {
            "bare": lambda: None,
            "crop": lambda: stages.crop_stage(cfg, out),
            "embed": lambda: stages.embed_stage(cfg, "train", out, dirs["crop"]),
            "knn": lambda: stages.knn_stage(cfg, dirs["embed"], out),
            "train_head": lambda: stages.train_stage(cfg, dirs["embed"], dirs["knn"], out),
            "stego_kmeans": lambda: stages.cluster_stage(cfg, dirs["embed"], dirs["head"], out, CLASSES, "kmeans"),
            "stego_probe": lambda: stages.cluster_stage(cfg, dirs["embed"], dirs["head"], out, CLASSES, "probe"),
            "stego_linear": lambda: stages.linear_stage(cfg, dirs["embed"], dirs["head"], out, CLASSES),
            "raw_kmeans": lambda: stages.cluster_stage(cfg, dirs["embed"], None, out, CLASSES, "kmeans"),
            "raw_linear": lambda: stages.linear_stage(cfg, dirs["embed"], None, out, CLASSES),
        }
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with AnonSampler() as mem:
            summary = calls[job["stage"]]()
        wall = time.perf_counter() - started
        disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        queue.put({"ok": True, "wall_s": round(wall, 3), "peak_anon_bytes": mem.peak, "disk_bytes": disk,
                   "cuda_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                   "summary": summary if isinstance(summary, dict) else None})
    except BaseException as exc:  # reported to the parent, which stops the run
        import traceback

        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


def run_child(code: str | None, job: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(code, job, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if not result["ok"]:
        raise SystemExit(f"stage {job['stage']} failed: {result['error']}\n{result['traceback']}")
    return result


# ------------------------------------------------------------------------------------------ the parent
def make_folder(root: Path, images: int, seed: int = 0) -> Path:
    """``images`` smooth random 448 x 448 RGB images with blocky 27-class labels (cached by size)."""
    import numpy as np
    from PIL import Image

    folder = root / f"images{images}"
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(images):
        coarse = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC)
        img.save(folder / "images" / f"{i:05d}.jpg", quality=90)
        label = np.kron(rng.integers(0, CLASSES, size=(7, 7)), np.ones((64, 64), dtype=np.int64)).astype(np.uint8)
        Image.fromarray(label).save(folder / "labels" / f"{i:05d}.png")
    (folder / "done").write_text("ok")
    return folder


def experiment(folder: Path, backbone: str, args) -> dict:
    """The dinov2 recipe's readouts at the paper's resolution, on a folder dataset; few steps (memory does
    not depend on the step count), the budget of ``--host-gb`` / ``--device-gb``."""
    images, labels = str(folder / "images"), str(folder / "labels")
    return {
        "device": "auto", "seed": 0,
        "data": {"dataset": "folder", "train_images": images, "train_labels": labels, "eval_images": images,
                 "eval_labels": labels, "num_classes": CLASSES, "five_crop": True},
        "embed": {"backbone": backbone, "pretrained": False, "train_resolution": 224, "eval_resolution": 224,
                  "batch_size": 16},
        "train": {"steps": args.steps, "dim": 70, "batch_size": 16, "checkpoint_every": 0},
        "loss": {"shift_mode": "per_anchor", "calibration_batches": 2},
        "cluster": {"method": "kmeans", "select": "balance", "kmeans_restarts": args.restarts, "refine_steps": args.steps,
                    "probe_steps": args.steps},
        "linear": {"steps": args.steps, "loss_resolution": 32},
        "memory": {"host_gb": args.host_gb, "device_gb": args.device_gb},
    }


STAGES = ("bare", "crop", "embed", "knn", "train_head", "stego_kmeans", "stego_probe", "stego_linear", "raw_kmeans",
          "raw_linear")


def measure(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = previous_rows(args)
    for crops in args.sizes:  # size-major: a run stopped early still has every shape at the smaller sizes
        for backbone in args.shapes:
            if all(any(r["backbone"] == backbone and r["crops"] == crops and r["stage"] == s for r in rows) for s in STAGES):
                print(f"{backbone:12} {crops:5d} measured before ({args.json}), kept", flush=True)
                continue
            folder = make_folder(work / "data", crops // 5)
            run = work / "runs" / f"{backbone}-{crops}"
            shutil.rmtree(run, ignore_errors=True)
            cfg = experiment(folder, backbone, args)
            if args.code:  # the code before the budgets knows no memory section
                cfg.pop("memory")
            dirs = {"crop": run / "crop", "embed": run / "embed", "knn": run / "knn", "head": run / "head"}
            for stage in STAGES:
                out = {"crop": dirs["crop"], "embed": dirs["embed"], "knn": dirs["knn"], "train_head": dirs["head"]}.get(
                    stage, run / stage)
                res = run_child(args.code, {"stage": stage, "config": cfg,
                                            "dirs": {**{k: str(v) for k, v in dirs.items()}, "out": str(out)}})
                row = {"backbone": backbone, "channels": SHAPES[backbone], "crops": crops, "stage": stage,
                       **{k: v for k, v in res.items() if k not in ("ok", "summary")}}
                if res.get("summary"):
                    row["placement"] = res["summary"].get("features") or res["summary"].get("maps")
                rows.append(row)
                print(f"{backbone:12} {crops:5d} {stage:13} {row['wall_s']:8.1f} s  anon {row['peak_anon_bytes'] / 2**20:8.0f} MB"
                      f"  disk {row['disk_bytes'] / 2**20:8.0f} MB  {row.get('placement') or ''}", flush=True)
            if not args.keep:
                shutil.rmtree(run, ignore_errors=True)
            write_report(args, rows, complete=False)
    return rows


def previous_rows(args) -> list[dict]:
    """The rows of an earlier run of the same settings (``--resume``), else none."""
    if not (args.resume and args.json.exists()):
        return []
    old = json.loads(args.json.read_text())
    same = old.get("settings") == settings(args) and old.get("code") == (args.code or "this checkout")
    if not same:
        raise SystemExit(f"{args.json} was measured with other settings or code; drop --resume or pick another --json")
    return [r for r in old["rows"] if r["backbone"] in args.shapes and r["crops"] in args.sizes]


def complete_sizes(rows: list[dict]) -> list[int]:
    """The sizes at which every shape in ``rows`` ran every stage."""
    shapes = {r["backbone"] for r in rows}
    done = {(r["backbone"], r["crops"], r["stage"]) for r in rows}
    return sorted(n for n in {r["crops"] for r in rows} if all((b, n, s) in done for b in shapes for s in STAGES))


GROWTH_FROM = 1000


def growth_table(rows: list[dict]) -> list[dict]:
    """Per backbone and stage: peak anonymous memory above the bare process at each size, and its growth
    from the smallest size of at least :data:`GROWTH_FROM` crops (below it fixed costs dominate) to the largest
    size that the shape completed (1,000 -> 4,000 by default)."""
    out = []
    for backbone in sorted({r["backbone"] for r in rows}):
        sizes = complete_sizes([r for r in rows if r["backbone"] == backbone])
        if len(sizes) < 2:
            continue
        bare = {r["crops"]: r["peak_anon_bytes"] for r in rows if r["backbone"] == backbone and r["stage"] == "bare"}
        for stage in STAGES[1:]:
            by = {r["crops"]: r for r in rows if r["backbone"] == backbone and r["stage"] == stage}
            if not by:
                continue
            above = {n: by[n]["peak_anon_bytes"] - bare[n] for n in sizes if n in by}
            lo, hi = next((n for n in sizes if n >= GROWTH_FROM), sizes[0]), sizes[-1]
            disk_slope = (by[hi]["disk_bytes"] - by[lo]["disk_bytes"]) / max(hi - lo, 1)
            wall_slope = (by[hi]["wall_s"] - by[lo]["wall_s"]) / max(hi - lo, 1)
            out.append({"backbone": backbone, "stage": stage, "anon_above_bare_mb": {n: round(v / 2**20, 1) for n, v in above.items()},
                        "growth_mb": round((above[hi] - above[lo]) / 2**20, 1), "from_to": [lo, hi],
                        "anon_ratio_to_bare": round(by[hi]["peak_anon_bytes"] / bare[hi], 2),
                        "disk_bytes_per_crop": round(disk_slope), "wall_s_per_1000_crops": round(1000 * wall_slope, 2),
                        "wall_s": {n: by[n]["wall_s"] for n in sizes if n in by},
                        "disk_mb": {n: round(by[n]["disk_bytes"] / 2**20, 1) for n in sizes if n in by},
                        "placement": by[hi].get("placement")})
    return out


# ------------------------------------------------------------------------------------------ projection
DATASETS = {"COCO-Stuff-27 (curated)": 248_145, "Cityscapes-27": 14_875, "Potsdam-3": 8_550}
BACKBONES = {"ViT-S/8": (384, 28), "ViT-B/8": (768, 28), "ResNet-50 /8": (2048, 28), "DINOv2-S/14": (384, 16)}
DEFAULT_BUDGET_GB = 4.0


def projection(growth: list[dict]) -> list[dict]:
    """Host memory and disk per dataset x backbone at the default settings.

    A stage's host memory = its measured peak above the bare process at the largest size, plus its
    per-crop growth from the second-smallest to the largest size (about zero when it streams) times the
    extra crops, for the measured shape of the same channel count (ViT-B/8: linear in C between the
    two shapes; DINOv2-S/14: the 384-channel shape, whose 28 x 28 grid holds more tokens than 16 x 16),
    plus what the default 4 GB budget lets it hold resident (the smaller of the table and 4 GB). Disk =
    the crops, the embed artifact (features, labels, descriptors) and a 70-d scratch code, from the
    file formats (the measured per-crop slopes agree), at 224 px crops.
    """
    from stego_core.budget import code_bytes, crop_bytes, embed_bytes

    by = {(g["backbone"], g["stage"]): g for g in growth}
    out = []
    for dataset, crops in DATASETS.items():
        for name, (channels, grid) in BACKBONES.items():
            feats = embed_bytes(crops, channels=channels, grid=grid, label_side=224, flip=False, features=True)
            code = code_bytes(crops, dim=70, grid=grid)
            per_stage = {}
            for stage in STAGES[1:]:
                points = [(SHAPES[b], projected_mb(by[(b, stage)], crops)) for b in SHAPES if (b, stage) in by]
                if not points:
                    continue
                resident = {"train_head": feats, "stego_kmeans": code, "stego_probe": code, "stego_linear": code}.get(stage, 0)
                per_stage[stage] = interpolate(points, channels) / 1024 + min(resident / 2**30, DEFAULT_BUDGET_GB)
            worst = max(per_stage, key=per_stage.get)
            out.append({"dataset": dataset, "crops": crops, "backbone": name,
                        "disk_gb": round((crop_bytes(crops, 224) + feats + code) / 2**30, 1),
                        "features_gb": round(feats / 2**30, 1), "peak_host_gb_above_bare": round(per_stage[worst], 2),
                        "peak_stage": worst, "per_stage_gb": {k: round(v, 2) for k, v in per_stage.items()}})
    return out


def projected_mb(g: dict, crops: int) -> float:
    lo, hi = g["from_to"]
    return g["anon_above_bare_mb"][hi] + max(g["growth_mb"], 0.0) / max(hi - lo, 1) * max(crops - hi, 0)


def interpolate(points: list[tuple[int, float]], x: int) -> float:
    """Linear in x between the measured points, the nearest point's value outside them."""
    points = sorted(points)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000, 4000], help="training crops")
    parser.add_argument("--steps", type=int, default=10, help="head / probe / refinement steps (memory does not depend on them)")
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--host-gb", type=float, default=0.25)
    parser.add_argument("--device-gb", type=float, default=0.25)
    parser.add_argument("--work", default="/tmp/stego-scale-bench")
    parser.add_argument("--code", default=None, help="run the stages of another checkout (before/after)")
    parser.add_argument("--keep", action="store_true", help="keep each run's artifacts")
    parser.add_argument("--json", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--resume", action="store_true", help="keep the sizes --json already holds for these settings")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    args.started = time.perf_counter()
    rows = measure(args)
    report = write_report(args, rows, complete=True)
    growth = report["growth"]
    print(f"\n| backbone | stage | anon above bare at {args.sizes} (MB) | growth {growth[0]['from_to'] if growth else ''} MB | disk B/crop | placement |")
    print("|---|---|---|---|---|---|")
    for g in growth:
        print(f"| {g['backbone']} | {g['stage']} | {list(g['anon_above_bare_mb'].values())} | {g['growth_mb']} | "
              f"{g['disk_bytes_per_crop']} | {g['placement'] or ''} |")
    print("\n| dataset | backbone | disk GB | peak host GB above a bare process (stage) |\n|---|---|---|---|")
    for p in report["projection"]:
        print(f"| {p['dataset']} | {p['backbone']} | {p['disk_gb']} | {p['peak_host_gb_above_bare']} ({p['peak_stage']}) |")
    print(f"wrote {args.json}")


def settings(args) -> dict:
    return {"steps": args.steps, "restarts": args.restarts, "host_gb": args.host_gb, "device_gb": args.device_gb}


def write_report(args, rows: list[dict], *, complete: bool) -> dict:
    """The JSON report of ``rows`` so far (rewritten after every measured size, so a stopped run keeps them)."""
    import torch

    growth = growth_table(rows)
    report = {
        "what": "stage functions on synthetic five-crop folders: peak anonymous memory (RssAnon) above a bare process, "
                "wall time, disk written; fresh process per stage",
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
        "code": args.code or "this checkout", "complete": complete, "settings": settings(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "total_s": round(time.perf_counter() - args.started, 1),
        "rows": rows, "growth": growth, "projection": projection(growth) if len({g["backbone"] for g in growth}) > 1 else [],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
