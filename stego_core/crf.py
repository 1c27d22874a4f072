"""Fully connected CRF refinement of per-pixel class probabilities (Krähenbühl & Koltun, 2011).

STEGO refines its cluster probabilities with a dense CRF whose energy is

    E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j),
    U_i(l) = -log P_i(l),
    k = w_g exp(-|p_i - p_j|^2 / (2 sxy_g^2))
      + w_b exp(-|p_i - p_j|^2 / (2 sxy_b^2) - |I_i - I_j|^2 / (2 srgb^2)),

with Potts compatibility and mean-field inference (``pydensecrf``). The defaults of
:class:`CrfParams` are STEGO's: 10 iterations; Gaussian sxy=1, compat=3; bilateral sxy=67,
srgb=3, compat=4.

Example:
    >>> image = np.zeros((4, 6, 3), dtype=np.uint8)
    >>> probs = np.full((2, 4, 6), 0.5)  # (C, H, W), sums to 1 over C
    >>> dense_crf(image, probs).shape
    (2, 4, 6)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["CrfParams", "CrfPool", "dense_crf", "dense_crf_batch"]


@dataclass(frozen=True)
class CrfParams:
    """Dense CRF settings (``pydensecrf`` API); defaults are STEGO's.

    Attributes:
        iterations: mean-field iterations (>= 1).
        gaussian_sxy: spatial std of the smoothness kernel (pixels).
        gaussian_compat: weight of the smoothness kernel.
        bilateral_sxy: spatial std of the appearance kernel (pixels).
        bilateral_srgb: colour std of the appearance kernel (0-255 RGB units).
        bilateral_compat: weight of the appearance kernel.
        prob_clip: probabilities are clipped to ``[prob_clip, 1]`` before ``-log`` (pydensecrf's
            ``unary_from_softmax`` default, as used by STEGO).

    Raises:
        ValueError: if a field is out of range.
    """

    iterations: int = 10
    gaussian_sxy: float = 1
    gaussian_compat: float = 3
    bilateral_sxy: float = 67
    bilateral_srgb: float = 3
    bilateral_compat: float = 4
    prob_clip: float = 1e-5

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"CrfParams.iterations must be an integer >= 1, got {self.iterations!r}.")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"CrfParams.{name} must be a finite number > 0, got {value!r}.")
        for name in ("gaussian_compat", "bilateral_compat"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CrfParams.{name} must be a finite number >= 0, got {value!r}.")
        if not 0 < self.prob_clip < 1:
            raise ValueError(f"CrfParams.prob_clip must be in (0, 1), got {self.prob_clip!r}.")


def _validate(image: np.ndarray, probs: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"dense_crf: image must be an (H, W, 3) RGB numpy array, got {shape}.")
    if image.dtype != np.uint8:
        raise ValueError(
            f"dense_crf: image must be uint8 RGB (0-255), got dtype {image.dtype}; "
            f"un-normalise and convert with (x * 255).round().astype(np.uint8)."
        )
    if not isinstance(probs, np.ndarray) or probs.ndim != 3:
        shape = getattr(probs, "shape", type(probs).__name__)
        raise ValueError(f"dense_crf: probs must be a (C, H, W) numpy array, got {shape}.")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"dense_crf: probs must be floating point, got dtype {probs.dtype}.")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"dense_crf: probs spatial size {probs.shape[1:]} != image size {image.shape[:2]}; "
            f"upsample the probabilities to the image resolution first."
        )
    if probs.shape[0] < 2:
        raise ValueError(f"dense_crf: probs needs at least 2 classes on axis 0, got {probs.shape[0]}.")
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise ValueError("dense_crf: probs must be finite and non-negative.")
    sums = probs.sum(axis=0, dtype=np.float64)
    if not np.allclose(sums, 1.0, atol=1e-2):
        raise ValueError(
            f"dense_crf: probs must sum to 1 over axis 0 (classes), found sums in "
            f"[{sums.min():.4f}, {sums.max():.4f}]; apply a softmax over the class axis first."
        )


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CrfParams = CrfParams()) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        probs: ``(C, H, W)`` float probabilities, summing to 1 over ``C`` (tolerance 1e-2).
        params: CRF settings.

    Returns:
        ``(C, H, W)`` float32 refined probabilities (mean-field marginals, summing to 1 over ``C``).

    Raises:
        ValueError: on wrong shapes, dtypes, non-finite or unnormalised probabilities.
    """
    import pydensecrf.densecrf as dcrf

    _validate(image, probs)
    num_classes, height, width = probs.shape
    clipped = np.clip(probs.astype(np.float64), params.prob_clip, 1.0)
    # The C++ layer reads raw buffers: float32, C-contiguous, (C, H*W) unary and (H, W, 3) image.
    # Always copy the image: pydensecrf's typed memoryview also rejects read-only arrays (e.g.
    # np.asarray(PIL image)), which ascontiguousarray would pass through unchanged.
    unary = np.ascontiguousarray(-np.log(clipped).reshape(num_classes, -1), dtype=np.float32)
    rgb = np.array(image, dtype=np.uint8, order="C", copy=True)
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=rgb, compat=params.bilateral_compat
    )
    marginals = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return marginals.reshape(num_classes, height, width)


