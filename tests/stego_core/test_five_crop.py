"""Five-crop geometry, pixel content, lossless storage and atomic output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stego_core.data import DataError, Sample, five_crop_boxes, five_crop_dataset, load_image

CAMVID = Path("/work/shared/data/camvid")


@pytest.mark.parametrize(("width", "height"), [(480, 360), (481, 361), (7, 5), (100, 3), (1, 1)])
@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.0])
def test_boxes_cover_corners_and_centre(width, height, ratio):
    boxes = five_crop_boxes(width, height, ratio)
    w, h = max(1, round(ratio * width)), max(1, round(ratio * height))
    assert len(boxes) == 5
    for left, top, right, bottom in boxes:
        assert (right - left, bottom - top) == (w, h)
        assert left >= 0 and top >= 0 and right <= width and bottom <= height
    tl, tr, bl, br, centre = boxes
    assert tl[:2] == (0, 0)
    assert (tr[1], tr[2]) == (0, width)
    assert (bl[0], bl[3]) == (0, height)
    assert br[2:] == (width, height)
    # the centre crop leaves equal margins, up to one pixel for odd leftovers
    assert 0 <= (width - centre[2]) - centre[0] <= 1
    assert 0 <= (height - centre[3]) - centre[1] <= 1


def test_boxes_hand_computed():
    assert five_crop_boxes(4, 2) == [(0, 0, 2, 1), (2, 0, 4, 1), (0, 1, 2, 2), (2, 1, 4, 2), (1, 0, 3, 1)]
    # 7 x 5 at 0.5: round(3.5) = 4 (half to even), round(2.5) = 2
    assert five_crop_boxes(7, 5) == [(0, 0, 4, 2), (3, 0, 7, 2), (0, 3, 4, 5), (3, 3, 7, 5), (1, 1, 5, 3)]
    assert five_crop_boxes(480, 360)[4] == (120, 90, 360, 270)
    assert five_crop_boxes(10, 6, 1.0) == [(0, 0, 10, 6)] * 5


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_boxes_reject_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"crop_ratio must be in \(0, 1\]"):
        five_crop_boxes(10, 10, ratio)


def test_boxes_reject_empty_image():
    with pytest.raises(ValueError, match="image size must be positive"):
        five_crop_boxes(0, 10)


def _write_pair(folder: Path, stem: str, size=(37, 23), seed=0, label_values=12, suffix=".png"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    raw = rng.integers(0, label_values, size=(size[1], size[0]), dtype=np.uint8)
    (folder / "img").mkdir(exist_ok=True)
    (folder / "lab").mkdir(exist_ok=True)
    image_path = folder / "img" / f"{stem}{suffix}"
    Image.fromarray(pixels).save(image_path)
    label_path = folder / "lab" / f"{stem}.png"
    Image.fromarray(raw).save(label_path)
    return Sample(stem, image_path, label_path), pixels, raw


def test_crops_equal_source_slices_and_round_trip_losslessly(tmp_path):
    sample, pixels, raw = _write_pair(tmp_path, "a")
    out = five_crop_dataset([sample], tmp_path / "crops", num_classes=11, label_map="camvid11",
                            progress=False)
    mapped = np.where(raw == 11, 255, raw)
    assert [s.stem for s in out] == [f"a_c{i}" for i in range(5)]
    for crop, (left, top, right, bottom) in zip(out, five_crop_boxes(37, 23), strict=True):
        assert crop.image == tmp_path / "crops" / "images" / f"{crop.stem}.png"
        assert crop.label == tmp_path / "crops" / "labels" / f"{crop.stem}.png"
        with Image.open(crop.image) as img:
            assert img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), pixels[top:bottom, left:right])
        with Image.open(crop.label) as lab:
            assert lab.mode == "L"
            np.testing.assert_array_equal(np.asarray(lab), mapped[top:bottom, left:right])


def test_jpeg_source_crops_equal_decoded_pixels(tmp_path):
    sample, _, _ = _write_pair(tmp_path, "j", suffix=".jpg")
    decoded = np.asarray(load_image(sample.image))
    out = five_crop_dataset([Sample("j", sample.image, None)], tmp_path / "c", progress=False)
    assert all(s.label is None for s in out)
    assert not (tmp_path / "c" / "labels").exists()
    left, top, right, bottom = five_crop_boxes(37, 23)[4]
    np.testing.assert_array_equal(np.asarray(Image.open(out[4].image)), decoded[top:bottom, left:right])


def test_mixed_labelled_and_unlabelled(tmp_path):
    a, _, _ = _write_pair(tmp_path, "a", seed=1)
    b, _, _ = _write_pair(tmp_path, "b", seed=2)
    out = five_crop_dataset([a, Sample("b", b.image, None)], tmp_path / "c", num_classes=12,
                            progress=False)
    assert len(out) == 10
    assert all(s.label is not None for s in out[:5]) and all(s.label is None for s in out[5:])
    assert sorted(p.name for p in (tmp_path / "c" / "labels").iterdir()) == [f"a_c{i}.png" for i in range(5)]


def test_existing_output_needs_overwrite(tmp_path):
    sample, _, _ = _write_pair(tmp_path, "a")
    out_dir = tmp_path / "c"
    (out_dir / "stale").mkdir(parents=True)
    with pytest.raises(DataError, match="already exists.*overwrite=True"):
        five_crop_dataset([sample], out_dir, num_classes=12, progress=False)
    five_crop_dataset([sample], out_dir, num_classes=12, progress=False, overwrite=True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["images", "labels"]


def test_failure_leaves_no_output_and_no_temp_folder(tmp_path):
    good, _, _ = _write_pair(tmp_path, "a")
    bad = tmp_path / "img" / "b.jpg"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*b\.jpg"):
        five_crop_dataset([good, Sample("b", bad, None)], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "lab"]


def test_label_errors_name_the_file(tmp_path):
    sample, _, _ = _write_pair(tmp_path, "a", label_values=12)
    with pytest.raises(DataError, match=r"label .*a\.png holds ids \[11\] outside .*0\.\.10"):
        five_crop_dataset([sample], tmp_path / "o", num_classes=11, progress=False)
    wide = tmp_path / "lab" / "w.png"
    Image.fromarray(np.full((23, 37), 300, dtype=np.uint16)).save(wide)
    with pytest.raises(DataError, match=r"w\.png holds ids up to 300.*8-bit"):
        five_crop_dataset([Sample("w", sample.image, wide)], tmp_path / "o", progress=False)
    small = tmp_path / "lab" / "s.png"
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(small)
    with pytest.raises(DataError, match=r"s\.png is 5x5 .* image is 37x23"):
        five_crop_dataset([Sample("s", sample.image, small)], tmp_path / "o", progress=False)


def test_input_validation(tmp_path):
    sample, _, _ = _write_pair(tmp_path, "a")
    with pytest.raises(ValueError, match="at least one sample"):
        five_crop_dataset([], tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="stems must be unique.*'a'"):
        five_crop_dataset([sample, sample], tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="crop_ratio"):
        five_crop_dataset([sample], tmp_path / "o", crop_ratio=2.0, progress=False)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid not available")
def test_real_camvid_image(tmp_path):
    stem = "0001TP_006690"
    sample = Sample(stem, CAMVID / "images/train" / f"{stem}.jpg", CAMVID / "labels/train" / f"{stem}.png")
    out = five_crop_dataset([sample], tmp_path / "c", num_classes=11, label_map="camvid11",
                            progress=False)
    source = np.asarray(Image.open(sample.label))
    for crop, (left, top, right, bottom) in zip(out, five_crop_boxes(480, 360), strict=True):
        assert Image.open(crop.image).size == (240, 180)
        np.testing.assert_array_equal(np.asarray(Image.open(crop.label)), source[top:bottom, left:right])
