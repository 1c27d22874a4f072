"""The data-access layer: how every stage reads the per-image tables (features, codes, pixels, labels).

A *table* is anything with ``len``, ``.shape``, ``.dtype`` whose first axis can be sliced
(``t[i:j]``) and indexed by an integer array (``t[idx]``), giving numpy arrays. Numpy memmaps (what
the artifacts hold) are tables; this module adds two more:

* :class:`ConcatRows`: the shards of one table read as one (a sharded embedding);
* :class:`MappedRows`: a function applied on demand to the rows of another table, batch by batch
  (the head's code of cached features; a backbone recomputing features from stored pixels).

and the ways a stage reads them, none of which holds more than a batch or a budgeted copy:

* :func:`read_rows`: rows in the order asked, fetched in file order;
* :func:`row_blocks`: the whole table in consecutive blocks;
* :func:`sample_tokens`: a token sample drawn as indices first, then read block by block (blocks
  holding no sampled token are not read);
* :func:`any_labelled`: whether a label table has a non-void pixel, block by block;
* :class:`BatchTable`: training batches gathered from a copy on the device when it fits the
  :class:`~stego_core.budget.MemoryBudget`, else straight from the table;
* :func:`materialize`: a mapped table computed once, in memory when it fits the host budget, else
  into a float32 file in a scratch folder (disk planned first).

Every path gives the same numbers as reading the whole table into memory: rows are computed and
converted exactly as an in-memory array would be (``tests/stego_core/test_access.py``).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from stego_core.budget import MemoryBudget, human_bytes, require_disk

logger = logging.getLogger(__name__)

BLOCK_ROWS = 64  # rows per block when a whole table is read or computed in order


def table_nbytes(table) -> int:
    """Bytes the table would take in memory."""
    return int(np.prod(table.shape, dtype=np.int64)) * np.dtype(table.dtype).itemsize


def _rows_of(key, n: int) -> np.ndarray | slice:
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        return slice(start, stop) if step == 1 else np.arange(start, stop, step)
    idx = np.asarray(key)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"tables are indexed by a row, a slice or an integer array, got dtype {idx.dtype}")
    return idx


class ConcatRows:
    """Tables of the same row shape and dtype read as one, rows in order (part 0 first).

    Raises:
        ValueError: no parts, or parts whose row shapes or dtypes differ.
    """

    def __init__(self, parts: Sequence) -> None:
        if not parts:
            raise ValueError("ConcatRows needs at least one part")
        row, dtype = tuple(parts[0].shape[1:]), np.dtype(parts[0].dtype)
        for i, p in enumerate(parts):
            if tuple(p.shape[1:]) != row or np.dtype(p.dtype) != dtype:
                raise ValueError(f"shard {i} holds rows {tuple(p.shape[1:])} {p.dtype}, shard 0 {row} {dtype}: "
                                 "the shards come from different settings; recompute them")
        self.parts = list(parts)
        self.on_demand = any(getattr(p, "on_demand", False) for p in parts)
        self.what = getattr(parts[0], "what", "shards")
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *row)
        self.dtype = dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):  # one row, as numpy gives it
            return self[np.array([key])][0]
        rows = _rows_of(key, len(self))
        if isinstance(rows, slice):
            pieces = []
            for part, lo, hi in zip(self.parts, self.offsets[:-1], self.offsets[1:]):
                a, b = max(rows.start, lo), min(rows.stop, hi)
                if a < b:
                    pieces.append(np.asarray(part[a - lo : b - lo]))
            return np.concatenate(pieces) if pieces else np.empty((0, *self.shape[1:]), self.dtype)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for a table of {len(self)} rows")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for p in np.unique(which):
            mask = which == p
            out[mask] = self.parts[p][rows[mask] - self.offsets[p]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class MappedRows:
    """``fn(source[rows])`` computed on demand, ``batch`` source rows at a time.

    ``fn`` maps a block of source rows ``(B, ...)`` to ``(B, *row_shape)`` of ``dtype``; it must treat
    rows independently (a 1x1-conv head, a backbone in eval mode), so any batching gives the same rows (up to
    floating-point kernels that some CPUs pick by batch size).
    Such a table is never copied whole by :class:`BatchTable` (``on_demand``): reading it is the work.
    """

    on_demand = True

    def __init__(self, source, fn: Callable[[np.ndarray], np.ndarray], *, row_shape: Sequence[int],
                 dtype, batch: int = BLOCK_ROWS, what: str = "mapped rows") -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.source, self.fn, self.batch, self.what = source, fn, batch, what
        self.shape = (len(source), *row_shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _apply(self, block: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(block), dtype=self.dtype)
        if out.shape != (len(block), *self.shape[1:]):
            raise ValueError(f"{self.what}: the function gave {out.shape} for {len(block)} rows, "
                             f"expected {(len(block), *self.shape[1:])}")
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = _rows_of(key, len(self))
        if isinstance(rows, slice):
            starts = range(rows.start, rows.stop, self.batch)
            blocks = [self._apply(np.asarray(self.source[s : min(s + self.batch, rows.stop)])) for s in starts]
        else:
            blocks = [self._apply(read_rows(self.source, rows[s : s + self.batch])) for s in range(0, len(rows), self.batch)]
        return np.concatenate(blocks) if blocks else np.empty((0, *self.shape[1:]), self.dtype)


def read_rows(table, idx: np.ndarray) -> np.ndarray:
    """``table[idx]`` (rows in the order of ``idx``, repeats allowed), each distinct row read once, in
    increasing order: the access pattern a memory-mapped file serves best."""
    idx = np.asarray(idx, dtype=np.int64)
    unique, inverse = np.unique(idx, return_inverse=True)
    rows = np.asarray(table[unique])
    return rows if len(unique) == len(idx) and np.array_equal(unique, idx) else rows[inverse]


def row_blocks(table, batch: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, table[start:start + batch])`` over the whole table, in order."""
    for start in range(0, len(table), batch):
        yield start, np.asarray(table[start : start + batch])


