"""GPU benchmark of the CamVid pipeline: embed throughput, head-training speed, accuracy, dynamics.

Calls ``stego_core`` directly (no Prefect, no MLflow) with the ``camvid-dinov2s14`` preset
(CRF off, ``device=auto``), writing every stage into ``WORK``. Two phases, runnable apart:

* ``micro`` (needs no data): bf16 matmul rate, backbone FLOPs per image (``FlopCounterMode``), a
  bare backbone loop on pre-loaded tensors (bf16 autocast, channels-last) at the embed stage's
  batch sizes, and head-training steps/s with cached features versus rerunning the backbone on
  the image and its KNN partner every step (the reference STEGO design), on synthetic inputs.
* ``pipeline`` (needs CamVid train + val): crop, embed (timed per batch size), KNN, the preset's
  head, cluster probe / k-means / linear probe readouts, raw-feature baselines, and a grid of
  ``train.steps x train.lr``; every finished stage is skipped on a rerun (``WORK/<stage>/done.json``),
  and ``--deadline`` stops the grid early with partial results.

Usage::

    python bench/gpu_camvid.py WORK --phase all --weights W.safetensors --data-root ROOT --json OUT.json
    python bench/gpu_camvid.py /tmp/w --phase all --data-root .gpudata --set data.train_limit=4 \
        --set data.eval_limit=2 --grid-steps 5 --grid-lrs 5e-4 --embed-batches 2   # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script from anywhere: make the repository importable
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("gpu_camvid")
PRESET = "camvid-dinov2s14"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


# ------------------------------------------------------------------------------------- micro
def matmul_rate(device: torch.device) -> dict:
    """Dense matmul FLOP/s: bf16 8192^3 on CUDA (fp32 1024^3 on CPU), mean of 10 after 3 warm-ups."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    dt = (time.perf_counter() - t0) / 10
    return {"n": n, "dtype": str(dtype), "tflops": 2 * n**3 / dt / 1e12}


