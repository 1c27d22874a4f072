"""Predictions on new images: whole images at their own size, the run's matching, the written files.

Run folders are built by hand (a random-weight backbone, a random head and centroids, a metrics.json
with a known assignment), so every expected class map is computed from the segmenter's own clusters.
"""
import json

import numpy as np
import pytest
from PIL import Image

from stego_core.colours import blend, colorize
from stego_core.data import DATASETS, DataError
from stego_core.inference import SUMMARY_FILE, Segmenter, matching_of, pass_size, predict_folder, predict_images
from tests_helpers import HAND_RUN_ASSIGNMENT, HAND_RUN_CLUSTERS, hand_made_run

K = HAND_RUN_CLUSTERS
CAMVID = DATASETS["camvid"]

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return hand_made_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def segmenter(run_dir):
    return Segmenter.from_run(run_dir, device="cpu")


def photo(height, width, seed=0):
    """A smooth image with structure (gradients and a block), so clusters vary over it."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), np.full_like(x, 90.0)], -1)
    img[height // 3: 2 * height // 3, width // 4: width // 2] = np.random.default_rng(seed).integers(0, 255, 3)
    return img.astype(np.uint8)


@pytest.mark.parametrize("height,width", [(97, 211), (300, 121), (64, 64), (13, 40)])
def test_output_is_the_input_size(segmenter, height, width):
    image = photo(height, width)
    clusters = segmenter.clusters(image)
    assert clusters.shape == (height, width) and clusters.dtype == np.uint8 and clusters.max() < K
    assert segmenter.classes(image).shape == (height, width)


def test_pass_keeps_the_aspect_ratio_on_the_patch_grid():
    assert pass_size(97, 211, 28, 14) == (28, 56)  # 28 x 60.9 -> rounded to 56
    assert pass_size(300, 121, 28, 14) == (70, 28)  # 69.4 x 28
    assert pass_size(64, 64, 322, 14) == (322, 322)
    assert pass_size(5, 1000, 28, 14) == (28, 5600)


def test_classes_are_the_assignment_of_the_clusters(segmenter):
    assert segmenter.has_matching and segmenter.class_names == list(CAMVID.class_names)
    assert (segmenter.colours == np.asarray(CAMVID.colors, np.uint8)).all()
    image = photo(97, 211)
    clusters = segmenter.clusters(image)
    assert len(np.unique(clusters)) > 1  # the check below is not about one constant
    table = np.where(np.array(HAND_RUN_ASSIGNMENT) < 0, 255, HAND_RUN_ASSIGNMENT)
    assert (segmenter.classes(image) == table[clusters]).all()


def test_a_whole_image_pass_sees_every_pixel(segmenter):
    """No crop: a change at the image's far left edge changes the prediction there (a centre crop of
    a 1:4 image would not see it)."""
    image = photo(50, 200)
    other = image.copy()
    other[:, :20] = 255 - other[:, :20]
    assert (segmenter.probabilities(image)[:, :, :20] != segmenter.probabilities(other)[:, :, :20]).any()


def test_bad_image_arrays_are_refused(segmenter):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        segmenter.clusters(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        segmenter.clusters(np.zeros((10, 10, 3), np.float32))


def write_images(folder, sizes):
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(photo(h, w, seed=i)).save(folder / f"im{i}.png")
    return folder


def test_predict_images_writes_full_size_class_maps_overlays_and_shares(run_dir, segmenter, tmp_path):
    sizes = [(97, 211), (300, 121), (64, 64)]
    images = write_images(tmp_path / "images", sizes)
    written = predict_folder(segmenter, images, tmp_path / "out", progress=False)
    assert [p.name for p in written] == ["im0.png", "im1.png", "im2.png"]
    for i, (h, w) in enumerate(sizes):
        png = Image.open(tmp_path / "out" / f"im{i}.png")
        assert png.mode == "P" and png.size == (w, h)
        ids = np.asarray(png)
        expected = segmenter.classes(np.asarray(Image.open(images / f"im{i}.png").convert("RGB")))
        assert (ids == expected).all()
        assert png.getpalette()[:3 * 11] == [v for c in CAMVID.colors for v in c]
        overlay = Image.open(tmp_path / "out" / f"im{i}_overlay.png")
        assert overlay.width >= w and overlay.height > h  # the legend strip below the image
        painted = blend(np.asarray(Image.open(images / f"im{i}.png").convert("RGB")), colorize(ids, CAMVID.colors), 0.5)
        assert (np.asarray(overlay)[:h, :w] == painted).all()
        record = json.loads((tmp_path / "out" / f"im{i}.json").read_text())
        assert record["size"] == [w, h] and record["ids"] == "classes" and record["image"] == f"im{i}.png"
        assert sum(record["shares"].values()) == pytest.approx(1.0)
        names = {segmenter.label(int(c)) for c in np.unique(ids)}
        assert set(record["shares"]) == names <= set(CAMVID.class_names) | {"no class"}
        assert record["shares"] == pytest.approx({segmenter.label(int(c)): float((ids == c).mean()) for c in np.unique(ids)})
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["images"] == 3 and summary["class_names"] == list(CAMVID.class_names)
    assert sum(summary["shares"].values()) == pytest.approx(1.0)


def test_a_run_without_matching_writes_cluster_ids(tmp_path):
    run = hand_made_run(tmp_path / "run", matching=False, flip=False)
    images = write_images(tmp_path / "images", [(33, 47)])
    predict_images(run, images, tmp_path / "out", device="cpu", progress=False)
    seg = Segmenter.from_run(run, device="cpu")
    assert not seg.has_matching and seg.class_names is None and seg.colours.shape == (K, 3)
    expected = seg.clusters(photo(33, 47, seed=0))
    assert (seg.classes(photo(33, 47, seed=0)) == expected).all()
    ids = np.asarray(Image.open(tmp_path / "out" / "im0.png"))
    assert ids.shape == (33, 47) and (ids == expected).all()
    record = json.loads((tmp_path / "out" / "im0.json").read_text())
    assert record["ids"] == "clusters" and all(k.startswith("cluster ") for k in record["shares"])
    assert sum(record["shares"].values()) == pytest.approx(1.0)


def test_bad_folders_and_images_are_named(segmenter, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        predict_images(tmp_path / "no-run", empty, tmp_path / "out", device="cpu", progress=False)
    bad = write_images(tmp_path / "bad", [(20, 20)])
    (bad / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.jpg"):
        predict_folder(segmenter, bad, tmp_path / "out", progress=False)
    Image.fromarray(photo(9, 9)).save(bad / "_summary.png")
    with pytest.raises(DataError, match="would overwrite the summary"):
        predict_folder(segmenter, bad, tmp_path / "out", progress=False)
    (bad / "_summary.png").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished run folder"):
        predict_images(tmp_path, bad, tmp_path / "out", device="cpu", progress=False)


def test_crf_refines_at_the_original_size(run_dir):
    seg = Segmenter.from_run(run_dir, device="cpu", use_crf=True)
    image = photo(41, 73)
    probs = seg.probabilities(image)
    assert probs.shape == (K, 41, 73) and np.allclose(probs.sum(0), 1, atol=1e-4)
    assert seg.classes(image).shape == (41, 73)


def test_the_matching_is_read_from_the_cluster_method():
    plain = {"assignment": [1, 0], "per_class_iou": {"a": 0.1, "b": 0.2}}
    crf = {"assignment": [0, 1], "per_class_iou": {"a": 0.3, "b": 0.4}}
    metrics = {"stego_cluster": plain, "stego_cluster_crf": crf, "stego_linear": {"assignment": None}}
    assert matching_of(metrics, use_crf=False) == ([1, 0], ["a", "b"])
    assert matching_of(metrics, use_crf=True) == ([0, 1], ["a", "b"])
    assert matching_of({"stego_cluster": plain}, use_crf=True) == ([1, 0], ["a", "b"])
    assert matching_of({"stego_cluster": {"assignment": [1, 0]}}, use_crf=False) == ([1, 0], None)
    assert matching_of({}, use_crf=False) == (None, None)
