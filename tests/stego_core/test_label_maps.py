"""Label mappings on hand-built arrays, checked against the dataset definitions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from stego_core.data import (
    COCOSTUFF27_CLASSES,
    COCOSTUFF_FINE_CLASSES,
    COCOSTUFF_FINE_TO_COARSE,
    DATASETS,
    LABEL_MAPS,
    apply_label_map,
)


@pytest.mark.parametrize("name", sorted(LABEL_MAPS))
def test_every_map_keeps_shape_returns_int64_and_keeps_void(name):
    raw = np.array([[0, 255], [255, 1]], dtype=np.uint8)
    out = LABEL_MAPS[name](raw)
    assert out.shape == raw.shape and out.dtype == np.int64
    assert out[0, 1] == 255 and out[1, 0] == 255
    assert raw.tolist() == [[0, 255], [255, 1]]  # input untouched


def test_identity_keeps_values_including_16_bit():
    raw = np.array([[0, 7, 255, 300, 65535]], dtype=np.uint16)
    assert LABEL_MAPS["identity"](raw).tolist() == raw.astype(np.int64).tolist()


def test_camvid11():
    raw = np.array([[0, 5, 10, 11, 255, 12]], dtype=np.uint8)
    # 11 "Unlabelled" -> void; 12 is not a CamVid value and passes through for the range check
    assert LABEL_MAPS["camvid11"](raw).tolist() == [[0, 5, 10, 255, 255, 12]]


def test_cityscapes27_against_a_loop_over_all_byte_values():
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = LABEL_MAPS["cityscapes27"](raw)
    for value in range(256):
        expected = value - 7 if 7 <= value <= 33 else 255
        assert out.flat[value] == expected, value
    names = DATASETS["cityscapes27"].class_names
    # labelIds: 7 road, 23 sky, 24 person, 26 car, 33 bicycle
    assert [names[i] for i in apply_label_map(np.array([7, 23, 24, 26, 33]), "cityscapes27")] == [
        "road", "sky", "person", "car", "bicycle"]


def test_cocostuff_fine_table_layout():
    assert len(COCOSTUFF_FINE_CLASSES) == 182
    assert COCOSTUFF_FINE_CLASSES[0] == "person"
    assert COCOSTUFF_FINE_CLASSES[11] == "street sign*"  # an unused COCO slot keeps its id
    assert COCOSTUFF_FINE_CLASSES[91] == "banner"
    assert COCOSTUFF_FINE_CLASSES[156] == "sky-other"
    assert COCOSTUFF_FINE_CLASSES[181] == "wood"
    assert sorted(COCOSTUFF_FINE_TO_COARSE) == list(range(182))
    assert len(COCOSTUFF27_CLASSES) == 27 == len(set(COCOSTUFF27_CLASSES))


@pytest.mark.parametrize(("fine", "coarse"), [
    ("person", "person"), ("car", "vehicle"), ("boat", "vehicle"), ("bench", "outdoor"),
    ("giraffe", "animal"), ("tie", "accessory"), ("tennis racket", "sports"), ("bowl", "kitchen"),
    ("cake", "food"), ("toilet", "furniture"), ("tv", "electronic"), ("refrigerator", "appliance"),
    ("toothbrush", "indoor"), ("sky-other", "sky"), ("clouds", "sky"), ("fog", "water"),
    ("sea", "water"), ("grass", "plant"), ("tree", "plant"), ("road", "ground"),
    ("snow", "ground"), ("wall-brick", "wall"), ("ceiling-tile", "ceiling"), ("carpet", "floor"),
    ("rug", "textile"), ("table", "furniture-stuff"), ("salad", "food-stuff"),
    ("paper", "raw-material"), ("window-blind", "window"), ("tent", "building"),
    ("wood", "solid"), ("fence", "structural"),
])
def test_cocostuff27_known_ids(fine, coarse):
    fine_id = COCOSTUFF_FINE_CLASSES.index(fine)
    out = LABEL_MAPS["cocostuff27"](np.array([[fine_id]], dtype=np.uint8))
    assert COCOSTUFF27_CLASSES[int(out[0, 0])] == coarse


def test_cocostuff27_order_and_group_sizes():
    assert COCOSTUFF27_CLASSES[:12] == ("electronic", "appliance", "food", "furniture", "indoor",
                                        "kitchen", "accessory", "animal", "outdoor", "person",
                                        "sports", "vehicle")
    assert COCOSTUFF27_CLASSES[12] == "ceiling" and COCOSTUFF27_CLASSES[26] == "water"
    # thing groups are contiguous slot ranges of the COCO category list (IIC's table)
    ranges = {"person": (0, 0), "vehicle": (1, 8), "outdoor": (9, 14), "animal": (15, 24),
              "accessory": (25, 32), "sports": (33, 42), "kitchen": (43, 50), "food": (51, 60),
              "furniture": (61, 70), "electronic": (71, 76), "appliance": (77, 82),
              "indoor": (83, 90)}
    for group, (lo, hi) in ranges.items():
        for fine in range(lo, hi + 1):
            assert COCOSTUFF27_CLASSES[COCOSTUFF_FINE_TO_COARSE[fine]] == group, fine
    stuff_sizes = Counter(COCOSTUFF27_CLASSES[COCOSTUFF_FINE_TO_COARSE[f]] for f in range(91, 182))
    assert stuff_sizes == {"ceiling": 2, "floor": 6, "food-stuff": 4, "furniture-stuff": 11,
                           "raw-material": 4, "textile": 11, "wall": 7, "window": 2,
                           "building": 6, "ground": 11, "plant": 9, "sky": 2, "solid": 6,
                           "structural": 5, "water": 5}


def test_cocostuff27_void_and_unknown_ids():
    out = LABEL_MAPS["cocostuff27"](np.array([[255, 182, 200]], dtype=np.uint8))
    assert out.tolist() == [[255, 182, 200]]  # unknown fine ids pass through to be reported


def test_potsdam3():
    raw = np.array([[0, 1, 2, 3, 4, 5, 255, 6]], dtype=np.uint8)
    # impervious, building, low veg, tree, car, clutter -> roads+cars 0, buildings+clutter 1, veg 2
    assert LABEL_MAPS["potsdam3"](raw).tolist() == [[0, 1, 2, 2, 0, 1, 255, 6]]


def test_labelmefacade8():
    raw = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 255, 9]], dtype=np.uint8)
    # various (also the unlabelled canvas) -> void; building..window -> 0..7; 9 is no LabelMeFacade id and passes
    assert LABEL_MAPS["labelmefacade8"](raw).tolist() == [[255, 0, 1, 2, 3, 4, 5, 6, 7, 255, 9]]
    names = DATASETS["labelmefacade"].class_names
    assert [names[i] for i in apply_label_map(np.array([1, 7, 8]), "labelmefacade8")] == ["building", "vegetation", "window"]


def test_registry_maps_match_class_counts():
    for spec in DATASETS.values():
        raw = np.arange(256, dtype=np.uint8)
        out = LABEL_MAPS[spec.label_map](raw)
        mapped = set(out[out != 255].tolist()) & set(range(spec.num_classes))
        assert mapped == set(range(spec.num_classes)), spec.name


def test_apply_label_map_validation():
    with pytest.raises(ValueError, match="unknown label_map 'coco'.*cocostuff27"):
        apply_label_map(np.zeros((2, 2), dtype=np.uint8), "coco")
    with pytest.raises(ValueError, match="must hold integers"):
        apply_label_map(np.zeros((2, 2), dtype=np.float32), "identity")
