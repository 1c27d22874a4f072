"""The embed stage's two decoding loaders write the same bytes, and the same bytes as the plain recipe.

Real CamVid images (5 train frames + their labels), a randomly initialised ViT-S/14 on CPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stego_core.backbones import create_backbone
from stego_core.data import SegmentationDataset, dataset_samples
from stego_core import features
from stego_core.features import _to_float16, collate_batch, extract_features, open_embedding, resolve_loader
from stego_core.knn import global_descriptors, unit_descriptors

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def setup(camvid_root):
    torch.manual_seed(0)
    backbone = create_backbone("dinov2_vits14", pretrained=False).eval()
    samples = dataset_samples("camvid", "train", camvid_root, limit=5)
    ds = SegmentationDataset(samples, resolution=56, mean=MEAN, std=STD, num_classes=11, label_map="camvid11")
    return backbone, ds


def test_threads_and_processes_write_identical_files(setup, tmp_path):
    backbone, ds = setup
    summaries = {}
    for loader in ("threads", "processes"):
        summaries[loader] = extract_features(backbone, ds, tmp_path / loader, batch_size=2, num_workers=2,
                                             flip=True, progress=False, loader=loader)
    assert summaries["threads"]["loader"] == "threads" and summaries["processes"]["loader"] == "processes"
    for name in ("features.npy", "features_flip.npy", "labels.npy", "descriptors.npy", "index.json"):
        assert (tmp_path / "threads" / name).read_bytes() == (tmp_path / "processes" / name).read_bytes(), name
    emb = open_embedding(tmp_path / "processes")
    out = {"features": emb.features, "features_flip": emb.features_flip, "labels": emb.labels}
    assert out["features"].shape == (5, 384, 4, 4) and out["features"].dtype == np.float16
    assert out["labels"].shape == (5, 56, 56) and set(np.unique(out["labels"])) <= set(range(11)) | {255}
    assert [r["stem"] for r in emb.index] == [s.stem for s in ds.samples]
    # The KNN's descriptors, written while embedding, are bit for bit what it would compute from the features.
    assert np.array_equal(unit_descriptors(np.asarray(emb.descriptors)), global_descriptors(emb.features))

    # The plain recipe: normalised float32 items from the dataset, the backbone, numpy's float16 cast.
    items = [ds[i] for i in range(len(ds))]
    with torch.inference_mode():
        images = torch.stack([it["image"] for it in items])
        expected = backbone(images).float().numpy().astype(np.float16)
        expected_flip = backbone(images.flip(-1)).float().flip(-1).numpy().astype(np.float16)
    assert np.array_equal(np.asarray(out["features"]), expected)
    assert np.array_equal(np.asarray(out["features_flip"]), expected_flip)
    labels = torch.stack([it["label"] for it in items]).numpy().clip(0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(out["labels"]), labels)


def test_uint8_items_normalise_to_the_float_items(setup):
    _, ds = setup
    raw = SegmentationDataset(ds.samples, resolution=56, mean=MEAN, std=STD, num_classes=11, label_map="camvid11",
                              normalize=False)
    item, pixels = ds[3], raw[3]
    assert pixels["image"].dtype == torch.uint8 and pixels["image"].shape == (3, 56, 56)
    assert torch.equal(raw.normalize_images(pixels["image"]), item["image"])
    assert torch.equal(pixels["label"], item["label"])
    batch = collate_batch([pixels, raw[4]])
    assert batch["label"].dtype == torch.uint8 and batch["image"].shape == (2, 3, 56, 56)


def test_float16_cast_matches_numpy():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 6, 100_000),
                        [65504.0, 65520.0, 1e9, -1e9, 6e-8, 2.9e-8, 0.0, -0.0]]).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16)
    assert np.array_equal(_to_float16(torch.from_numpy(x)).view(np.uint16), expected.view(np.uint16))


def test_auto_loader_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setitem(features._FORK_SERVER, "started", False)
    big = features.PROCESSES_MIN_IMAGES
    assert resolve_loader("auto", cpu, 4, big) == "threads"
    assert resolve_loader("auto", cuda, 4, big) == "processes"
    assert resolve_loader("auto", cuda, 4, big - 1) == "threads"  # the fork server's start would not pay
    assert resolve_loader("auto", cuda, 1, big) == "threads"
    monkeypatch.setitem(features._FORK_SERVER, "started", True)
    assert resolve_loader("auto", cuda, 4, 10) == "processes"
    assert resolve_loader("processes", cpu, 2, 10) == "processes"
    with pytest.raises(ValueError, match="embed.loader must be"):
        resolve_loader("fork", cpu, 2)