def sample_tokens(maps, *, max_tokens: int | None = None, seed: int = 0, batch: int = 256) -> np.ndarray:
    """Token rows ``(M, C)`` float32 of dense maps ``(N, C, H, W)``: all ``N*H*W`` tokens in row-major order
    (image, y, x), or, beyond ``max_tokens``, the ``max_tokens`` of them at sorted indices drawn with
    ``numpy.random.default_rng(seed).choice(N*H*W, max_tokens, replace=False)``. Memory: the sample and
    one block of ``batch`` maps; blocks holding no sampled token are not read."""
    n, c, h, w = maps.shape
    hw, total = h * w, n * h * w
    chosen = None
    if max_tokens is not None and total > max_tokens:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_tokens, replace=False))
    out = np.empty((total if chosen is None else len(chosen), c), dtype=np.float32)
    filled = 0
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        if chosen is None:
            picked = slice(None)
            count = (stop - start) * hw
        else:
            a, b = np.searchsorted(chosen, [start * hw, stop * hw])
            if a == b:
                continue
            picked, count = chosen[a:b] - start * hw, b - a
        block = np.asarray(maps[start:stop], dtype=np.float32).transpose(0, 2, 3, 1).reshape(-1, c)
        out[filled : filled + count] = block[picked]
        filled += count
    return out


def any_labelled(labels, ignore_index: int = 255, batch: int = BLOCK_ROWS) -> bool:
    """Whether a label table ``(N, H, W)`` holds any pixel other than ``ignore_index`` (stops at the first)."""
    return any(bool(np.any(block != ignore_index)) for _, block in row_blocks(labels, batch))