def _crf_job(job: tuple[np.ndarray, np.ndarray, CrfParams]) -> np.ndarray:
    """Top-level (picklable) worker for the process pool."""
    image, probs, params = job
    return dense_crf(image, probs, params)


class CrfPool:
    """A spawn-started process pool for :func:`dense_crf`, opened once and used for many batches.

    The pool uses the ``spawn`` start method: forking a process that has started torch's thread
    pools can deadlock. Each worker is single-threaded C++, so ``processes`` ~ CPU cores; ``1`` runs
    inline, with no pool. Starting the workers costs seconds (each imports numpy and pydensecrf), so a
    stage opens one pool for all its batches.

    Example:
        >>> with CrfPool(processes=2) as pool:
        ...     refined = pool.map(images, probs, CrfParams())

    Raises:
        ValueError: ``processes`` is not an integer >= 1 (or None: ``os.cpu_count()``).
    """

    def __init__(self, processes: int | None = None) -> None:
        if processes is None:
            processes = os.cpu_count() or 1
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"dense_crf_batch: processes must be an integer >= 1 (or None), got {processes!r}.")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> CrfPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def map(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray], params: CrfParams = CrfParams(),
            *, progress: bool = False) -> list[np.ndarray]:
        """:func:`dense_crf` of every ``(image, probs)`` pair, in order (arguments as :func:`dense_crf_batch`)."""
        if len(images) != len(probs):
            raise ValueError(f"dense_crf_batch: got {len(images)} images but {len(probs)} probability maps.")
        for index, (image, prob) in enumerate(zip(images, probs)):
            try:
                _validate(image, prob)
            except ValueError as err:
                raise ValueError(f"dense_crf_batch: item {index}: {err}") from err
        jobs = [(image, prob, params) for image, prob in zip(images, probs)]
        bar = tqdm(total=len(jobs), desc="dense CRF", unit="img", disable=not progress)
        results: list[np.ndarray] = []
        try:
            if min(self.processes, len(jobs)) <= 1:
                for job in jobs:
                    results.append(_crf_job(job))
                    bar.update(1)
            else:
                if self._pool is None:
                    logger.debug("CrfPool: starting %d spawned workers", self.processes)
                    self._pool = ProcessPoolExecutor(max_workers=self.processes,
                                                     mp_context=multiprocessing.get_context("spawn"))
                for refined in self._pool.map(_crf_job, jobs, chunksize=1):
                    results.append(refined)
                    bar.update(1)
        finally:
            bar.close()
        return results


def dense_crf_batch(
    images: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
    params: CrfParams = CrfParams(),
    *,
    processes: int | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Apply :func:`dense_crf` to many images, in order, in a spawn-started process pool of their own
    (:class:`CrfPool`; keep one open instead when there are many batches).

    Args:
        images: ``N`` images, each ``(H_i, W_i, 3)`` uint8.
        probs: ``N`` probability maps, each ``(C, H_i, W_i)``.
        params: CRF settings shared by all images.
        processes: worker count (default ``os.cpu_count()``); ``1`` runs inline, no pool.
        progress: show a tqdm progress bar.

    Returns:
        ``N`` refined ``(C, H_i, W_i)`` float32 arrays, in input order.

    Raises:
        ValueError: if the sequences differ in length or ``processes < 1``; any error raised by
            :func:`dense_crf` for an item.
    """
    with CrfPool(processes) as pool:
        return pool.map(images, probs, params, progress=progress)
