"""Streaming is a property of the design, not of the numbers: the stages read through the data-access
layer and give bit for bit the same head, centroids and probes whether the tables are resident or
streamed (and the code spilled to a scratch file), whether the split is embedded whole or in shards,
and whether the features are stored or recomputed from the crops (on CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stego_core import stages
from stego_core.features import open_embedding
from tests_helpers import SYNTHETIC_CLASSES as CLASSES
from tests_helpers import synthetic_config as config
from tests_helpers import synthetic_folder as write_folder

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, "train", 6, 0)
    write_folder(root, "val", 2, 1)
    return root


def folder(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    return path


def embed_train(cfg: ExperimentConfig, root: Path, shards: list[tuple[int, int]] | None = None) -> Path:
    if shards is None:
        crop = folder(root, "crop/whole")
        stages.crop_stage(cfg, crop)
        embed = folder(root, "embed/whole")
        stages.embed_stage(cfg, "train", embed, crop)
        return embed
    parts = []
    for a, b in shards:
        crop = folder(root, f"crop/{a}-{b}")
        stages.crop_stage(cfg, crop, (a, b))
        parts.append(folder(root, f"embed/{a}-{b}"))
        stages.embed_stage(cfg, "train", parts[-1], crop, (a, b))
    joined = folder(root, "embed/joined")
    summary = stages.merge_shards(parts, joined)
    assert summary["reads"] == [f"../{a}-{b}" for a, b in shards]
    return joined


def readouts(cfg: ExperimentConfig, embed: Path, root: Path, raw: bool = True) -> dict[str, bytes]:
    """Every trained output of the stages that read the training set, as bytes (``raw=False``: not the
    readouts of the raw features)."""
    knn, head = folder(root, "knn/k"), folder(root, "train_head/k")
    stages.knn_stage(cfg, embed, knn)
    summary = stages.train_stage(cfg, embed, knn, head)
    out = {"knn": (knn / "knn.npy").read_bytes(), "head": (head / "head.safetensors").read_bytes(),
           "history": (head / "history.json").read_bytes(), "placement": summary["features"]}
    for name, head_dir, method in (("kmeans", head, "kmeans"), ("probe", head, "probe"), ("raw", None, "kmeans")):
        if head_dir is None and not raw:
            continue
        out_dir = folder(root, f"cluster/{name}")
        out[f"{name}_maps"] = stages.cluster_stage(cfg, embed, head_dir, out_dir, CLASSES, method)["maps"]
        out[name] = (out_dir / "centroids.npy").read_bytes()
    for name, head_dir in (("linear", head), ("raw_linear", None)):
        if head_dir is None and not raw:
            continue
        out_dir = folder(root, f"linear_probe/{name}")
        stages.linear_stage(cfg, embed, head_dir, out_dir, CLASSES)
        out[name] = (out_dir / "linear.safetensors").read_bytes()
    assert not list(root.glob("*/.scratch-*")), "scratch folders are removed"
    return out


TRAINED = ("knn", "head", "history", "kmeans", "probe", "raw", "linear", "raw_linear")


def test_streamed_readouts_equal_the_in_memory_ones(dataset, tmp_path):
    resident = config(dataset)
    embed = embed_train(resident, tmp_path / "a")
    held = readouts(resident, embed, tmp_path / "a")
    streamed = readouts(config(dataset, placement="stream"), embed, tmp_path / "b")
    assert "resident in host memory" in held["placement"] and "resident" in held["kmeans_maps"]
    assert "memory.placement=stream" in streamed["placement"] and "scratch file" in streamed["kmeans_maps"]
    for name in TRAINED:
        assert held[name] == streamed[name], name
    tiny = readouts(config(dataset, host_gb=1e-6), embed, tmp_path / "c")  # over budget: the same, automatically
    assert "over budget" in tiny["placement"]
    for name in TRAINED:
        assert held[name] == tiny[name], name


def test_a_sharded_split_reads_and_trains_as_the_whole_one(dataset, tmp_path):
    cfg = config(dataset)
    whole = open_embedding(embed_train(cfg, tmp_path / "whole"))
    joined = open_embedding(embed_train(cfg, tmp_path / "sharded", shards=stages.shard_ranges(6, 4)))
    for name in ("features", "labels", "descriptors"):
        np.testing.assert_array_equal(np.asarray(getattr(joined, name)), np.asarray(getattr(whole, name)), err_msg=name)
    assert joined.index == whole.index and len(whole.index) == 30
    a = readouts(cfg, whole.folder, tmp_path / "whole")
    b = readouts(cfg, joined.folder, tmp_path / "sharded")
    for name in TRAINED:
        assert a[name] == b[name], name


def test_recomputed_features_are_the_stored_ones(dataset, tmp_path):
    stored_dir = embed_train(config(dataset), tmp_path / "stored")
    stored = open_embedding(stored_dir)
    cfg = config(dataset).model_copy(update={"train": config(dataset).train.model_copy(update={"features": "recompute"})})
    root = tmp_path / "recompute"
    embed = embed_train(cfg, root)
    assert not (embed / "features.npy").exists() and (embed / "recompute.json").is_file()
    assert json.loads((embed / "recompute.json").read_text())["crops"] == "../../crop/whole"
    again = open_embedding(embed)
    assert getattr(again.features, "on_demand", False) and again.features.shape == stored.features.shape
    np.testing.assert_array_equal(np.asarray(again.descriptors), np.asarray(stored.descriptors))
    idx = np.array([29, 3, 3, 0, 17])
    # The same crops through the same backbone, in other batches: the stored fp16 features to within two fp16
    # steps (oneDNN picks kernels by batch size on some CPUs, which moves float32 results by ~1e-7 and can flip
    # the fp16 rounding of a few values; on others they are equal bit for bit).
    recomputed, expected = again.features[idx].astype(np.float32), np.asarray(stored.features)[idx].astype(np.float32)
    step = np.abs(np.spacing(expected.astype(np.float16))).astype(np.float32)
    assert np.all(np.abs(recomputed - expected) <= 2 * step), float((np.abs(recomputed - expected) / step).max())
    assert np.mean(recomputed == expected) > 0.99
    # The readouts of the code (the raw ones would run the backbone at every probe step: slow, and the same path).
    out = readouts(cfg, embed, root, raw=False)
    assert "computed for each batch (features recomputed by dino_vits8)" in out["placement"]
    reference = readouts(config(dataset), stored_dir, tmp_path / "stored", raw=False)
    assert out["knn"] == reference["knn"]  # from the descriptors, which are equal


def test_recompute_needs_the_crops(dataset, tmp_path):
    cfg = config(dataset).model_copy(update={"train": config(dataset).train.model_copy(update={"features": "recompute"})})
    with pytest.raises(ValueError, match="train.features=recompute reads the training crops"):
        stages.embed_stage(cfg, "train", folder(tmp_path, "e"))


def test_shard_rows_are_checked(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"shard rows \(4, 9\) do not lie within the split's 6 images"):
        stages.crop_stage(config(dataset), folder(tmp_path, "c"), (4, 9))
    assert stages.shard_ranges(6, 4) == [(0, 4), (4, 6)] and stages.shard_ranges(3, 10) == [(0, 3)]