def backbone_flops(backbone, resolution: int, device: torch.device) -> int:
    """FLOPs (2 x multiply-adds, as counted by FlopCounterMode) of one image's forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, resolution, resolution, device=device)
    with FlopCounterMode(display=False) as counter, autocast(device):
        backbone(x)
    return int(counter.get_total_flops())


def bare_loop(backbone, n: int, resolution: int, batch: int, device: torch.device, flip: bool, repeats: int = 3) -> dict:
    """Backbone forward over ``n`` pre-loaded random images in batches (+ flipped copy): images/s,
    best and median of ``repeats`` timed passes after one untimed warm-up pass."""
    x = torch.randn(n, 3, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)

    def one_pass() -> float:
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(device):
            for s in range(0, n, batch):
                xb = x[s : s + batch]
                backbone(xb)
                if flip:
                    backbone(xb.flip(-1))
        sync(device)
        return time.perf_counter() - t0

    one_pass()  # warm-up (kernel selection, clocks)
    walls = sorted(one_pass() for _ in range(repeats))
    return {"images": n, "resolution": resolution, "batch": batch, "flip": flip, "wall_s": walls[0],
            "images_per_s": n / walls[0], "images_per_s_median": n / walls[len(walls) // 2], "repeats": repeats}


class BackboneSampler:
    """The reference design as a :class:`~stego_core.sampling.PairSampler` stand-in: every batch
    runs the frozen backbone (bf16 autocast) on the images and their KNN partners."""

    def __init__(self, backbone, images: torch.Tensor, knn: np.ndarray, batch_size: int, device: torch.device):
        self.backbone, self.images, self.knn = backbone, images, knn
        self.batch_size, self.device = batch_size, device
        self.rng = np.random.default_rng(0)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.rng.choice(len(self.images), self.batch_size, replace=False)
        pos = self.knn[idx, self.rng.integers(0, self.knn.shape[1], len(idx))]
        with autocast(self.device):
            return self.backbone(self.images[idx]), self.backbone(self.images[pos])


def head_speed(backbone, device: torch.device, *, n: int, steps: int, batch: int, resolution: int) -> dict:
    """Steps/s of ``train_head`` with cached features vs. the backbone rerun every step."""
    from stego_core.losses import ContrastiveCorrelationLoss
    from stego_core.sampling import PairSampler
    from stego_core.training import train_head

    grid = resolution // backbone.patch_size
    rng = np.random.default_rng(0)
    knn = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, 29))], axis=1)
    loss_fn = ContrastiveCorrelationLoss(shifts={"self": 0.5, "knn": 0.5, "rand": 0.6},
                                         weights={"self": 0.67, "knn": 0.25, "rand": 0.63})

    def timed(sampler, k: int) -> float:
        train_head(sampler, loss_fn, in_dim=backbone.embed_dim, dim=70, steps=max(2, k // 10), progress=False)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        train_head(sampler, loss_fn, in_dim=backbone.embed_dim, dim=70, steps=k, progress=False, log_every=10**9)
        sync(device)
        return k / (time.perf_counter() - t0)

    feats = rng.standard_normal((n, backbone.embed_dim, grid, grid), dtype=np.float32).astype(np.float16)
    cached = timed(PairSampler(feats, knn, batch_size=batch, num_neighbors=7, device=device), steps)
    m = min(n, 256)
    images = torch.randn(m, 3, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)
    knn_img = rng.integers(0, m, (m, 7))
    rerun = timed(BackboneSampler(backbone, images, knn_img, batch, device), max(2, steps // 4))
    return {"batch": batch, "resolution": resolution, "cached_steps_per_s": cached,
            "rerun_steps_per_s": rerun, "speedup": cached / rerun}


def run_micro(weights: str | None, device: torch.device, args) -> dict:
    from stego_core.backbones import create_backbone

    pretrained = weights is not None and not args.random_weights
    backbone = create_backbone("dinov2_vits14", weights=weights if pretrained else None, pretrained=pretrained).to(device).eval()
    res: dict = {"matmul": matmul_rate(device)}
    rate = res["matmul"]["tflops"] * 1e12
    res["flops_per_image"] = {str(r): backbone_flops(backbone, r, device) for r in (args.train_res, args.eval_res)}
    res["bare_loop"] = []
    for b in args.embed_batches:
        for r, n, flip in ((args.train_res, args.n_train, False), (args.eval_res, args.n_eval, True)):
            row = bare_loop(backbone, n, r, b, device, flip, repeats=args.repeats)
            floor = rate / (res["flops_per_image"][str(r)] * (2 if flip else 1))  # images/s at the matmul rate
            row.update(floor_images_per_s=floor, fraction_of_floor=row["images_per_s"] / floor)
            res["bare_loop"].append(row)
            logger.info("bare loop %s", row)
    res["head_speed"] = head_speed(backbone, device, n=args.n_train, steps=args.head_steps, batch=16, resolution=args.train_res)
    logger.info("head speed %s", res["head_speed"])
    return res


# ---------------------------------------------------------------------------------- pipeline
class _CpuBatches:
    """A sampler view whose batches are moved to the CPU (see ``guard_calibration``)."""

    def __init__(self, sampler):
        self.sampler, self.seed = sampler, sampler.seed

    def next_batch(self):
        return tuple(t.cpu() for t in self.sampler.next_batch())


def guard_calibration(device: torch.device) -> str | None:
    """Probe ``calibration.correlation_statistics`` on ``device``; if it fails there, route its
    batches through the CPU (same batches, same numbers) and return the error it raised."""
    from stego_core import calibration
    from stego_core.sampling import PairSampler

    if device.type == "cpu":
        return None
    feats = np.random.default_rng(0).standard_normal((4, 8, 4, 4)).astype(np.float16)
    probe = PairSampler(feats, np.tile(np.arange(4), (4, 1)), batch_size=2, num_neighbors=1, device=device)
    original = calibration.correlation_statistics
    try:
        original(probe, batches=1, feature_samples=3)
        return None
    except Exception as exc:  # noqa: BLE001 - recorded and reported
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    logger.warning("calibration.correlation_statistics fails on %s (%s); routing its batches via CPU", device, error)
    calibration.correlation_statistics = lambda sampler, **kw: original(_CpuBatches(sampler), **kw)
    return error


class Pipeline:
    """The stages of one preset, each cached in ``work/<name>`` with its wall time."""

    def __init__(self, args, device: torch.device):
        from stego_core import stages
        from stego_core.presets import build_config

        self.stages, self.build, self.device, self.work = stages, build_config, device, Path(args.work)
        from bench.protocol import BEFORE_CLUSTERBOOK

        self.base = ["crf.enabled=false", *BEFORE_CLUSTERBOOK, "device=auto", *([f"data.data_root={args.data_root}"] if args.data_root else []),
                     *([f"embed.weights={args.weights}"] if args.weights else []), *args.set]
        info = stages.split_info(self.cfg(), "eval")
        self.k, self.names = info.num_classes, info.class_names

    def cfg(self, *extra: str):
        return self.build(PRESET, overrides=[*self.base, *extra])

    def stage(self, name: str, fn) -> dict:
        folder = self.work / name
        done = folder / "done.json"
        if done.exists():
            return json.loads(done.read_text())
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        summary = fn(folder)
        sync(self.device)
        rec = {"summary": summary, "wall_s": time.perf_counter() - t0}
        done.write_text(json.dumps(rec))
        logger.info("%s: %.2f s %s", name, rec["wall_s"], summary)
        return rec

    def train(self, steps: int, lr: float) -> tuple[str, dict]:
        name = f"head_s{steps}_lr{lr:g}"

        def fn(d):
            marks: list[tuple[int, float]] = []
            summary = self.stages.train_stage(self.cfg(f"train.steps={steps}", f"train.lr={lr}"), self.embed_train,
                                              self.work / "knn", d, callback=lambda s, row: marks.append((s, time.perf_counter())))
            if len(marks) > 1:
                summary["steps_per_s"] = (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1])
            summary["correlation_stats"] = json.loads((d / "loss.json").read_text()).get("correlation_stats")
            return summary

        return name, self.stage(name, fn)

    def score(self, pred_dir: Path, matched: bool) -> dict:
        from stego_core.features import open_embedding

        preds = np.load(pred_dir / "predictions.npy")
        labels = np.asarray(open_embedding(self.embed_eval).labels)
        k = max(int(preds.max()) + 1, self.k) if matched else self.k
        m = self.stages.evaluate_predictions(preds, labels, num_predictions=k, num_classes=self.k, matched=matched,
                                             class_names=self.names)
        counts = np.bincount(preds.ravel(), minlength=k)
        labelled = np.bincount(preds[labels != 255], minlength=k)
        return {"accuracy": m["accuracy"], "mIoU": m["mIoU"], "per_class_iou": m["per_class_iou"],
                "largest_cluster_fraction": float(counts.max() / counts.sum()),
                "largest_cluster_fraction_labelled": float(labelled.max() / max(1, labelled.sum())),
                "clusters_used": int((counts > 0).sum())}

    def readouts(self, tag: str, head: str | None, cluster_methods=("probe", "kmeans")) -> dict:
        """Cluster readouts (unmatched ids, Hungarian-scored) and the linear probe of one code."""
        s, hd = self.stages, (self.work / head if head else None)
        out = {}
        for method in (*cluster_methods, "linear"):
            rname, pname = f"{tag}_readout_{method}", f"{tag}_pred_{method}"
            if method == "linear":
                self.stage(rname, lambda d: s.linear_stage(self.cfg(), self.embed_train, hd, d, self.k))
            else:
                self.stage(rname, lambda d: s.cluster_stage(self.cfg(), self.embed_train, hd, d, self.k, method=method))
            pred = self.stage(pname, lambda d: s.predict_stage(self.cfg(), self.embed_eval, hd, self.work / rname, d))
            out[method] = {**self.score(self.work / pname, matched=method != "linear"), "predict_wall_s": pred["wall_s"]}
        return out


def decode_only(dataset, batch: int, workers: int) -> float:
    """Images/s of the embed stage's decoding side alone (``prefetch_batches``, no backbone)."""
    from stego_core.features import prefetch_batches

    t0 = time.perf_counter()
    n = sum(len(b["image"]) for b in prefetch_batches(dataset, batch, workers))
    return n / (time.perf_counter() - t0)


