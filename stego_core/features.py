"""Dense features of a frozen backbone, computed once in batches and stored on disk (fp16).

Output folder layout (what the embed stage's artifact holds):

* ``features.npy``       ``(N, C, h, w)`` float16, h = w = resolution / patch (not with ``store_features=False``)
* ``features_flip.npy``  same, for the horizontally flipped image, flipped back to align (``flip=True``)
* ``labels.npy``         ``(N, R, R)`` uint8 class ids at the input resolution, 255 = void / unlabelled
* ``descriptors.npy``    ``(N, C)`` float32: each image's features averaged over the grid (the KNN's input)
* ``index.json``         stems and source paths, in row order
* ``recompute.json``     (``store_features=False``) what :func:`open_embedding` needs to recompute the
  features from the crop folder's pixels: the ``train.features=recompute`` mode

A sharded split's embed folder holds ``shards.json`` instead (the part folders, in row order); its
tables are read through :func:`stego_core.access.open_table` as one.

The pixels come from a :class:`~stego_core.data.CropArrays` (the training crops, stored as uint8:
read in slices by one thread a few batches ahead, no decoding) or are decoded a few batches ahead of
the backbone, in one of two loaders that give the same bytes (``loader``):

* ``threads``: a small thread pool (PIL and torch release the GIL). The default on CPU: no worker
  processes at all (forking under Prefect's threads made DataLoader workers die at exit), and on two
  cores the backbone needs the cores anyway.
* ``processes``: a torch DataLoader over worker processes started by a fork server (never forked
  from this, possibly threaded, process), pinned batches. The default on CUDA with more than one
  worker and enough images to pay for the fork server's start (``PROCESSES_MIN_IMAGES``): there
  decoding, not the GPU, is the bottleneck, and threads stop scaling at the GIL.

Workers return uint8 pixels and uint8 labels (a quarter / an eighth of the float32 / int64 bytes to
move); the normalisation runs batched on the device with the dataset's own float32 formula. On
CUDA the forward pass runs under bf16 autocast on channels-last inputs, and the features are cast
to float16 on the GPU before they are copied back.
"""
from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import sys
import types
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from stego_core.access import ConcatRows, MappedRows, open_table, read_index, shard_folders
from stego_core.data import CropArrays

logger = logging.getLogger(__name__)


def default_num_workers(device: str | torch.device = "cpu") -> int:
    """Cores - 1, at most 4 on CPU (the backbone needs the cores too), at most 16 on CUDA (decoding is
    the bottleneck there)."""
    return max(1, min(16 if torch.device(device).type == "cuda" else 4, (os.cpu_count() or 1) - 1))


Loader = Literal["auto", "threads", "processes"]


# Images from which ``auto`` starts worker processes. Their fork server imports torch and the main
# module's imports once per Python process: 8-9 s on the 16-core H100 machine (bench/embed.py), where
# processes decode ~1,100 images/s against ~350-600 for threads, so they pay off from ~5,000 images
# (or at once, when an earlier embed call of this process already started the server).
PROCESSES_MIN_IMAGES = 5000
_FORK_SERVER = {"started": False}


def resolve_loader(loader: Loader, device: torch.device, workers: int, num_images: int | None = None) -> str:
    """``auto`` -> ``processes`` on CUDA with more than one worker and at least
    ``PROCESSES_MIN_IMAGES`` images (any number once the fork server runs), else ``threads``."""
    if loader not in ("auto", "threads", "processes"):
        raise ValueError(f"embed.loader must be 'auto', 'threads' or 'processes', got {loader!r}")
    if loader == "auto":
        big = num_images is None or num_images >= PROCESSES_MIN_IMAGES or _FORK_SERVER["started"]
        return "processes" if device.type == "cuda" and workers > 1 and big else "threads"
    return loader


def collate_batch(items: list[dict]) -> dict:
    """Stack items into ``{"image", "label"}``; labels become uint8 (clipped to 0..255, as stored)."""
    return {"image": torch.stack([it["image"] for it in items]),
            "label": torch.stack([it["label"] for it in items]).clamp_(0, 255).to(torch.uint8)}


def prefetch_batches(dataset, batch_size: int, workers: int, *, pin: bool = False, lookahead: int = 2) -> Iterator[dict]:
    """Collated batches of ``dataset`` in order, decoded by ``workers`` threads ``lookahead`` batches ahead
    (a dataset with ``read_batch(start, stop)``, such as stored crops, is read in slices instead)."""
    def load(start: int) -> dict:
        stop = min(start + batch_size, len(dataset))
        if hasattr(dataset, "read_batch"):
            batch = dataset.read_batch(start, stop)
        else:
            batch = collate_batch([dataset[i] for i in range(start, stop)])
        if pin:
            batch["image"] = batch["image"].pin_memory()
        return batch

    starts = iter(range(0, len(dataset), batch_size))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque(pool.submit(load, s) for _, s in zip(range(lookahead + max(1, workers)), starts))
        while pending:
            batch = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield batch


