"""`stego data describe`: a registered dataset's classes and how many pixels of a split each holds.

The shares are over the labelled (non-void) pixels of the split's labels, after the dataset's label
mapping; the void share is of all pixels. A result is cached as JSON under ``cache_dir``, keyed by the
split's label files (path, size, mtime), so describing an unchanged split again reads nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..digest import json_digest
from .io import load_label
from .registry import dataset_samples, get_dataset

__all__ = ["ClassShares", "class_shares"]


@dataclass(frozen=True)
class ClassShares:
    dataset: str
    split: str
    subset: str | None
    images: int  # labelled images counted
    pixels: int  # all their pixels, void included
    counts: tuple[int, ...]  # pixels per class id
    void: int
    from_cache: bool = False

    @property
    def shares(self) -> list[float]:
        labelled = sum(self.counts)
        return [c / labelled if labelled else 0.0 for c in self.counts]

    @property
    def void_share(self) -> float:
        return self.void / self.pixels if self.pixels else 0.0


def class_shares(name: str, split: str, data_root: str | os.PathLike | None, *, subset: str | None = None,
                 limit: int | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: Callable | None = None) -> ClassShares:
    """Pixels per class of ``split`` (its first ``limit`` images), from the cache when unchanged.

    Raises:
        ValueError: unknown dataset, split or subset, or an unlabelled split; DataError: a missing or unreadable label, or
            one with ids outside the classes (the file is named: `stego data check` lists them all).
    """
    spec = get_dataset(name)
    if split in spec.splits and split not in spec.layout.labelled:
        raise ValueError(f"split {split!r} of {name!r} has no labels to count; describe one of {list(spec.layout.labelled)}")
    subset = spec.layout.resolve_subset(subset, name)
    samples = [s for s in dataset_samples(name, split, data_root, subset=subset, limit=limit) if s.label is not None]
    cache = None
    if cache_dir is not None:
        stats = [[str(s.label), *((s.label.stat().st_size, s.label.stat().st_mtime_ns) if s.label.exists() else ())]
                 for s in samples]
        key = json_digest([name, split, subset, spec.label_map, spec.num_classes, stats])
        cache = Path(cache_dir) / f"{name}-{split}{'-' + subset if subset else ''}-{key}.json"
        if cache.is_file():
            record = json.loads(cache.read_text())
            return ClassShares(**{**record, "counts": tuple(record["counts"]), "from_cache": True})
    counts = np.zeros(spec.num_classes, dtype=np.int64)
    void = pixels = 0
    for s in (progress(samples) if progress else samples):
        label = load_label(s.label, size=None, num_classes=spec.num_classes, label_map=spec.label_map,
                           ignore_index=spec.ignore_index)
        valid = label != spec.ignore_index
        counts += np.bincount(label[valid].ravel(), minlength=spec.num_classes)
        void += int(label.size - valid.sum())
        pixels += int(label.size)
    result = ClassShares(name, split, subset, len(samples), pixels, tuple(int(c) for c in counts), void)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in asdict(result).items() if k != "from_cache"}
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(cache)
    return result