def run_embed_scaling(args, device: torch.device, results: dict, save) -> None:
    """Embed stage images/s per (batch, decoding workers), next to decoding alone."""
    from stego_core.backbones import get_backbone_spec
    from stego_core.data import CropArrays, SegmentationDataset

    p = Pipeline(args, device)
    s = p.stages
    p.stage("crop", lambda d: s.crop_stage(p.cfg(), d))
    p.stage("embed_warmup", lambda d: s.embed_stage(p.cfg("data.eval_limit=2"), "eval", d))
    from stego_core.backbones import create_backbone

    e = p.cfg().embed
    spec = get_backbone_spec(e.backbone)
    t0 = time.perf_counter()
    create_backbone(e.backbone, weights=e.weights, pretrained=e.pretrained).to(device)
    sync(device)
    results["embed_backbone_setup_s"] = time.perf_counter() - t0  # paid once per embed stage call
    rows = results.setdefault("embed_scaling", [])
    for w in args.embed_workers:
        for b in args.embed_batches:
            for role in ("train", "eval"):
                cfg = p.cfg(f"embed.batch_size={b}", f"embed.num_workers={w}")
                rec = p.stage(f"embed_{role}_b{b}_w{w}", lambda d: s.embed_stage(
                    cfg, role, d, crop_dir=p.work / "crop" if role == "train" else None))
                info = s.split_info(cfg, "eval")
                res = rec["summary"]["resolution"]
                if role == "train":  # the stored crops: read, not decoded
                    ds = CropArrays(p.work / "crop", mean=spec.mean, std=spec.std)
                else:
                    ds = SegmentationDataset(info.samples, resolution=res, mean=spec.mean, std=spec.std, num_classes=p.k,
                                             label_map=info.label_map, ignore_index=info.ignore_index)
                n = rec["summary"]["num_images"]
                rows.append({"role": role, "batch": b, "workers": w, "images": n, "resolution": res,
                             "wall_s": rec["wall_s"], "images_per_s": n / rec["wall_s"],
                             "decode_only_images_per_s": decode_only(ds, b, w)})
                logger.info("embed scaling %s", rows[-1])
                save()