def process_batches(dataset, batch_size: int, workers: int, *, pin: bool = False, prefetch: int = 2) -> Iterator[dict]:
    """The same batches as :func:`prefetch_batches`, decoded by ``workers`` processes, each
    ``prefetch`` batches ahead (held in /dev/shm: 16 workers x 2 x 64 images at 322 px ~ 0.8 GB).
    The workers fork from a fork server that has imported the data code and the main module's
    imports once, so they start fast and inherit no threads or CUDA state."""
    if workers < 1:
        return prefetch_batches(dataset, batch_size, 1, pin=pin)
    ctx = multiprocessing.get_context("forkserver")
    _FORK_SERVER["started"] = True
    ctx.set_forkserver_preload(["stego_core.data", *_main_imports()])  # read once, when the server starts
    return iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_batch,
                           pin_memory=pin, multiprocessing_context=ctx, prefetch_factor=prefetch,
                           persistent_workers=False))


def _main_imports() -> list[str]:
    """The modules the main script pulled in (torch, timm, Prefect...). Each worker re-runs the main
    module (multiprocessing's spawn rule; preloading ``__main__`` itself does not work before Python
    3.14), so the fork server imports these once and the re-run finds them already imported."""
    main = sys.modules.get("__main__")
    names = {v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
             for v in vars(main).values()} if main else set()
    return sorted(n for n in names if isinstance(n, str) and n not in ("__main__", "builtins"))


