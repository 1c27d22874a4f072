"""Memory budgets and disk plans: the one place that decides what may be resident and what fits on disk.

No stage may hold a table that grows with the dataset unless a budget allows it. A table (features,
code) is *resident* (one copy in host or device memory) when it fits its budget, and otherwise
*streamed*: read batch by batch from its memory-mapped file. Both give the same numbers, so the
budget is a property of the machine, never of the experiment (it is in no cache key).

Disk is planned before a stage writes: :func:`require_disk` compares the bytes a stage will write
with the free bytes of the file system it writes to, and refuses with a message that says both,
where, and what to do.

Example:
    >>> budget = MemoryBudget(host_bytes=4 * GB, device_bytes=4 * GB)
    >>> budget.resident(360e6, "cpu")
    (True, 'resident in host memory (360 MB, budget 4096 MB)')
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

GB = 1 << 30
MB = 1 << 20
Placement = Literal["auto", "resident", "stream"]
# Headroom kept free on a file system after a planned write: logs, manifests, checkpoints, other jobs.
DISK_HEADROOM_BYTES = 256 * MB


class DiskSpaceError(ValueError):
    """A stage would write more bytes than its file system has free (a ValueError: never retried)."""


def human_bytes(n: float) -> str:
    """``1536 -> '1.5 KB'`` (powers of 1024, one decimal above a KB)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes a stage may fill with resident copies, on the host and on a GPU, and the placement rule.

    ``placement='auto'`` keeps a table resident when it fits the budget of the memory it would live in
    (host for a CPU device, device memory for CUDA); ``'resident'`` / ``'stream'`` force one way.
    """

    host_bytes: int = 4 * GB
    device_bytes: int = 4 * GB
    placement: Placement = "auto"

    def __post_init__(self) -> None:
        if self.host_bytes <= 0 or self.device_bytes <= 0:
            raise ValueError(f"memory budgets must be > 0 bytes, got host {self.host_bytes}, device {self.device_bytes}")
        if self.placement not in ("auto", "resident", "stream"):
            raise ValueError(f"memory.placement must be 'auto', 'resident' or 'stream', got {self.placement!r}")

    @classmethod
    def from_config(cls, memory) -> MemoryBudget:
        """From a :class:`~stego_core.config.MemoryConfig` (GB fields)."""
        return cls(host_bytes=int(memory.host_gb * GB), device_bytes=int(memory.device_gb * GB),
                   placement=memory.placement)

    def limit(self, device: Any) -> int:
        """The budget of the memory a table on ``device`` (a ``torch.device`` or its name) would live in."""
        return self.device_bytes if _on_gpu(device) else self.host_bytes

    def resident(self, nbytes: float, device: Any = "cpu") -> tuple[bool, str]:
        """Whether a table of ``nbytes`` is kept resident on ``device``, and a sentence that says why."""
        where = "device memory" if _on_gpu(device) else "host memory"
        limit = self.limit(device)
        size = f"{human_bytes(nbytes)}, budget {human_bytes(limit)}"
        if self.placement == "stream":
            return False, f"streamed from its memory-mapped file ({size}; memory.placement=stream)"
        if self.placement == "resident":
            return True, f"resident in {where} ({size}; memory.placement=resident)"
        if nbytes <= limit:
            return True, f"resident in {where} ({size})"
        return False, f"streamed from its memory-mapped file ({size}: over budget)"


def _on_gpu(device: Any) -> bool:
    return str(device).startswith("cuda")


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes of the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def require_disk(path: str | os.PathLike, needed: float, what: str, hint: str = "") -> None:
    """Refuse (:class:`DiskSpaceError`) when ``needed`` bytes plus a small headroom do not fit at ``path``.

    Raises:
        DiskSpaceError: the message names ``what``, the bytes needed and free, and the folder.
    """
    free = free_bytes(path)
    if needed + DISK_HEADROOM_BYTES > free:
        raise DiskSpaceError(
            f"{what} needs {human_bytes(needed)} of disk at {Path(path).resolve()} but only {human_bytes(free)} "
            f"{'is' if free < 2 else 'are'} free; free some space or put the artifacts on a larger disk "
            f"(--artifact-root){'; ' + hint if hint else ''}")
    logger.info("%s: %s planned, %s free at %s", what, human_bytes(needed), human_bytes(free), path)


# --------------------------------------------------------------------------------- what a stage writes
def crop_bytes(num_crops: int, resolution: int) -> int:
    """The crop stage's arrays: pixels ``(N, 3, R, R)`` and labels ``(N, R, R)``, uint8."""
    return num_crops * 4 * resolution * resolution


def embed_bytes(num_images: int, *, channels: int, grid: int, label_side: int, flip: bool, features: bool) -> int:
    """The embed stage's arrays: fp16 features ``(N, C, g, g)`` (twice with ``flip``; none when ``features``
    is False, the recompute mode), uint8 labels ``(N, L, L)`` and float32 descriptors ``(N, C)``."""
    per = label_side * label_side + 4 * channels
    if features:
        per += 2 * channels * grid * grid * (2 if flip else 1)
    return num_images * per


def code_bytes(num_images: int, *, dim: int, grid: int) -> int:
    """A float32 training code ``(N, D, g, g)``: what a readout holds or spills to a scratch file."""
    return num_images * 4 * dim * grid * grid
