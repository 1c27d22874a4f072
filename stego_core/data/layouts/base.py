"""What every dataset layout answers: its splits, where their files are, and the paper's counts.

A layout lists a split as `Sample`s (image path, label path): every image of a labelled split gets
the path its label *should* have, present or not, so that a missing label is reported by name (by
`stego data check`, and by the run's preflight) instead of silently dropping the image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..errors import DataError
from ..samples import IMAGE_EXTENSIONS, Sample

__all__ = ["Layout", "PairedFolders", "read_id_list"]


class Layout(ABC):
    """How one dataset family lies under its folder (``<data root>/<spec.folder>``).

    Attributes:
        splits: split names, in display order.
        labelled: the splits whose images all have a label.
        subsets: named selections of a split's images (e.g. COCO-Stuff's ``curated`` lists); the
            first is the default; empty when the dataset has none.
    """

    splits: tuple[str, ...] = ()
    labelled: tuple[str, ...] = ()
    subsets: tuple[str, ...] = ()

    def resolve_subset(self, subset: str | None, dataset: str) -> str | None:
        """``subset``, or the default when None; ValueError for a subset this layout lacks."""
        if not self.subsets:
            if subset is not None:
                raise ValueError(f"dataset {dataset!r} has no subsets; leave data.subset unset (got {subset!r})")
            return None
        if subset is None:
            return self.subsets[0]
        if subset not in self.subsets:
            raise ValueError(f"dataset {dataset!r} has no subset {subset!r}; choose one of {list(self.subsets)}")
        return subset

    @abstractmethod
    def markers(self, split: str, subset: str | None) -> list[str]:
        """Paths (relative to the dataset folder) that must exist for ``split`` to be there."""

    @abstractmethod
    def list_split(self, folder: Path, split: str, subset: str | None) -> list[Sample]:
        """The samples of ``split``, sorted by stem (the markers exist).

        Raises:
            DataError: the split's list or folders are unreadable or hold no image.
        """

    def expected_count(self, split: str, subset: str | None) -> int | None:
        """How many images the paper's version of ``split`` holds (None: not defined)."""
        return None

    def listed_by(self, split: str, subset: str | None) -> str:
        """Where the split's membership comes from, for reports (a list file or a folder)."""
        return " + ".join(self.markers(split, subset))


def read_id_list(path: Path) -> list[str]:
    """The non-empty, stripped lines of a split list (one image id per line)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the split list {path}: {exc}; fix or re-download it") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def sorted_unique(samples: list[Sample], where: Path) -> list[Sample]:
    """``samples`` sorted by stem; a stem listed twice is an error naming ``where``."""
    seen: dict[str, Sample] = {}
    for s in samples:
        if s.stem in seen:
            raise DataError(f"{where} lists the image {s.stem!r} twice; remove the duplicate line or file")
        seen[s.stem] = s
    return [seen[k] for k in sorted(seen)]


class PairedFolders(Layout):
    """``images/<split>/<stem>.<ext>`` with ``labels/<split>/<stem>.png`` (CamVid as SegNet ships it,
    repacked; any image extension of `IMAGE_EXTENSIONS`). A split without a labels folder is unlabelled."""

    def __init__(self, splits: tuple[str, ...], *, expected: dict[str, int] | None = None,
                 images: str = "images/{split}", labels: str = "labels/{split}") -> None:
        self.splits = self.labelled = tuple(splits)
        self.images, self.labels = images, labels
        self.expected = dict(expected or {})

    def markers(self, split: str, subset: str | None) -> list[str]:
        return [self.images.format(split=split)]

    def expected_count(self, split: str, subset: str | None) -> int | None:
        return self.expected.get(split)

    def list_split(self, folder: Path, split: str, subset: str | None) -> list[Sample]:
        images_dir = folder / self.images.format(split=split)
        labels_dir = folder / self.labels.format(split=split)
        files = [p for p in sorted(images_dir.iterdir())
                 if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise DataError(f"image folder {images_dir} holds no images "
                            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); add images or fix the path")
        has_labels = labels_dir.is_dir()
        samples = [Sample(p.stem, p, labels_dir / f"{p.stem}.png" if has_labels else None) for p in files]
        return sorted_unique(samples, images_dir)
