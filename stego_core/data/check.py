"""`stego data check`: is a registered dataset where the registry reads it, complete and readable?

For each split: list it through the dataset's layout, compare the number of images with the paper's
(`Layout.expected_count`), then open every image and label (or a seeded sample of them) and collect
every problem by file: a missing image or label, an unreadable (truncated, corrupt) one, a label of
another size than its image, a label holding raw ids the official files never hold
(`DatasetSpec.raw_ids`). The raw values of the labels read are summed into a histogram.

"Usable" (what ``stego data check`` exits 0 on): every requested split is found and no file has a
problem. A count different from the paper's is reported (``complete`` is False) but is not a
problem: a small local copy or fixture is usable, it just does not give the paper's numbers; pass
``strict`` to make it one.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .io import check_image, label_value_counts
from .registry import DatasetSpec, dataset_samples, get_dataset, resolve_data_root

__all__ = ["DatasetCheck", "FileProblem", "SplitCheck", "check_dataset"]


@dataclass(frozen=True)
class FileProblem:
    """``kind``: missing image | missing label | unreadable image | bad label (unreadable, several channels, another
    size than its image) | unknown ids."""

    kind: str
    file: str
    reason: str


@dataclass
class SplitCheck:
    split: str
    subset: str | None
    listed_by: str = ""
    found: int = 0
    expected: int | None = None
    checked: int = 0
    not_found: str | None = None  # why the split is not there at all
    problems: list[FileProblem] = field(default_factory=list)
    histogram: Counter = field(default_factory=Counter)  # raw label value -> pixels, over the labels read

    @property
    def complete(self) -> bool:
        return self.expected is None or self.found == self.expected

    @property
    def ok(self) -> bool:
        return self.not_found is None and not self.problems


@dataclass
class DatasetCheck:
    name: str
    folder: Path
    splits: list[SplitCheck]
    strict: bool = False

    @property
    def usable(self) -> bool:
        return all(s.ok and (s.complete or not self.strict) for s in self.splits)


def _unknown(values: Iterable[int], spec: DatasetSpec) -> list[int]:
    return sorted(v for v in values if v not in spec.raw_ids)


def _id_range(ids: frozenset[int]) -> str:
    runs, ordered = [], sorted(ids)
    start = prev = ordered[0]
    for v in ordered[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}..{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs)


def check_split(spec: DatasetSpec, root: Path, split: str, *, subset: str | None = None, sample: int | None = None,
                seed: int = 0, progress: Callable | None = None) -> SplitCheck:
    """Check one split (see the module docstring). ``sample``: read only this many samples' files,
    drawn with ``seed`` (every file's existence is still checked)."""
    subset = spec.layout.resolve_subset(subset, spec.name)
    result = SplitCheck(split, subset, spec.layout.listed_by(split, subset),
                        expected=spec.layout.expected_count(split, subset))
    try:
        samples = dataset_samples(spec.name, split, root, subset=subset)
    except DataError as exc:
        result.not_found = str(exc)
        return result
    result.found = len(samples)
    labelled = split in spec.layout.labelled
    present = []
    for s in samples:
        ok = True
        if not s.image.is_file():
            result.problems.append(FileProblem("missing image", str(s.image), f"listed by {result.listed_by}, not there"))
            ok = False
        if labelled and (s.label is None or not s.label.is_file()):
            result.problems.append(FileProblem("missing label", str(s.label), f"the label of {s.image.name} is not there"))
            ok = False
        if ok:
            present.append(s)
    if sample is not None and sample < len(present):
        present = random.Random(seed).sample(present, sample)
    for s in (progress(present) if progress else present):
        result.checked += 1
        try:
            size = check_image(s.image)
        except DataError as exc:
            result.problems.append(FileProblem("unreadable image", str(s.image), str(exc)))
            continue
        if not labelled or s.label is None:
            continue
        try:
            counts = label_value_counts(s.label, size=size, image=s.image)
        except DataError as exc:
            result.problems.append(FileProblem("bad label", str(s.label), str(exc)))
            continue
        result.histogram.update(counts)
        bad = _unknown(counts, spec)
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            result.problems.append(FileProblem(
                "unknown ids", str(s.label), f"label {s.label} holds ids [{shown}] that {spec.name} labels never hold "
                f"(known: {_id_range(spec.raw_ids)}); is it the right file (e.g. *_labelIds, not *_trainIds)?"))
    return result


def check_dataset(name: str, data_root: str | os.PathLike | None, *, splits: Iterable[str] | None = None,
                  subset: str | None = None, sample: int | None = None, strict: bool = False,
                  progress: Callable[[str], Callable] | None = None) -> DatasetCheck:
    """Check the registered dataset ``name`` under the data root: every split, or ``splits``.

    ``progress(split)`` may return a wrapper for the samples' iterable (e.g. a tqdm bar).

    Raises:
        ValueError: unknown dataset, split or subset; DataError: no data root.
    """
    spec = get_dataset(name)
    root = resolve_data_root(data_root)
    chosen = list(splits) if splits else list(spec.splits)
    for split in chosen:
        if split not in spec.splits:
            raise ValueError(f"dataset {name!r} has no split {split!r}; choose one of {list(spec.splits)}")
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be a positive number of images, got {sample}")
    results = [check_split(spec, root, split, subset=subset, sample=sample, progress=progress and progress(split))
               for split in chosen]
    return DatasetCheck(name, root / spec.folder, results, strict)
