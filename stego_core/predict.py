"""Dense predictions at the evaluation resolution from cached features, a head and a readout.

Per image: the code (or raw features) of the image and of its flipped-back mirror are averaged
(test-time flip augmentation), upsampled bilinearly to the label resolution, then read out:

* cluster readout: probabilities ``softmax(temperature * cos(x, mu_k))`` over unit centroids ``mu``;
* linear readout: ``softmax`` of the linear probe's logits.

Optionally the probabilities are refined with a dense CRF against the RGB image, then ``argmax``.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stego_core.probes import LinearProbe

logger = logging.getLogger(__name__)

Readout = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]  # (B, D, h, w), size -> (B, K, H, W) probabilities


@torch.no_grad()
def dense_maps(
    features: np.ndarray, features_flip: np.ndarray | None, head: torch.nn.Module | None, *,
    batch: int = 16, device: str | torch.device = "cpu",
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, maps)``: the head's code (or the raw features if ``head`` is None) per batch,
    averaged with the flipped view when ``features_flip`` is given. ``maps`` is ``(B, D, h, w)`` float32."""
    def run(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        return head(t) if head is not None else t

    if head is not None:
        head.eval()
    for start in range(0, len(features), batch):
        rows = slice(start, min(start + batch, len(features)))
        maps = run(features[rows])
        if features_flip is not None:
            maps = (maps + run(features_flip[rows])) / 2
        yield rows, maps.float()


def cluster_readout(centroids: np.ndarray | torch.Tensor, temperature: float = 2.0) -> Readout:
    mu = F.normalize(torch.as_tensor(np.asarray(centroids), dtype=torch.float32), dim=1)

    def readout(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.normalize(F.interpolate(maps, size=size, mode="bilinear", align_corners=False), dim=1)
        cos = torch.einsum("bdhw,kd->bkhw", x, mu.to(x.device))
        return torch.softmax(temperature * cos, dim=1)

    return readout


def linear_readout(probe: LinearProbe) -> Readout:
    def readout(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # A 1x1 conv commutes with bilinear upsampling: apply it at low resolution, then upsample.
        logits = F.interpolate(probe(maps), size=size, mode="bilinear", align_corners=False)
        return torch.softmax(logits, dim=1)

    return readout


def predict(
    features: np.ndarray,
    features_flip: np.ndarray | None,
    head: torch.nn.Module | None,
    readout: Readout,
    size: tuple[int, int],
    *,
    crf: Callable[[Sequence[int], np.ndarray], list[np.ndarray]] | None = None,
    batch: int = 16,
    max_batch_bytes: float = 512e6,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "predict",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Class/cluster id per pixel ``(N, H, W)`` uint8, written into ``out`` when given (e.g. a memmap).

    ``crf(rows, probs)`` if given refines a batch of probabilities ``(B, K, H, W)`` for dataset rows
    ``rows`` and returns refined ``(K, H, W)`` arrays (it owns the RGB images and the process pool).
    """
    if out is None:
        out = np.empty((len(features), *size), dtype=np.uint8)
    # Upsampled maps are (B, D, H, W) float32: cap B so a batch stays under max_batch_bytes (raw 384-d
    # features at 322 x 322 are 160 MB per image).
    channels = getattr(head, "dim", None) or features.shape[1]  # a head's or a projection's code dimension
    batch = max(1, min(batch, int(max_batch_bytes // (4 * channels * size[0] * size[1]))))
    bar = tqdm(total=len(features), desc=desc, disable=not progress, leave=False)
    for rows, maps in dense_maps(features, features_flip, head, batch=batch, device=device):
        probs = readout(maps, size)
        if probs.shape[1] > 255:
            raise ValueError(f"at most 255 clusters/classes can be stored as uint8, got {probs.shape[1]}")
        if crf is not None:
            refined = crf(list(range(rows.start, rows.stop)), probs.cpu().numpy())
            out[rows] = np.stack([p.argmax(0) for p in refined]).astype(np.uint8)
        else:
            out[rows] = probs.argmax(1).cpu().numpy().astype(np.uint8)
        bar.update(rows.stop - rows.start)
    bar.close()
    return out