def run_pipeline(args, device: torch.device, results: dict, save) -> None:
    t_start = time.perf_counter()
    results["calibration_device_error"] = guard_calibration(device)
    p = Pipeline(args, device)
    s = p.stages
    res = results.setdefault("pipeline", {})
    res["crop"] = p.stage("crop", lambda d: s.crop_stage(p.cfg(), d))
    crop_dir = p.work / "crop"
    res["embed_warmup"] = p.stage("embed_warmup", lambda d: s.embed_stage(p.cfg("data.eval_limit=2"), "eval", d))
    res["embed"] = []
    for b in args.embed_batches:
        for role in ("train", "eval"):
            name = f"embed_{role}_b{b}"
            rec = p.stage(name, lambda d: s.embed_stage(p.cfg(f"embed.batch_size={b}"), role, d,
                                                          crop_dir=crop_dir if role == "train" else None))
            n = rec["summary"]["num_images"]
            res["embed"].append({"role": role, "batch": b, "images": n, "wall_s": rec["wall_s"], "images_per_s": n / rec["wall_s"],
                                 "resolution": rec["summary"]["resolution"], "flip": rec["summary"]["flip"]})
    p.embed_train = p.work / f"embed_train_b{args.embed_batches[-1]}"
    p.embed_eval = p.work / f"embed_eval_b{args.embed_batches[-1]}"
    if len(args.embed_batches) > 1:  # same features whatever the batch size?
        a = np.load(p.work / f"embed_train_b{args.embed_batches[0]}" / "features.npy", mmap_mode="r")
        b = np.load(p.embed_train / "features.npy", mmap_mode="r")
        res["embed_batch_max_abs_diff"] = float(max(np.abs(a[i:i + 256].astype(np.float32) - b[i:i + 256]).max()
                                                    for i in range(0, len(a), 256)))
    res["knn"] = p.stage("knn", lambda d: s.knn_stage(p.cfg(), p.embed_train, d))
    save()
    # 3. the preset as configured (1000 steps, lr 5e-4), plus the raw-feature baselines
    cfg = p.cfg()
    head, rec = p.train(cfg.train.steps, cfg.train.lr)
    res["preset"] = {"head": head, "train": rec, "stego": p.readouts(head, head)}
    res["raw"] = p.readouts("raw", None, cluster_methods=("kmeans",))
    save()
    # 4. training dynamics
    res["grid"] = []
    for steps in args.grid_steps:
        for lr in args.grid_lrs:
            if time.perf_counter() - t_start > args.deadline:
                res["grid"].append({"steps": steps, "lr": lr, "skipped": "deadline"})
                continue
            head, rec = p.train(steps, lr)
            res["grid"].append({"steps": steps, "lr": lr, "train_wall_s": rec["wall_s"],
                                "steps_per_s": rec["summary"].get("steps_per_s"), "final_loss": rec["summary"]["final_loss"],
                                **{m: {"accuracy": v["accuracy"], "mIoU": v["mIoU"], "largest": v["largest_cluster_fraction"]}
                                   for m, v in p.readouts(head, head).items()}})
            save()


