"""load_image / load_label on real files of every kind, and the resize-crop / tensor transforms."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stego_core.data import (
    DataError,
    image_to_tensor,
    load_image,
    load_label,
    resize_center_crop_geometry,
    resize_center_crop_image,
    resize_center_crop_label,
)

CAMVID = Path("/work/shared/data/camvid")
RNG = np.random.default_rng(0)


def _rgb(h=6, w=8):
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path):
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (8, 6)
    np.testing.assert_array_equal(np.asarray(img), pixels)


def test_grayscale_rgba_palette_become_rgb(tmp_path):
    gray = RNG.integers(0, 256, size=(6, 8), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "g.png")), np.stack([gray] * 3, -1))

    rgba = np.concatenate([_rgb(), RNG.integers(0, 256, size=(6, 8, 1), dtype=np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "a.png")), rgba[..., :3])

    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    pal.putdata([2, 0, 1])
    pal.save(tmp_path / "p.png")
    assert np.asarray(load_image(tmp_path / "p.png")).tolist() == [[[0, 0, 255], [255, 0, 0], [0, 255, 0]]]


def test_16_bit_grayscale_is_scaled(tmp_path):
    Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    img = load_image(tmp_path / "d.png")
    assert img.mode == "RGB"
    assert np.asarray(img)[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    rgb = np.asarray(load_image(tmp_path / "c.tif"))
    assert rgb.tolist() == [[[255, 255, 255], [0, 255, 255], [0, 0, 0]]]


def test_exif_orientation_is_applied(tmp_path):
    pixels = _rgb(2, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "r.png", exif=exif)
    img = load_image(tmp_path / "r.png")
    assert img.size == (2, 4)
    np.testing.assert_array_equal(np.asarray(img), np.rot90(pixels, k=-1))


def _jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("content", ["truncated", "empty", "text"])
def test_corrupt_images_raise_naming_the_file(tmp_path, content):
    path = tmp_path / f"{content}.jpg"
    jpeg = _jpeg_bytes()
    data = {"truncated": jpeg[: len(jpeg) // 2], "empty": b"", "text": b"not an image\n"}[content]
    path.write_bytes(data)
    reason = {"truncated": "truncated", "empty": r"the file is empty \(0 bytes\)", "text": "cannot identify"}[content]
    with pytest.raises(DataError, match=rf"cannot read image .*{content}\.jpg: .*{reason}.*fix or remove it"):
        load_image(path)


def test_missing_image(tmp_path):
    with pytest.raises(DataError, match=r"image .*nope\.png does not exist"):
        load_image(tmp_path / "nope.png")


def test_label_modes_and_mapping(tmp_path):
    raw = np.array([[0, 3, 11], [255, 10, 1]], dtype=np.uint8)
    Image.fromarray(raw, mode="L").save(tmp_path / "l.png")
    out = load_label(tmp_path / "l.png", size=(3, 2), num_classes=11, label_map="camvid11")
    assert out.dtype == np.int64 and out.tolist() == [[0, 3, 255], [255, 10, 1]]
    moved = load_label(tmp_path / "l.png", size=None, num_classes=11, label_map="camvid11",
                       ignore_index=250)
    assert moved.tolist() == [[0, 3, 250], [250, 10, 1]]

    pal = Image.new("P", (3, 2))  # palette indices are the label values, colours are irrelevant
    pal.putpalette(RNG.integers(0, 256, size=768).tolist())
    pal.putdata(raw.flatten().tolist())
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_label(tmp_path / "p.png", size=(3, 2), num_classes=256,
                                             ignore_index=256), raw)

    Image.fromarray(np.array([[0, 26, 300]], dtype=np.uint16)).save(tmp_path / "w.png")
    wide = load_label(tmp_path / "w.png", size=None, num_classes=301, ignore_index=301)
    assert wide.tolist() == [[0, 26, 300]]


def test_label_errors_name_the_file(tmp_path):
    Image.fromarray(np.array([[0, 12, 13, 255]], dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"label .*bad\.png holds ids \[12, 13\] outside the "
                                        r"expected range 0\.\.10 of 11 classes \(plus 255 = ignore\)"):
        load_label(tmp_path / "bad.png", size=None, num_classes=11)
    with pytest.raises(DataError, match=r"label .*bad\.png is 4x1 \(WxH\) but its image is 480x360"):
        load_label(tmp_path / "bad.png", size=(480, 360), num_classes=256, ignore_index=256)
    Image.fromarray(_rgb()).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"label .*rgb\.png has 3 channels \(mode RGB\).*convert"):
        load_label(tmp_path / "rgb.png", size=None, num_classes=11)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read label .*empty\.png"):
        load_label(tmp_path / "empty.png", size=None, num_classes=11)


def test_label_argument_validation(tmp_path):
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        load_label(tmp_path / "z.png", size=None, num_classes=0)
    with pytest.raises(ValueError, match="ignore_index=5 collides with class ids 0..10"):
        load_label(tmp_path / "z.png", size=None, num_classes=11, ignore_index=5)
    with pytest.raises(ValueError, match="unknown label_map"):
        load_label(tmp_path / "z.png", size=None, num_classes=11, label_map="nope")


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid not available")
def test_real_camvid_pair():
    img = load_image(CAMVID / "images/val/0016E5_07959.jpg")
    label = load_label(CAMVID / "labels/val/0016E5_07959.png", size=img.size, num_classes=11,
                       label_map="camvid11")
    assert img.size == (480, 360) and label.shape == (360, 480)
    assert set(np.unique(label).tolist()) <= set(range(11)) | {255}


@pytest.mark.parametrize(("w", "h", "size", "expected"), [
    (480, 360, 224, (299, 224, 37, 0)), (360, 480, 224, (224, 299, 0, 37)),
    (300, 300, 224, (224, 224, 0, 0)), (10, 5, 20, (40, 20, 10, 0)),
])
def test_geometry(w, h, size, expected):
    assert resize_center_crop_geometry(w, h, size) == expected


def test_label_resize_matches_pil_nearest_and_a_slow_loop():
    label = RNG.integers(0, 30, size=(23, 37)).astype(np.int64)
    out = resize_center_crop_label(label, 16)
    new_w, new_h, left, top = resize_center_crop_geometry(37, 23, 16)
    pil = Image.fromarray(label.astype(np.int32), mode="I").resize((new_w, new_h), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(out, np.asarray(pil)[top:top + 16, left:left + 16])
    for i in range(16):
        for j in range(16):
            src_r = int((top + i + 0.5) * 23 / new_h)
            src_c = int((left + j + 0.5) * 37 / new_w)
            assert out[i, j] == label[src_r, src_c]


def test_image_and_label_stay_registered():
    label = np.zeros((360, 480), dtype=np.uint8)
    label[:180, 240:] = 1
    label[180:, :240] = 2
    label[180:, 240:] = 3
    colours = np.array([[0, 0, 0], [200, 0, 0], [0, 200, 0], [0, 0, 200]], dtype=np.uint8)
    img = resize_center_crop_image(Image.fromarray(colours[label]), 224)
    lab = resize_center_crop_label(label, 224)
    assert img.size == (224, 224) and lab.shape == (224, 224)
    interior = np.ones((224, 224), dtype=bool)
    interior[108:116, :] = False  # rows near the horizontal edge (180 * 224/360 = 112)
    interior[:, 108:116] = False  # columns near the vertical edge (240 * 224/360 - 37 = 112.3)
    np.testing.assert_array_equal(np.asarray(img)[interior], colours[lab][interior])


def test_transform_validation():
    with pytest.raises(ValueError, match="size must be a positive"):
        resize_center_crop_image(Image.new("RGB", (4, 4)), 0)
    with pytest.raises(ValueError, match=r"label must be an \(H, W\) integer array"):
        resize_center_crop_label(np.zeros((4, 4, 3), dtype=np.uint8), 2)
    with pytest.raises(ValueError, match=r"label must be an \(H, W\) integer array"):
        resize_center_crop_label(np.zeros((4, 4), dtype=np.float32), 2)


def test_image_to_tensor_closed_form():
    img = Image.fromarray(np.array([[[255, 0, 51]], [[0, 255, 102]]], dtype=np.uint8))
    mean, std = (0.5, 0.25, 0.2), (0.5, 0.25, 0.1)
    t = image_to_tensor(img, mean, std)
    assert t.shape == (3, 2, 1) and t.dtype == torch.float32
    expected = torch.tensor([[[1.0], [-1.0]], [[-1.0], [3.0]], [[0.0], [2.0]]])
    torch.testing.assert_close(t, expected)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        image_to_tensor(img, (0.5,), std)
    with pytest.raises(ValueError, match="std values must be > 0"):
        image_to_tensor(img, mean, (0.5, 0.0, 1.0))
    with pytest.raises(ValueError, match="needs an RGB image, got mode L"):
        image_to_tensor(Image.new("L", (2, 2)), mean, std)
