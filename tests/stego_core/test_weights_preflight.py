"""``embed.weights`` is checked in preflight: read weights-only, keys and shapes compared with the
backbone's, before any stage or server starts. Real checkpoints are written by each test."""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stego_core.backbones import check_weights_file, create_backbone
from stego_core.backbones.registry import _FACTORIES
from stego_core.config import ExperimentConfig
from stego_core.validation import preflight

BACKBONE = "dino_vits8"


@functools.lru_cache(maxsize=1)
def _right_shapes() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in _FACTORIES[BACKBONE]().model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def right_shapes() -> dict[str, torch.Tensor]:
    """A state dict of the backbone's keys and shapes (random values, so a load is visible)."""
    return dict(_right_shapes())


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_of_the_right_shapes_passes_and_is_what_create_backbone_loads(tmp_path):
    state = right_shapes()
    pth, st = tmp_path / "w.pth", tmp_path / "w.safetensors"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, pth)  # a DINO training checkpoint
    save_file(state, str(st))
    for path in (pth, st):
        started = time.perf_counter()
        check_weights_file(BACKBONE, path)
        print(f"{path.name}: checked in {time.perf_counter() - started:.2f} s")
    loaded = create_backbone(BACKBONE, weights=pth).model.state_dict()
    assert torch.equal(loaded["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])


def bad_file(tmp_path: Path, defect: str) -> Path:
    path = tmp_path / ("w.safetensors" if defect == "safetensors_text" else "w.pth")
    state = right_shapes()
    if defect == "missing_key":
        state.pop("norm.weight")
        torch.save(state, path)
    elif defect == "extra_key":
        torch.save({**state, "decoder.weight": torch.zeros(3)}, path)
    elif defect == "wrong_shape":
        state["pos_embed"] = torch.zeros(1, 10, 384)
        torch.save(state, path)
    elif defect == "other_backbone":
        torch.save(create_backbone("resnet50", pretrained=False).model.state_dict(), path)
    elif defect == "not_a_checkpoint":
        path.write_text("this is a text file, not weights\n")
    elif defect == "empty":
        path.write_bytes(b"")
    elif defect == "truncated":
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[: 100_000])
    elif defect == "pickled_code":
        torch.save({"state_dict": state, "x": Payload(tmp_path / "pwned")}, path)
    elif defect == "no_tensors":
        torch.save({"epoch": 3, "args": [1, 2]}, path)
    elif defect == "safetensors_text":
        path.write_text("not a safetensors file")
    return path


@pytest.mark.parametrize("defect,pattern", [
    ("missing_key", r"do not fit backbone 'dino_vits8': missing keys: norm\.weight"),
    ("extra_key", r"unexpected keys: decoder\.weight"),
    ("wrong_shape", r"shape mismatches \(file vs model\): pos_embed \(1, 10, 384\) vs \(1, 785, 384\)"),
    ("other_backbone", r"do not fit backbone 'dino_vits8': missing keys: .*unexpected keys: .*layer1"),
    ("not_a_checkpoint", r"could not read weights file .*w\.pth'?: it is not a PyTorch checkpoint"),
    ("empty", r"could not read weights file .*w\.pth'?: the file is empty \(0 bytes\)"),
    ("truncated", r"could not read weights file .*w\.pth'?: it is truncated or corrupt"),
    ("pickled_code", r"could not read weights file .*w\.pth'?: it holds a pickled posix\.mkdir object, which is refused"),
    ("no_tensors", r"weights file .*w\.pth'? holds no state dict"),
    ("safetensors_text", r"could not read weights file .*w\.safetensors'?: SafetensorError"),
])
def test_a_bad_weights_file_fails_in_one_line_naming_it(tmp_path, defect, pattern):
    path = bad_file(tmp_path, defect)
    with pytest.raises(ValueError, match=pattern) as caught:
        check_weights_file(BACKBONE, path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and "weights_only=False" not in message
    assert not (tmp_path / "pwned").exists()


def test_preflight_checks_the_weights_before_any_file_or_stage(tmp_path):
    """The weights error comes first, although the data folders do not exist either."""
    path = bad_file(tmp_path, "wrong_shape")
    cfg = ExperimentConfig.model_validate({
        "data": {"dataset": "folder", "train_images": str(tmp_path / "no-images"), "eval_images": str(tmp_path / "no-images"),
                 "eval_labels": str(tmp_path / "no-labels"), "num_classes": 3},
        "embed": {"backbone": BACKBONE, "weights": str(path), "train_resolution": 32, "eval_resolution": 32}})
    with pytest.raises(ValueError, match=rf"^embed\.weights: weights '{path}' do not fit backbone 'dino_vits8': .*pos_embed"):
        preflight(cfg)
    missing = cfg.model_copy(update={"embed": cfg.embed.model_copy(update={"weights": str(tmp_path / "nope.pth")})})
    with pytest.raises(ValueError, match=r"^embed\.weights: weights file .*nope\.pth'? does not exist"):
        preflight(missing)