# ------------------------------------------------------------------------------------ report
def fmt_table(rows: list[dict], cols: list[str]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), *(line(b) for b in body)])


def report(results: dict) -> str:
    out = [f"device: {results.get('device')}"]
    micro = results.get("micro")
    if micro:
        out.append(f"matmul: {micro['matmul']['tflops']:.1f} TFLOP/s ({micro['matmul']['dtype']}); "
                   f"FLOPs/image: {micro['flops_per_image']}")
        out.append(fmt_table(micro["bare_loop"], ["resolution", "batch", "flip", "images", "wall_s", "images_per_s",
                                                  "floor_images_per_s", "fraction_of_floor"]))
        h = micro["head_speed"]
        out.append(f"head training (batch {h['batch']}): cached {h['cached_steps_per_s']:.1f} steps/s, backbone rerun "
                   f"{h['rerun_steps_per_s']:.1f} steps/s, speed-up {h['speedup']:.1f}x")
    pipe = results.get("pipeline", {})
    if pipe.get("embed"):
        rows = pipe["embed"]
        bare = {(r["resolution"], r["batch"]): r["images_per_s"] for r in (micro or {}).get("bare_loop", [])}
        for r in rows:
            if (r["resolution"], r["batch"]) in bare:
                r["stage/bare"] = r["images_per_s"] / bare[(r["resolution"], r["batch"])]
        out.append(fmt_table(rows, ["role", "resolution", "batch", "flip", "images", "wall_s", "images_per_s", "stage/bare"]))
    if "preset" in pipe:
        t = pipe["preset"]["train"]["summary"]
        out.append(f"preset head: shifts {t['shifts']}, final loss {t['final_loss']:.4f}, {t.get('steps_per_s', 0):.1f} steps/s")
        rows = [{"method": f"stego_{'cluster_' + m if m != 'linear' else m}", **v} for m, v in pipe["preset"]["stego"].items()]
        rows += [{"method": f"raw_{m}", **v} for m, v in pipe.get("raw", {}).items()]
        out.append(fmt_table(rows, ["method", "accuracy", "mIoU", "largest_cluster_fraction", "clusters_used"]))
    if pipe.get("grid"):
        rows = [{"steps": g["steps"], "lr": g["lr"], "loss": g.get("final_loss"), "steps/s": g.get("steps_per_s"),
                 **{f"{m}_mIoU": g[m]["mIoU"] for m in ("probe", "kmeans", "linear") if m in g},
                 "probe_largest": g.get("probe", {}).get("largest"), "skipped": g.get("skipped", "")} for g in pipe["grid"]]
        out.append(fmt_table(rows, ["steps", "lr", "loss", "steps/s", "probe_mIoU", "kmeans_mIoU", "linear_mIoU",
                                    "probe_largest", "skipped"]))
    if results.get("embed_scaling"):
        out.append(fmt_table(results["embed_scaling"], ["role", "resolution", "batch", "workers", "images", "wall_s",
                                                        "images_per_s", "decode_only_images_per_s"]))
    return "\n\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", help="work folder for the stage outputs (reused: finished stages are skipped)")
    ap.add_argument("--phase", choices=("micro", "pipeline", "all", "embed"), default="all",
                    help="embed: crop + embed stage timings per --embed-workers only (not part of 'all')")
    ap.add_argument("--random-weights", action="store_true", help="random backbone weights (timings only)")
    ap.add_argument("--embed-workers", type=lambda v: [int(x) for x in v.split(",")], default=[4],
                    help="phase embed: decoding thread counts to try")
    ap.add_argument("--repeats", type=int, default=3, help="micro: timed passes per bare-loop setting (best reported)")
    ap.add_argument("--weights", help="DINOv2 ViT-S/14 weights file (.safetensors/.pth); default: the preset's source")
    ap.add_argument("--data-root", help="folder holding camvid/{images,labels}/{train,val}")
    ap.add_argument("--json", help="results file (default WORK/gpu_camvid.json); merged with an existing one")
    ap.add_argument("--set", action="append", default=[], help="extra config override key=value (repeatable)")
    ap.add_argument("--embed-batches", type=lambda v: [int(x) for x in v.split(",")], default=[32, 64])
    ap.add_argument("--grid-steps", type=lambda v: [int(x) for x in v.split(",")], default=[250, 500, 1000, 2000])
    ap.add_argument("--grid-lrs", type=lambda v: [float(x) for x in v.split(",")], default=[1e-4, 5e-4])
    ap.add_argument("--n-train", type=int, default=1835, help="micro: images in the train-resolution loop")
    ap.add_argument("--n-eval", type=int, default=101, help="micro: images in the eval-resolution loop")
    ap.add_argument("--train-res", type=int, default=224)
    ap.add_argument("--eval-res", type=int, default=322)
    ap.add_argument("--head-steps", type=int, default=400, help="micro: cached-feature steps timed (rerun: a quarter)")
    ap.add_argument("--deadline", type=float, default=480.0, help="pipeline: seconds after which grid points are skipped")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from stego_core.training import resolve_device

    device = resolve_device("auto")
    json_path = Path(args.json) if args.json else work / "gpu_camvid.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results.setdefault("wall_s", {})

    def save() -> None:
        json_path.write_text(json.dumps(results, indent=1, default=float))

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.random_weights:
        args.set = [*args.set, "embed.pretrained=false"]
        args.weights = None
    for phase in ("micro", "pipeline", "embed"):
        if args.phase != phase and not (args.phase == "all" and phase != "embed"):
            continue
        t0 = time.perf_counter()
        if phase == "micro":
            results["micro"] = run_micro(args.weights, device, args)
        elif phase == "embed":
            run_embed_scaling(args, device, results, save)
        else:
            run_pipeline(args, device, results, save)
        results["wall_s"][phase] = time.perf_counter() - t0
        save()
    print(report(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
