"""Dense predictions at the evaluation resolution from cached features, a head and a readout.

Per image: the code (or raw features) of the image and of its flipped-back mirror are averaged
(test-time flip augmentation), upsampled bilinearly to the label resolution, then read out:

* cluster readout: probabilities ``softmax(temperature * cos(x, mu_k))`` over unit centroids ``mu``;
* linear readout: ``softmax`` of the linear probe's logits.

Optionally the probabilities are refined with a dense CRF against the RGB image, then ``argmax``.

Without a CRF only the ``argmax`` is kept, and it is found at low resolution first (:meth:`Readout.labels`):
bilinear upsampling is linear, so the cluster scores ``x . mu_k`` (and a linear probe's logits) can be
computed on the ``(h, w)`` maps and then upsampled, ``K`` channels instead of ``D``; dividing by the
pixel's norm and a softmax do not change which ``k`` is largest. Same labels up to float rounding at
near-ties (measured on real runs in docs/RESULTS.md, "Predictions without upsampling the features").
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stego_core.probes import LinearProbe

logger = logging.getLogger(__name__)


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


class Readout(Protocol):
    """Maps ``(B, D, h, w)`` read out at ``size``: probabilities ``(B, K, H, W)`` (called), or their per-pixel
    ``argmax`` ``(B, H, W)`` computed without upsampling ``D`` channels (:meth:`labels`)."""

    num_outputs: int

    def __call__(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor: ...

    def labels(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor: ...


class ClusterReadout:
    """Nearest unit centroid by cosine: probabilities ``softmax(temperature * cos(x, mu_k))``."""

    def __init__(self, centroids: np.ndarray | torch.Tensor, temperature: float = 2.0) -> None:
        self.mu = F.normalize(torch.as_tensor(np.asarray(centroids), dtype=torch.float32), dim=1)
        self.temperature, self.num_outputs = temperature, int(self.mu.shape[0])

    def __call__(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.normalize(F.interpolate(maps, size=size, mode="bilinear", align_corners=False), dim=1)
        cos = torch.einsum("bdhw,kd->bkhw", x, self.mu.to(x.device))
        return torch.softmax(self.temperature * cos, dim=1)

    def labels(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        scores = torch.einsum("bdhw,kd->bkhw", maps, self.mu.to(maps.device))  # x . mu_k, before upsampling
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False).argmax(1)


class LinearReadout:
    """A linear probe's ``softmax``; a 1x1 conv commutes with bilinear upsampling, so it is applied first."""

    def __init__(self, probe: LinearProbe) -> None:
        self.probe, self.num_outputs = probe, int(probe.conv.out_channels)

    def logits(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.probe(maps), size=size, mode="bilinear", align_corners=False)

    def __call__(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return torch.softmax(self.logits(maps, size), dim=1)

    def labels(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.logits(maps, size).argmax(1)


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
    if readout.num_outputs > 255:
        raise ValueError(f"at most 255 clusters/classes can be stored as uint8, got {readout.num_outputs}")
    # What is upsampled is (B, C, H, W) float32: the D-channel maps for the CRF's probabilities (raw 384-d
    # features at 322 x 322 are 160 MB per image), the K scores otherwise. Cap B to stay under max_batch_bytes.
    channels = (getattr(head, "dim", None) or features.shape[1]) if crf is not None else readout.num_outputs
    batch = max(1, min(batch, int(max_batch_bytes // (4 * channels * size[0] * size[1]))))
    bar = tqdm(total=len(features), desc=desc, disable=not progress, leave=False)
    for rows, maps in dense_maps(features, features_flip, head, batch=batch, device=device):
        if crf is not None:
            refined = crf(list(range(rows.start, rows.stop)), readout(maps, size).cpu().numpy())
            out[rows] = np.stack([p.argmax(0) for p in refined]).astype(np.uint8)
        else:
            out[rows] = readout.labels(maps, size).cpu().numpy().astype(np.uint8)
        bar.update(rows.stop - rows.start)
    bar.close()
    return out
