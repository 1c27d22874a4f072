"""Label mappings: raw label values as stored on disk -> class ids in ``[0, K)`` with 255 = ignore.

Each mapping is a pure function ``(H, W) integer array -> (H, W) int64 array``. Raw values a
mapping does not know are passed through unchanged, so that the range check in
`stego_core.data.io.load_label` reports them (with the file name) instead of hiding them as void.

Mappings (K = number of classes after mapping):

* ``identity`` (any K): values unchanged.
* ``camvid11`` (K = 11): SegNet CamVid ids 0..10 kept, 11 ("Unlabelled") -> 255, 255 stays 255.
* ``cityscapes27`` (K = 27): Cityscapes ``labelIds`` 7..33 -> 0..26 (``id - 7``); ids 0..6
  (unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground) and ids >= 34
  -> 255.
* ``cocostuff27`` (K = 27): COCO-Stuff fine ids 0..181 -> 27 coarse groups, 255 stays 255 (see
  `stego_core.data.cocostuff` for the table and the order of the coarse classes).
* ``potsdam3`` (K = 3): ISPRS Potsdam ids 0 impervious surfaces, 1 building, 2 low vegetation,
  3 tree, 4 car, 5 clutter -> 0 roads and cars {0, 4}, 1 buildings and clutter {1, 5},
  2 vegetation and trees {2, 3}; 255 stays 255.
* ``labelmefacade8`` (K = 8): LabelMeFacade ids 1..8 (building, car, door, pavement, road, sky,
  vegetation, window) -> 0..7 (``id - 1``); 0 ("various": the unlabelled canvas, people, signs,
  anything no polygon covers) -> 255; 255 stays 255. The 9-class reading (``various`` scored) is
  ``identity``.

Example:
    >>> import numpy as np
    >>> LABEL_MAPS["cityscapes27"](np.array([[0, 7, 33, 34]])).tolist()
    [[255, 0, 26, 255]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cocostuff import fine_to_coarse_table

__all__ = ["IGNORE", "LABEL_MAPS", "apply_label_map"]

IGNORE = 255
LabelMap = Callable[[np.ndarray], np.ndarray]


def _lookup(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map ``raw`` through ``table`` (indexed by raw value); larger values pass through."""
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iub":
        raise ValueError(f"label arrays must hold integers, got dtype {raw.dtype}; "
                         "load labels with load_label() or cast them with .astype(np.int64)")
    values = raw.astype(np.int64, copy=False)
    inside = (values >= 0) & (values < len(table))
    return np.where(inside, table[np.clip(values, 0, len(table) - 1)], values)


def _table(pairs: dict[int, int]) -> np.ndarray:
    """A 256-entry int64 table that is the identity except for ``pairs``."""
    table = np.arange(256, dtype=np.int64)
    for raw, mapped in pairs.items():
        table[raw] = mapped
    return table


def identity(raw: np.ndarray) -> np.ndarray:
    """Return the labels unchanged as int64."""
    return _lookup(raw, np.arange(256, dtype=np.int64))


_CAMVID11 = _table({11: IGNORE})
_CITYSCAPES27 = _table({i: (i - 7 if 7 <= i <= 33 else IGNORE) for i in range(256)})
_COCOSTUFF27 = np.asarray(fine_to_coarse_table(IGNORE), dtype=np.int64)
_POTSDAM3 = _table({0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2})
_LABELMEFACADE8 = _table({0: IGNORE, **{i: i - 1 for i in range(1, 9)}})


def camvid11(raw: np.ndarray) -> np.ndarray:
    """SegNet CamVid: 0..10 kept, 11 -> 255 (void), 255 stays 255."""
    return _lookup(raw, _CAMVID11)


def cityscapes27(raw: np.ndarray) -> np.ndarray:
    """Cityscapes ``labelIds``: ``id - 7`` for 7..33, everything else in 0..255 -> 255."""
    return _lookup(raw, _CITYSCAPES27)


def cocostuff27(raw: np.ndarray) -> np.ndarray:
    """COCO-Stuff fine ids 0..181 -> 27 coarse ids; 255 stays 255; 182..254 pass through."""
    return _lookup(raw, _COCOSTUFF27)


def potsdam3(raw: np.ndarray) -> np.ndarray:
    """ISPRS Potsdam 6 classes -> 3: {0, 4} -> 0, {1, 5} -> 1, {2, 3} -> 2; 255 stays 255."""
    return _lookup(raw, _POTSDAM3)


def labelmefacade8(raw: np.ndarray) -> np.ndarray:
    """LabelMeFacade: 1..8 -> 0..7, 0 ("various", also unlabelled) -> 255, 255 stays 255."""
    return _lookup(raw, _LABELMEFACADE8)


LABEL_MAPS: dict[str, LabelMap] = {
    "identity": identity,
    "camvid11": camvid11,
    "cityscapes27": cityscapes27,
    "cocostuff27": cocostuff27,
    "potsdam3": potsdam3,
    "labelmefacade8": labelmefacade8,
}


def apply_label_map(raw: np.ndarray, label_map: str) -> np.ndarray:
    """Apply the mapping named ``label_map`` to ``raw`` ((H, W) ints) and return (H, W) int64.

    Raises:
        ValueError: unknown ``label_map`` (the message lists the known names).
    """
    try:
        fn = LABEL_MAPS[label_map]
    except KeyError:
        raise ValueError(f"unknown label_map {label_map!r}; "
                         f"choose one of {sorted(LABEL_MAPS)}") from None
    return fn(raw)