def embed_batch(backbone: torch.nn.Module, images: torch.Tensor, *, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The backbone on a normalised batch already on its device, as the embed stage runs it (bf16
    autocast and channels-last on CUDA): features, and those of the flipped images flipped back."""
    cuda = images.device.type == "cuda"
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False):
        f = backbone(images)
        ff = backbone(images.flip(-1)).flip(-1) if flip else None
    return f, ff


def _to_float16(f: torch.Tensor) -> np.ndarray:
    """float32 -> float16 (round to nearest even, as numpy's ``astype``) on the device, then to host."""
    return f.float().to(torch.float16).cpu().numpy()


def grid_means(f16: np.ndarray) -> np.ndarray:
    """``(B, C, h, w)`` stored (float16) features -> their float32 means over the grid ``(B, C)``: the rows of
    ``descriptors.npy``, the same numbers :func:`stego_core.knn.global_descriptors` computes before it normalises."""
    return np.asarray(f16, dtype=np.float32).mean(axis=(2, 3))


@torch.inference_mode()
def extract_features(
    backbone: torch.nn.Module,
    dataset,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    flip: bool = False,
    progress: bool = True,
    loader: Loader = "auto",
    store_features: bool = True,
) -> dict:
    """Run ``backbone`` over ``dataset`` (a :class:`~stego_core.data.SegmentationDataset`, or the stored
    crops of a :class:`~stego_core.data.CropArrays`) into ``out_dir``. With ``store_features=False`` only
    the labels, descriptors and index are written (the features are recomputed when read).

    Returns a small summary ``{"num_images", "feature_shape", "flip", "loader"}``.
    """
    if batch_size < 1:
        raise ValueError(f"embed.batch_size must be >= 1, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    backbone = backbone.to(device).eval()
    n = len(dataset)
    if n == 0:
        raise ValueError("no images to embed")
    workers = default_num_workers(device) if num_workers is None else num_workers
    stored = hasattr(dataset, "read_batch")
    if stored:  # uint8 crops already: slices of a memmap, read one thread ahead
        kind, pixels, workers = "stored crops", dataset, 1
    else:
        kind = resolve_loader(loader, device, workers, n)
        pixels = copy.copy(dataset)  # same samples, uint8 images: normalised below, on the device
        pixels.normalize = False
    load = process_batches if kind == "processes" else prefetch_batches
    batches = load(pixels, batch_size, workers, pin=device.type == "cuda")
    num_batches = (n + batch_size - 1) // batch_size
    feats = flips = labels = descriptors = None
    flip = flip and store_features
    row = 0
    for batch in tqdm(batches, total=num_batches, desc=f"embed {n} images", disable=not progress, leave=False):
        images, label = batch["image"].to(device, non_blocking=True), batch["label"]
        if device.type == "cuda":  # uint8 is the cheap place to change the layout; normalising keeps it
            images = images.contiguous(memory_format=torch.channels_last)
        f, ff = embed_batch(backbone, dataset.normalize_images(images), flip=flip)
        b = f.shape[0]
        if labels is None:
            shape = (n, *f.shape[1:])
            if store_features:
                feats = open_memmap(out / "features.npy", mode="w+", dtype=np.float16, shape=shape)
            if flip:
                flips = open_memmap(out / "features_flip.npy", mode="w+", dtype=np.float16, shape=shape)
            labels = open_memmap(out / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, *label.shape[1:]))
            descriptors = open_memmap(out / "descriptors.npy", mode="w+", dtype=np.float32, shape=shape[:2])
        f16 = _to_float16(f)
        if store_features:
            feats[row : row + b] = f16
        if flip:
            flips[row : row + b] = _to_float16(ff)
        labels[row : row + b] = label.numpy()
        descriptors[row : row + b] = grid_means(f16)
        row += b
    for arr in (feats, flips, labels, descriptors):
        if arr is not None:
            arr.flush()
    if stored:
        index = dataset.index()
    else:
        index = [{"stem": s.stem, "image": str(s.image), "label": str(s.label) if s.label else None} for s in dataset.samples]
    (out / "index.json").write_text(json.dumps(index, indent=1))
    summary = {"num_images": n, "feature_shape": [n, *shape[1:]], "flip": flip, "loader": kind,
               "features": "stored" if store_features else "recomputed when read"}
    logger.info("embedded %d images -> %s (%s loader, %d workers)", n, summary["feature_shape"], kind, workers)
    return summary


RECOMPUTE_FILE = "recompute.json"


@dataclass
class Embedding:
    """The tables of an embed folder (:func:`open_embedding`); ``features_flip`` is None without flip TTA,
    ``descriptors`` in a folder written before they were stored."""

    folder: Path
    features: Any
    features_flip: Any | None
    labels: Any
    descriptors: Any

    @cached_property
    def index(self) -> list[dict]:
        """Stems and source paths in row order (read on first use: large for big splits)."""
        return read_index(self.folder)


BackboneFactory = Callable[[dict], torch.nn.Module]


def open_embedding(folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                   backbone_factory: BackboneFactory | None = None) -> Embedding:
    """The tables of an embed folder, sharded or not, as tables (:mod:`stego_core.access`): memmaps, shards
    read as one, and for a ``train.features=recompute`` folder, features recomputed on demand by the frozen
    backbone (on ``device``) from the stored crops, exactly as the embed stage computed its descriptors.

    ``backbone_factory(spec)`` builds the backbone from the ``recompute.json`` spec (default:
    :func:`~stego_core.backbones.create_backbone`); one backbone is built per call, shared by all shards.
    """
    folder = Path(folder)
    built: dict[str, torch.nn.Module] = {}

    def backbone_for(spec: dict) -> torch.nn.Module:
        key = json.dumps({k: spec[k] for k in ("backbone", "weights", "pretrained")}, sort_keys=True)
        if key not in built:
            if backbone_factory is not None:
                built[key] = backbone_factory(spec)
            else:
                from stego_core.backbones import create_backbone

                built[key] = create_backbone(spec["backbone"], weights=spec["weights"], pretrained=spec["pretrained"])
            built[key] = built[key].to(device).eval()
        return built[key]

    return Embedding(folder=folder, features=_features_table(folder, torch.device(device), backbone_for),
                     features_flip=open_table(folder, "features_flip.npy", required=False),
                     labels=open_table(folder, "labels.npy"),
                     descriptors=open_table(folder, "descriptors.npy", required=False))


def _features_table(folder: Path, device: torch.device, backbone_for: Callable[[dict], torch.nn.Module]):
    parts = shard_folders(folder)
    if parts is not None:
        return ConcatRows([_features_table(p, device, backbone_for) for p in parts])
    spec_path = folder / RECOMPUTE_FILE
    if not spec_path.is_file():
        return open_table(folder, "features.npy")
    spec = json.loads(spec_path.read_text())
    crops = CropArrays(folder / spec["crops"], mean=spec["mean"], std=spec["std"])

    @torch.inference_mode()
    def recompute(pixels: np.ndarray) -> np.ndarray:
        backbone = backbone_for(spec)
        images = crops.normalize_images(torch.from_numpy(np.array(pixels)).to(device))
        return _to_float16(embed_batch(backbone, images)[0])

    return MappedRows(crops.pixels, recompute, row_shape=spec["feature_shape"], dtype=np.float16,
                      batch=spec.get("batch_size", 8), what=f"features recomputed by {spec['backbone']}")