class BatchTable:
    """Rows of a table gathered as float32 tensors on ``device``: from one resident copy when it fits the
    budget (the copy keeps the table's dtype and is filled block by block, so no second host copy is
    made for a GPU), else read from the table for each batch. ``placement`` says which, and why."""

    def __init__(self, table, device: str | torch.device = "cpu", budget: MemoryBudget | None = None,
                 what: str = "training features") -> None:
        self.device = torch.device(device)
        self.table, self.tensor = table, None
        self.shape = tuple(table.shape)
        if getattr(table, "on_demand", False):
            self.placement = f"computed for each batch ({getattr(table, 'what', 'mapped rows')})"
        else:
            resident, self.placement = (budget or MemoryBudget()).resident(table_nbytes(table), self.device)
            if resident:
                self.tensor = torch.empty(self.shape, dtype=torch.from_numpy(np.empty(0, table.dtype)).dtype,
                                          device=self.device)
                for start, block in row_blocks(table, 256):
                    self.tensor[start : start + len(block)] = torch.from_numpy(np.array(block)).to(self.device)
        logger.info("%s %s: %s", what, self.shape, self.placement)

    def __len__(self) -> int:
        return self.shape[0]

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.device)].float()
        rows = torch.from_numpy(read_rows(self.table, idx))
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=True).float()


def materialize(table, *, budget: MemoryBudget | None = None, scratch: str | os.PathLike | None = None,
                what: str = "table", batch: int = BLOCK_ROWS) -> tuple[np.ndarray, str]:
    """The rows of ``table`` computed once, in order, ``batch`` at a time: an in-memory array when it fits
    the host budget, else a float32 ``.npy`` memmap in ``scratch`` (which the caller removes). Returns the
    array and a sentence saying where it is.

    Raises:
        ValueError: the table does not fit the host budget and no ``scratch`` folder is given.
        DiskSpaceError: the scratch file does not fit on its disk.
    """
    nbytes = table_nbytes(table)
    resident, placement = (budget or MemoryBudget()).resident(nbytes, "cpu")
    if resident:
        out = np.empty(table.shape, dtype=table.dtype)
    else:
        if scratch is None:
            raise ValueError(f"{what} ({human_bytes(nbytes)}) is over the host memory budget and no scratch folder "
                             "was given to spill it to; raise memory.host_gb")
        path = Path(scratch) / f"{what.replace(' ', '_')}.npy"
        require_disk(path.parent, nbytes, f"{what} (scratch file)", hint="or raise memory.host_gb to keep it in memory")
        out = open_memmap(path, mode="w+", dtype=table.dtype, shape=tuple(table.shape))
        placement = f"in a scratch file {path} ({human_bytes(nbytes)}: over the host budget)"
    for start, block in row_blocks(table, batch):
        out[start : start + len(block)] = block
    if isinstance(out, np.memmap):
        out.flush()
        out = np.load(path, mmap_mode="r")
    logger.info("%s %s: %s", what, tuple(table.shape), placement)
    return out, placement


# ------------------------------------------------------------------------------ tables of an artifact folder
SHARDS_FILE = "shards.json"


def shard_folders(folder: str | os.PathLike) -> list[Path] | None:
    """The part folders of a sharded artifact (``shards.json``: relative paths, in row order), else None."""
    spec = Path(folder) / SHARDS_FILE
    if not spec.is_file():
        return None
    parts = json.loads(spec.read_text())["parts"]
    return [Path(folder) / p for p in parts]


def open_table(folder: str | os.PathLike, name: str, *, required: bool = True):
    """The table ``name`` (a ``.npy`` file) of an artifact folder as a read-only memmap, or, for a sharded
    artifact, its parts' tables as one :class:`ConcatRows`; None when absent and not ``required``.

    Raises:
        FileNotFoundError: ``required`` and the file is missing (in the folder or one of its parts).
    """
    folder = Path(folder)
    parts = shard_folders(folder)
    if parts is not None:
        tables = [open_table(p, name, required=required) for p in parts]
        if all(t is None for t in tables):
            return None
        if any(t is None for t in tables):
            raise FileNotFoundError(f"some shards of {folder} lack {name}; recompute them")
        return ConcatRows(tables)
    path = folder / name
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path} is missing; the artifact is incomplete (rerun the stage that wrote it)")
        return None
    return np.load(path, mmap_mode="r")


def read_index(folder: str | os.PathLike) -> list[dict]:
    """The ``index.json`` rows of an artifact folder (its parts' rows, in order, for a sharded one)."""
    parts = shard_folders(folder)
    if parts is not None:
        return [row for p in parts for row in read_index(p)]
    return json.loads((Path(folder) / "index.json").read_text())
