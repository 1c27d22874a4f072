"""Five-crop geometry, and the stored training crops: exactly the pixels the backbone saw when each crop
was a lossless PNG decoded by SegmentationDataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stego_core.data import DataError, Sample, SegmentationDataset, five_crop_boxes, load_image, load_label, write_crops

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


def _crops(folder: Path):
    return (np.load(folder / "pixels.npy"), np.load(folder / "labels.npy"),
            json.loads((folder / "index.json").read_text()))


def _decoded_png_crops(sample: Sample, folder: Path, resolution: int, **label_args):
    """The former path: each crop saved as a lossless PNG, then read back by SegmentationDataset."""
    image = load_image(sample.image)
    label = load_label(sample.label, size=image.size, **label_args) if sample.label else None
    folder.mkdir(parents=True, exist_ok=True)
    crops = []
    for i, (left, top, right, bottom) in enumerate(five_crop_boxes(image.width, image.height)):
        image.crop((left, top, right, bottom)).save(folder / f"{i}.png")
        lab = None
        if label is not None:
            lab = folder / f"{i}_label.png"
            Image.fromarray(label[top:bottom, left:right].astype(np.uint8)).save(lab)
        crops.append(Sample(str(i), folder / f"{i}.png", lab))
    ds = SegmentationDataset(crops, resolution=resolution, mean=(0, 0, 0), std=(1, 1, 1),
                             num_classes=label_args.get("num_classes"), normalize=False)
    items = [ds[i] for i in range(len(ds))]
    return (np.stack([it["image"].numpy() for it in items]),
            np.stack([it["label"].clamp(0, 255).numpy() for it in items]).astype(np.uint8))


@pytest.mark.parametrize("resolution", [8, 16, 23])
def test_stored_crops_are_the_pixels_the_decoded_png_crops_gave(tmp_path, resolution):
    sample, _, _ = _write_pair(tmp_path, "a")
    n = write_crops([sample], tmp_path / "crops", resolution=resolution, num_classes=11, label_map="camvid11",
                    progress=False)
    pixels, labels, index = _crops(tmp_path / "crops")
    assert n == 5 and pixels.shape == (5, 3, resolution, resolution) and pixels.dtype == np.uint8
    want_pixels, want_labels = _decoded_png_crops(sample, tmp_path / "png", resolution, num_classes=11,
                                                  label_map="camvid11")
    np.testing.assert_array_equal(pixels, want_pixels)
    np.testing.assert_array_equal(labels, want_labels)
    assert [r["stem"] for r in index] == [f"a_c{i}" for i in range(5)]
    assert [tuple(r["box"]) for r in index] == five_crop_boxes(37, 23)
    assert all(r["image"] == str(sample.image) for r in index)


def test_whole_images_are_what_the_dataset_reads(tmp_path):
    a, _, _ = _write_pair(tmp_path, "a", seed=1, suffix=".jpg")
    b, _, _ = _write_pair(tmp_path, "b", seed=2)
    write_crops([a, Sample("b", b.image, None)], tmp_path / "c", resolution=16, five_crop=False, num_classes=12,
                progress=False)
    pixels, labels, index = _crops(tmp_path / "c")
    ds = SegmentationDataset([a, Sample("b", b.image, None)], resolution=16, mean=(0, 0, 0), std=(1, 1, 1),
                             num_classes=12, normalize=False)
    for i in range(2):
        np.testing.assert_array_equal(pixels[i], ds[i]["image"].numpy())
        np.testing.assert_array_equal(labels[i], ds[i]["label"].clamp(0, 255).numpy())
    assert [r["stem"] for r in index] == ["a", "b"] and index[0]["box"] is None


def test_unlabelled_crops_are_void(tmp_path):
    a, _, _ = _write_pair(tmp_path, "a", seed=1)
    b, _, _ = _write_pair(tmp_path, "b", seed=2)
    assert write_crops([a, Sample("b", b.image, None)], tmp_path / "c", resolution=8, num_classes=12,
                       workers=3, progress=False) == 10
    _, labels, _ = _crops(tmp_path / "c")
    assert (labels[5:] == 255).all() and (labels[:5] != 255).any()


def test_a_bad_image_is_named(tmp_path):
    good, _, _ = _write_pair(tmp_path, "a")
    bad = tmp_path / "img" / "b.jpg"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*b\.jpg"):
        write_crops([good, Sample("b", bad, None)], tmp_path / "out", resolution=8, progress=False)


def test_label_errors_name_the_file(tmp_path):
    sample, _, _ = _write_pair(tmp_path, "a", label_values=12)
    with pytest.raises(DataError, match=r"label .*a\.png holds ids \[11\] outside .*0\.\.10"):
        write_crops([sample], tmp_path / "o", resolution=8, num_classes=11, progress=False)
    wide = tmp_path / "lab" / "w.png"
    Image.fromarray(np.full((23, 37), 300, dtype=np.uint16)).save(wide)
    with pytest.raises(DataError, match=r"w\.png holds ids up to 300.*8-bit"):
        write_crops([Sample("w", sample.image, wide)], tmp_path / "o", resolution=8, progress=False)
    small = tmp_path / "lab" / "s.png"
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(small)
    with pytest.raises(DataError, match=r"s\.png is 5x5 .* image is 37x23"):
        write_crops([Sample("s", sample.image, small)], tmp_path / "o", resolution=8, progress=False)


def test_input_validation(tmp_path):
    sample, _, _ = _write_pair(tmp_path, "a")
    with pytest.raises(ValueError, match="at least one sample"):
        write_crops([], tmp_path / "o", resolution=8, progress=False)
    with pytest.raises(ValueError, match="stems must be unique.*'a'"):
        write_crops([sample, sample], tmp_path / "o", resolution=8, progress=False)
    with pytest.raises(ValueError, match="crop_ratio"):
        write_crops([sample], tmp_path / "o", resolution=8, crop_ratio=2.0, progress=False)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid not available")
def test_real_camvid_image(tmp_path):
    stem = "0001TP_006690"
    sample = Sample(stem, CAMVID / "images/train" / f"{stem}.jpg", CAMVID / "labels/train" / f"{stem}.png")
    write_crops([sample], tmp_path / "c", resolution=112, num_classes=11, label_map="camvid11", progress=False)
    pixels, labels, index = _crops(tmp_path / "c")
    want_pixels, want_labels = _decoded_png_crops(sample, tmp_path / "png", 112, num_classes=11, label_map="camvid11")
    np.testing.assert_array_equal(pixels, want_pixels)
    np.testing.assert_array_equal(labels, want_labels)
    assert [tuple(r["box"]) for r in index] == five_crop_boxes(480, 360)
