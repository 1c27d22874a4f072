"""Dense features of a frozen backbone, computed once in batches and stored on disk (fp16).

Output folder layout (what the embed stage's artifact holds):

* ``features.npy``       ``(N, C, h, w)`` float16, h = w = resolution / patch
* ``features_flip.npy``  same, for the horizontally flipped image, flipped back to align (``flip=True``)
* ``labels.npy``         ``(N, R, R)`` uint8 class ids at the input resolution, 255 = void / unlabelled
* ``index.json``         stems and source paths, in row order

Decoding runs in a small thread pool (PIL and torch release the GIL) a few batches ahead of the
backbone, so reading overlaps compute without forked workers (forking under Prefect's threads made
DataLoader workers die at exit). On CUDA the forward pass runs under bf16 autocast with channels-last
inputs from pinned host memory.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def default_num_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def prefetch_batches(dataset, batch_size: int, workers: int, *, pin: bool = False, lookahead: int = 2) -> Iterator[dict]:
    """Collated batches of ``dataset`` in order, decoded by ``workers`` threads ``lookahead`` batches ahead."""
    def load(start: int) -> dict:
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {"image": torch.stack([it["image"] for it in items]), "label": torch.stack([it["label"] for it in items])}
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
) -> dict:
    """Run ``backbone`` over ``dataset`` (a :class:`~stego_core.data.SegmentationDataset`) into ``out_dir``.

    Returns a small summary ``{"num_images", "feature_shape", "flip"}``.
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
    workers = default_num_workers() if num_workers is None else num_workers
    loader = prefetch_batches(dataset, batch_size, workers, pin=device.type == "cuda")
    num_batches = (n + batch_size - 1) // batch_size
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    feats = flips = labels = None
    row = 0
    for batch in tqdm(loader, total=num_batches, desc=f"embed {n} images", disable=not progress, leave=False):
        images = batch["image"].to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            f = backbone(images).float()
            ff = backbone(images.flip(-1)).float().flip(-1) if flip else None
        b = f.shape[0]
        if feats is None:
            shape = (n, *f.shape[1:])
            feats = open_memmap(out / "features.npy", mode="w+", dtype=np.float16, shape=shape)
            if flip:
                flips = open_memmap(out / "features_flip.npy", mode="w+", dtype=np.float16, shape=shape)
            labels = open_memmap(out / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, *batch["label"].shape[1:]))
        feats[row : row + b] = f.cpu().numpy().astype(np.float16)
        if flip:
            flips[row : row + b] = ff.cpu().numpy().astype(np.float16)
        labels[row : row + b] = batch["label"].numpy().clip(0, 255).astype(np.uint8)
        row += b
    for arr in (feats, flips, labels):
        if arr is not None:
            arr.flush()
    index = [{"stem": s.stem, "image": str(s.image), "label": str(s.label) if s.label else None} for s in dataset.samples]
    (out / "index.json").write_text(json.dumps(index, indent=1))
    summary = {"num_images": n, "feature_shape": list(feats.shape), "flip": flip}
    logger.info("embedded %d images -> %s", n, summary["feature_shape"])
    return summary


def load_features(folder: str | os.PathLike, *, mmap: bool = True) -> dict:
    """Read an embed folder: ``{"features", "features_flip" (or None), "labels", "index"}``."""
    folder = Path(folder)
    mode = "r" if mmap else None
    flip_path = folder / "features_flip.npy"
    return {
        "features": np.load(folder / "features.npy", mmap_mode=mode),
        "features_flip": np.load(flip_path, mmap_mode=mode) if flip_path.exists() else None,
        "labels": np.load(folder / "labels.npy", mmap_mode=mode),
        "index": json.loads((folder / "index.json").read_text()),
    }
