"""Bad and unusual inputs: every file either works as documented or fails in preflight, before any
compute, with a message naming the file, the problem and the fix; ``data.bad_files=skip`` leaves bad
files out and the stages honour it. All files are made on the fly in tmp folders."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stego_core.config import ExperimentConfig
from stego_core.data import (
    DataError,
    SegmentationDataset,
    check_image,
    load_image,
    load_resized_image,
    resize_center_crop_image,
)
from stego_core.presets import ConfigError, build_config
from stego_core.stages import embed_stage, split_info
from stego_core.validation import excluded_files, min_image_side, preflight, write_bad_files

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
SKIP = r"data\.bad_files=skip"


# ------------------------------------------------------------------------------------- helpers
def rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_set(root: Path, n: int = 5, size: tuple[int, int] = (64, 48)) -> tuple[Path, Path]:
    """``n`` random RGB PNGs ``im<i>.png`` (W x H = ``size``) with 3-class labels of the same stem."""
    imgs, labs = root / "images", root / "labels"
    imgs.mkdir(parents=True)
    labs.mkdir()
    for i in range(n):
        Image.fromarray(rgb(size[1], size[0])).save(imgs / f"im{i}.png")
        Image.fromarray(RNG.integers(0, 3, size=size[::-1], dtype=np.uint8)).save(labs / f"im{i}.png")
    return imgs, labs


def folder_config(imgs: Path, labs: Path | None, knn: tuple[int, int] = (2, 1), **data) -> ExperimentConfig:
    """A folder dataset (train = eval unless ``data`` says otherwise) and a tiny random-weight
    backbone (ViT-S/14 at 28 px); ``knn`` = (k, num_neighbors)."""
    return ExperimentConfig.model_validate({
        "data": {"dataset": "folder", "train_images": str(imgs), "train_labels": labs and str(labs),
                 "eval_images": str(imgs), "eval_labels": labs and str(labs), "num_classes": 3, "five_crop": False,
                 **data},
        "embed": {"backbone": "dinov2_vits14", "pretrained": False, "train_resolution": 28, "eval_resolution": 28,
                  "batch_size": 4, "num_workers": 1, "flip_tta": False},
        "knn": {"k": knn[0], "num_neighbors": knn[1]}, "device": "cpu",
    })


def jpeg_bytes(pixels: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", **save)
    return buf.getvalue()


def png_bytes(pixels: np.ndarray, bit_depth: int, color_type: int, width: int | None = None,
              height: int | None = None) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB); ``width``/``height`` may lie about the data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = pixels.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + pixels[y].astype(dtype).tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", width or w, height or h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# -------------------------------------------------------------------- unreadable image files
@pytest.mark.parametrize("defect,reason", [
    ("truncated", "image file is truncated"),
    ("empty", r"the file is empty \(0 bytes\)"),
    ("text", "cannot identify image file"),
])
def test_unreadable_image_stops_preflight_naming_the_file(tmp_path, defect, reason):
    imgs, labs = write_set(tmp_path)
    (imgs / "im2.png").unlink()
    jpeg = jpeg_bytes(rgb(48, 64))
    data = {"truncated": jpeg[: len(jpeg) // 2], "empty": b"", "text": b"name,value\n1,2\n"}[defect]
    (imgs / "im2.jpg").write_bytes(data)
    with pytest.raises(DataError, match=rf"cannot read image .*im2\.jpg: {reason}.*fix or remove it.*{SKIP}"):
        preflight(folder_config(imgs, labs))


def test_truncated_jpeg_is_found_by_the_reduced_decode(tmp_path):
    """check_image decodes JPEGs at 1/8 scale: still every byte, so the last missing bytes are found."""
    jpeg = jpeg_bytes(rgb(400, 600))
    (tmp_path / "ok.jpg").write_bytes(jpeg)
    (tmp_path / "cut.jpg").write_bytes(jpeg[:-200])
    assert check_image(tmp_path / "ok.jpg") == (600, 400)
    with pytest.raises(DataError, match=r"cut\.jpg: image file is truncated"):
        check_image(tmp_path / "cut.jpg")


# --------------------------------------------------------------- unusual but valid image files
def _odd_images(folder: Path) -> dict[str, np.ndarray]:
    """Write one file per unusual kind; return the RGB pixels each must load as (None: checked apart)."""
    gray = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    Image.fromarray(gray, mode="L").save(folder / "gray_png.png")
    Image.fromarray(gray, mode="L").save(folder / "gray_jpeg.jpg", quality=95)
    rgba = np.concatenate([rgb(48, 64), RNG.integers(0, 256, (48, 64, 1), dtype=np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    palette = Image.new("P", (64, 48))
    colours = [255, 0, 0, 0, 255, 0, 0, 0, 255]
    palette.putpalette(colours + [0] * (768 - len(colours)))
    index = (np.arange(64)[None, :] // 22 + np.zeros((48, 1), int)).astype(np.uint8)
    palette.putdata(index.ravel().tolist())
    palette.info["transparency"] = 0  # a transparent palette entry: still loads as its colour
    palette.save(folder / "palette.png", transparency=0)
    wide = (np.tile(np.linspace(0, 65535, 64), (48, 1))).astype(np.uint16)
    Image.fromarray(wide).save(folder / "gray16.png")
    rgb16 = np.stack([wide, 65535 - wide, np.full_like(wide, 257 * 100)], axis=-1)
    (folder / "rgb16.png").write_bytes(png_bytes(rgb16, 16, 2))
    cmyk = np.zeros((48, 64, 4), np.uint8)
    cmyk[:, 22:44, 0] = 255  # cyan
    cmyk[:, 44:, 3] = 255  # black
    Image.fromarray(cmyk, mode="CMYK").save(folder / "cmyk.jpg", quality=100)
    return {
        "gray_png": np.stack([gray] * 3, -1),
        "gray_jpeg": np.stack([gray] * 3, -1),
        "rgba": rgba[..., :3],
        "palette": np.array(colours, np.uint8).reshape(3, 3)[index],
        "gray16": np.stack([np.rint(wide / 257).astype(np.uint8)] * 3, -1),
        "rgb16": (rgb16 >> 8).astype(np.uint8),  # PIL keeps the high byte of 16-bit colour PNGs
        "cmyk": np.array([[255, 255, 255], [0, 255, 255], [0, 0, 0]], np.uint8)[np.arange(64)[None, :] // 22
                                                                                + np.zeros((48, 1), int)],
    }


def test_unusual_images_load_as_rgb_and_pass_preflight(tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    expected = _odd_images(imgs)
    for name, want in expected.items():
        path = next(imgs.glob(f"{name}.*"))
        got = np.asarray(load_image(path))
        assert got.shape == (48, 64, 3) and got.dtype == np.uint8, name
        lossy = path.suffix == ".jpg"
        diff = np.abs(got.astype(int) - want.astype(int))
        assert (diff.mean() < 2 and diff.max() < 40) if lossy else not diff.any(), (name, diff.mean(), diff.max())
    # 16-bit data is scaled, not clipped: mid-grey stays mid-grey
    assert np.asarray(load_image(imgs / "gray16.png"))[0, 32, 0] in (129, 130)
    # the whole folder passes preflight and goes through the dataset
    labs = tmp_path / "labels"
    labs.mkdir()
    for name in expected:
        Image.fromarray(RNG.integers(0, 3, (48, 64), dtype=np.uint8)).save(labs / f"{name}.png")
    report = preflight(folder_config(imgs, labs))
    assert report.sizes == {"train": 7, "eval": 7} and report.bad_files == ()
    ds = SegmentationDataset(split_info(report.config, "eval").samples, resolution=28, mean=(0.5,) * 3,
                             std=(0.5,) * 3, num_classes=3)
    assert all(ds[i]["image"].shape == (3, 28, 28) for i in range(len(ds)))


# ------------------------------------------------------------------------- EXIF orientation
def _rotated_photo(folder: Path) -> Path:
    """A JPEG stored 80x40 (left half red, right half blue) whose EXIF says "rotate 90 degrees
    clockwise to display": upright it is 40x80, red on top, blue below."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = (255, 0, 0)
    pixels[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "im0.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def test_exif_rotated_photo_is_upright_and_its_label_must_match_the_upright_size(tmp_path):
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    photo = _rotated_photo(imgs)
    upright = np.asarray(load_image(photo)).astype(int)
    assert upright.shape == (80, 40, 3)
    assert upright[:35, :, 0].mean() > 200 and upright[45:, :, 2].mean() > 200  # red on top, blue below
    # The rule: a label is drawn on the picture as displayed, so it is 40x80: 0 on top, 1 below.
    label = np.zeros((80, 40), np.uint8)
    label[40:] = 1
    Image.fromarray(label).save(labs / "im0.png")
    Image.fromarray(rgb(80, 40)).save(imgs / "im1.png")  # a second, plain pair (knn.k = 2)
    Image.fromarray(label).save(labs / "im1.png")
    cfg = folder_config(imgs, labs, num_classes=2)
    assert preflight(cfg).sizes == {"train": 2, "eval": 2}
    item = SegmentationDataset(split_info(cfg, "eval").samples, resolution=28, mean=(0.0,) * 3, std=(1.0,) * 3,
                               num_classes=2)[0]
    image, lab = item["image"].numpy(), item["label"].numpy()
    red, blue = image[0] > 0.8, image[2] > 0.8
    assert (lab[red] == 0).all() and (lab[blue] == 1).all() and red.sum() > 100 and blue.sum() > 100
    # A label of the stored (unrotated) size is refused, naming both files, sizes and the rule.
    Image.fromarray(label.T.copy()).save(labs / "im0.png")
    with pytest.raises(DataError, match=r"label .*im0\.png is 80x40 \(WxH\) but its image is 40x80 \(.*im0\.jpg\) "
                                        r"\(the transpose: .*EXIF orientation.*" + SKIP):
        preflight(cfg)


# --------------------------------------------------------------------------- size extremes
def test_images_below_one_patch_are_refused_with_the_minimum(tmp_path):
    imgs, labs = write_set(tmp_path, n=3)
    Image.fromarray(rgb(30, 10)).save(imgs / "im1.png")
    Image.fromarray(np.zeros((30, 10), np.uint8)).save(labs / "im1.png")
    cfg = folder_config(imgs, labs)
    with pytest.raises(DataError, match=r"image .*im1\.png is 10x30 px: too small for dinov2_vits14, whose train "
                                        r"images need a shorter side of at least 14 px .*" + SKIP):
        preflight(cfg)
    # under five-crop a training image's half-size crops must reach one patch: 27 px (round(13.5) = 14)
    crops = folder_config(imgs, labs, five_crop=True)
    assert min_image_side(crops, "train") == 27 and min_image_side(crops, "eval") == 14
    Image.fromarray(rgb(26, 40)).save(imgs / "im1.png")
    Image.fromarray(np.zeros((26, 40), np.uint8)).save(labs / "im1.png")
    with pytest.raises(DataError, match=r"im1\.png is 40x26 px: .*at least 27 px under five-crop"):
        preflight(crops)
    # exactly one patch is enough: the image is upscaled (bicubic) to the resolution
    Image.fromarray(rgb(27, 27)).save(imgs / "im1.png")
    Image.fromarray(np.zeros((27, 27), np.uint8)).save(labs / "im1.png")
    assert preflight(crops).sizes == {"train": 3, "eval": 3}


LARGE_SCRIPT = textwrap.dedent("""
    import json, re, sys
    import numpy as np
    from stego_core.data import check_image, load_image, load_resized_image

    def status_mb(key):
        return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

    def growth(fn):
        \"\"\"Peak RSS growth (MB) while ``fn`` runs: the kernel's high-water mark, reset just before.\"\"\"
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_mb("VmRSS")
        result = fn()
        return status_mb("VmHWM") - before, result

    path = sys.argv[1]
    out = {}
    out["check"], out["size"] = growth(lambda: check_image(path))
    out["resized"], (img, full) = growth(lambda: load_resized_image(path, 322))
    arr = np.asarray(img).astype(float)
    out["crop"], out["full"] = list(img.size), list(full)
    out["left"], out["right"] = arr[:, :150].mean((0, 1)).tolist(), arr[:, 172:].mean((0, 1)).tolist()
    out["load_image"], _ = growth(lambda: load_image(path).size)  # the full decode, for contrast
    print(json.dumps(out))
""")


def test_very_large_jpeg_is_checked_and_embedded_in_bounded_memory(tmp_path):
    """A 12000 x 12000 photo (432 MB decoded): the preflight check and the dataset's resize-crop
    each raise the peak RSS by less than 64 MB (a full decode, measured last, by more than 300 MB)."""
    path = tmp_path / "huge.jpg"
    make = ("from PIL import Image; im = Image.new('RGB', (12000, 12000), (255, 0, 0)); "
            "im.paste((0, 0, 255), (6000, 0, 12000, 12000)); im.save(r'%s', quality=90)" % path)
    subprocess.run([sys.executable, "-c", make], check=True, timeout=300)
    proc = subprocess.run([sys.executable, "-c", LARGE_SCRIPT, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["size"] == [12000, 12000] and m["full"] == [12000, 12000] and m["crop"] == [322, 322]
    assert m["check"] < 64 and m["resized"] < 64, m
    assert m["load_image"] > 300, m  # the bound above is not trivially met
    assert m["left"][0] > 240 and m["left"][2] < 15 and m["right"][2] > 240 and m["right"][0] < 15, m


def test_reduced_decode_keeps_the_geometry(tmp_path):
    """A large JPEG decoded at 1/8 scale gives the crop of the full decode within JPEG noise, and a
    non-square one keeps its label registered (the crop window comes from the full size)."""
    pixels = np.zeros((4500, 6003, 3), np.uint8)  # 6003 is not a multiple of 8: the reduced image has a margin
    pixels[:, :3000] = (255, 0, 0)
    pixels[:, 3000:] = (0, 0, 255)
    pixels[2000:2500, 2900:3100] = (0, 255, 0)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    small, full = load_resized_image(tmp_path / "big.jpg", 100)
    exact = resize_center_crop_image(load_image(tmp_path / "big.jpg"), 100)
    assert full == (6003, 4500) and small.size == (100, 100)
    diff = np.abs(np.asarray(small).astype(int) - np.asarray(exact).astype(int))
    assert diff.mean() < 2.0, diff.mean()


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A 30000 x 30000 PNG header (900 MP, over PIL's 179 MP limit) is refused from its header."""
    bomb = tmp_path / "images" / "im3.png"
    imgs, labs = write_set(tmp_path)
    bomb.write_bytes(png_bytes(np.zeros((2, 2), np.uint8), 8, 0, width=30000, height=30000))
    with pytest.raises(DataError, match=r"cannot read image .*im3\.png: it is too large to decode safely "
                                        r"\(Image size \(900000000 pixels\) exceeds limit.*downscale it or remove it"):
        check_image(bomb)
    with pytest.raises(DataError, match=rf"im3\.png: it is too large.*{SKIP}"):
        preflight(folder_config(imgs, labs))


# ---------------------------------------------------------------------------------- labels
def test_label_of_another_size_names_both_files_and_sizes(tmp_path):
    imgs, labs = write_set(tmp_path)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(labs / "im2.png")
    with pytest.raises(DataError, match=rf"label .*labels/im2\.png is 12x10 \(WxH\) but its image is 64x48 "
                                        rf"\(.*images/im2\.png\); labels must have the size of their image: "
                                        rf"fix the label or remove the pair, or set {SKIP}"):
        preflight(folder_config(imgs, labs))


def test_label_ids_above_the_class_count_are_named(tmp_path):
    imgs, labs = write_set(tmp_path)
    bad = np.zeros((48, 64), np.uint8)
    bad[0, :3] = (5, 7, 255)  # 255 = void is fine
    Image.fromarray(bad).save(labs / "im0.png")
    with pytest.raises(DataError, match=r"label .*im0\.png holds ids \[5, 7\] outside the expected range 0\.\.2 "
                                        rf"of 3 classes \(plus 255 = ignore\).*{SKIP}"):
        preflight(folder_config(imgs, labs))


def test_images_without_labels_in_a_labelled_split(tmp_path):
    imgs, labs = write_set(tmp_path)
    (labs / "im1.png").unlink()
    (labs / "im3.png").unlink()
    # evaluation folder: the listing names them
    with pytest.raises(DataError, match=rf"2 of 5 images in .*images have no label .*\(im1, im3\).*{SKIP}"):
        preflight(folder_config(imgs, labs))
    # a labelled training folder (registered datasets list theirs the same way): preflight names them
    ev_imgs, ev_labs = write_set(tmp_path / "eval", n=2)
    cfg = folder_config(imgs, labs, eval_images=str(ev_imgs), eval_labels=str(ev_labs))
    with pytest.raises(DataError, match=rf"2 of 5 images of the labelled train split have no label <stem>\.png in "
                                        rf".*labels: .*im1\.png, .*im3\.png; .*{SKIP}"):
        preflight(cfg)
    # skip: left out of both, each named
    report = preflight(folder_config(imgs, labs, bad_files="skip"))
    assert report.sizes == {"train": 3, "eval": 3}
    assert [Path(b.file).name for b in report.bad_files] == ["im1.png", "im3.png"]
    assert all("has no label im" in b.reason for b in report.bad_files)


def test_empty_folder_is_named(tmp_path):
    imgs, labs = write_set(tmp_path, n=1)
    (imgs / "im0.png").unlink()
    with pytest.raises(DataError, match=rf"image folder {imgs} holds no images"):
        preflight(folder_config(imgs, labs))


def test_unicode_and_spaces_in_paths(tmp_path):
    root = tmp_path / "dätä sét" / "日本 語"
    imgs, labs = write_set(root, n=4)
    for i in range(4):
        (imgs / f"im{i}.png").rename(imgs / f"ñame {i} é.png")
        (labs / f"im{i}.png").rename(labs / f"ñame {i} é.png")
    report = preflight(folder_config(imgs, labs))
    assert report.sizes == {"train": 4, "eval": 4}
    samples = split_info(report.config, "eval").samples
    assert samples[0].label == labs / "ñame 0 é.png"
    out = embed_stage(report.config, "eval", tmp_path / "emb")
    assert out["num_images"] == 4
    index = json.loads((tmp_path / "emb" / "index.json").read_text())
    assert index[3]["image"] == str(imgs / "ñame 3 é.png")


# ---------------------------------------------------------------------------------- config
def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "my config.yaml"
    path.write_text("train:\n  steps: 5\n  lr: [1e-4, 2\ndata: {}\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not valid YAML at line 4, column 5: .*fix the file"):
        build_config(config_file=path)


def test_unreadable_config_files(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text \(byte 9\)"):
        build_config(config_file=tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match=rf"config file {tmp_path} is a folder"):
        build_config(config_file=tmp_path)


def test_unknown_keys_in_a_file_list_the_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {stepz: 3}\nmodel: {}\n")
    with pytest.raises(ConfigError) as err:
        build_config(config_file=path)
    msg = str(err.value)
    assert "train.stepz: Extra inputs are not permitted (got 3); valid keys at train: batch_size," in msg
    assert "steps" in msg.split("train.stepz")[1].split("\n")[0]
    assert "model: Extra inputs are not permitted (got {}); valid keys at top level: baselines, cluster" in msg


@pytest.mark.parametrize("yaml_text,match", [
    ('train: {steps: "abc"}', r"train\.steps: Input should be a valid integer.*\(got 'abc'\)"),
    ("train: {lr: -0.001}", r"train\.lr: Input should be greater than 0 \(got -0\.001\)"),
    ("train: {dim: 0}", r"train\.dim: Input should be greater than or equal to 1 \(got 0\)"),
    ("embed: {batch_size: 0}", r"embed\.batch_size: Input should be greater than or equal to 1"),
    ("data: {bad_files: ignore}", r"data\.bad_files: Input should be 'error' or 'skip' \(got 'ignore'\)"),
    ("data: {exclude: ['']}", r"data\.exclude: Value error, data\.exclude holds an empty path"),
])
def test_wrong_types_and_out_of_range_values_name_the_field(tmp_path, yaml_text, match):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=match):
        build_config(config_file=path)


def test_knn_k_larger_than_the_training_set_fails_in_preflight(tmp_path):
    imgs, labs = write_set(tmp_path, n=5)
    cfg = folder_config(imgs, labs, knn=(10, 3))
    with pytest.raises(ValueError, match=r"knn\.k=10 is larger than the training set: 5 images; set knn\.k to at "
                                         r"most 5"):
        preflight(cfg, check_files=False)
    assert preflight(folder_config(imgs, labs, knn=(10, 3), five_crop=True)).sizes["train"] == 5  # 25 crops


# ------------------------------------------------------------------------------ skip policy
def _two_bad_files(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    """``n`` good pairs, then im1's image truncated and im4's label holding an id above the classes."""
    imgs, labs = write_set(tmp_path, n=n)
    (imgs / "im1.png").write_bytes((imgs / "im1.png").read_bytes()[:200])
    Image.fromarray(np.full((48, 64), 9, np.uint8)).save(labs / "im4.png")
    return imgs, labs


def test_error_policy_raises_on_the_first_bad_file(tmp_path):
    imgs, labs = _two_bad_files(tmp_path)
    with pytest.raises(DataError, match=rf"cannot read image .*images/im1\.png: .*{SKIP}"):
        preflight(folder_config(imgs, labs))


def test_skip_policy_embeds_the_rest_and_lists_the_bad_files(tmp_path):
    imgs, labs = _two_bad_files(tmp_path)
    report = preflight(folder_config(imgs, labs, bad_files="skip"))
    assert [(Path(b.file).relative_to(tmp_path).as_posix(), b.split) for b in report.bad_files] == [
        ("images/im1.png", "train"), ("labels/im4.png", "train")]
    assert "cannot read image" in report.bad_files[0].reason
    assert "holds ids [9] outside the expected range 0..2 of 3 classes" in report.bad_files[1].reason
    assert report.config.data.exclude == (str(imgs / "im1.png"), str(labs / "im4.png"))
    assert report.sizes == {"train": 4, "eval": 4}
    # the stages list the same samples: embed runs on N - 2 images
    out = embed_stage(report.config, "eval", tmp_path / "emb")
    assert out["num_images"] == 4 and out["feature_shape"][0] == 4
    stems = [row["stem"] for row in json.loads((tmp_path / "emb" / "index.json").read_text())]
    assert stems == ["im0", "im2", "im3", "im5"]
    # the exclusion is part of the embed stage's cache key
    from tasks.views import stage_view

    view = stage_view("embed", report.config, role="eval")
    assert view["data"]["exclude"] == [str(imgs / "im1.png"), str(labs / "im4.png")]
    # the list, rebuilt from the config alone (a run whose preflight ran elsewhere), and its file
    assert excluded_files(report.config) == list(report.bad_files)
    written = json.loads(write_bad_files(tmp_path / "run", report.bad_files).read_text())
    assert [row["file"] for row in written] == [str(imgs / "im1.png"), str(labs / "im4.png")]
    assert set(written[0]) == {"file", "reason", "split"}
    # preflight is idempotent: run again on its own output it finds nothing new
    again = preflight(report.config)
    assert again.config == report.config and again.bad_files == () and again.sizes == report.sizes


def test_skip_policy_with_only_bad_files_is_an_error(tmp_path):
    imgs, labs = write_set(tmp_path, n=2)
    for i in range(2):
        (imgs / f"im{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"the train split has no images left after leaving out 2 bad files "
                                        r"\(cannot read image .*im0\.png: the file is empty"):
        preflight(folder_config(imgs, labs, bad_files="skip"))


def test_skip_policy_rechecks_knn_k_after_leaving_files_out(tmp_path):
    imgs, labs = _two_bad_files(tmp_path, n=5)
    cfg = folder_config(imgs, labs, knn=(5, 1), bad_files="skip")
    with pytest.raises(ValueError, match=r"knn\.k=5 is larger than the training set: 3 images after leaving out 2 "
                                         r"bad files"):
        preflight(cfg)
