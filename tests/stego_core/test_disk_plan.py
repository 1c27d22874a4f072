"""Disk is planned, not discovered: on a real file system too small for their arrays (a tmpfs the test
mounts), the crop and embed stages refuse before writing, with the bytes needed, the bytes free and the
folder; the plan is what the stages then write."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stego_core import stages
from stego_core.budget import DiskSpaceError, crop_bytes, embed_bytes
from stego_core.config import ExperimentConfig
from tests_helpers import synthetic_config as config
from tests_helpers import synthetic_folder as write_folder
from tests_helpers import small_tmpfs


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "small", "4m") as mount:
        yield mount


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, "train", 4, 0)
    write_folder(root, "val", 2, 1)
    return root


def test_the_stages_refuse_a_disk_too_small_before_writing(data, tmp_path, small_disk):
    cfg = config(data)
    out = small_disk / "crop"
    out.mkdir()
    with pytest.raises(DiskSpaceError, match=r"the crop stage \(20 crops at 32 px\) needs .* of disk at .*small/crop "
                                             r"but only .* free; free some space or put the artifacts on a larger disk"):
        stages.crop_stage(cfg, out)
    assert list(out.iterdir()) == []
    crops = tmp_path / "crop"
    crops.mkdir()
    stages.crop_stage(cfg, crops)
    embed = small_disk / "embed"
    embed.mkdir()
    with pytest.raises(DiskSpaceError, match=r"the embed stage \(train, 20 images\) needs .*; or set train.features=recompute"):
        stages.embed_stage(cfg, "train", embed, crops)
    assert list(embed.iterdir()) == []


def test_the_plan_is_what_the_stages_write(data, tmp_path):
    cfg = config(data)
    crops, embed = tmp_path / "crop", tmp_path / "embed"
    crops.mkdir()
    embed.mkdir()
    stages.crop_stage(cfg, crops)
    stages.embed_stage(cfg, "train", embed, crops)

    def arrays(folder: Path) -> int:
        return sum(np.load(f, mmap_mode="r").nbytes for f in folder.glob("*.npy"))

    assert arrays(crops) == crop_bytes(20, 32)
    assert arrays(embed) == stages.embed_plan(cfg, "train", 20) == embed_bytes(20, channels=384, grid=4, label_side=32,
                                                                             flip=False, features=True)
    recompute = cfg.model_copy(update={"train": cfg.train.model_copy(update={"features": "recompute"})})
    assert stages.embed_plan(recompute, "train", 20) == 20 * (32 * 32 + 4 * 384)  # labels and descriptors only
    assert isinstance(ExperimentConfig().memory.host_gb, float)
