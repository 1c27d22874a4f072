"""ResNet-50 backbones (MoCo v2, supervised torchvision) as dense extractors at stride 8.

Choice: a *dilated* ResNet-50 (timm ``output_stride=8``). The stem and ``layer2`` downsample to
stride 8 as usual; ``layer3`` and ``layer4`` replace their stride-2 convolutions by stride 1 with
dilation 2 and 4, so the receptive field and the pretrained weights are unchanged (dilation
has no parameters) while the last stage yields a grid four times finer than the plain
stride-32 network::

    features = layer4(layer3(layer2(layer1(stem(x)))))   # (B, 2048, H / 8, W / 8)

This puts ResNet features on the same 28x28 grid as the /8 ViTs at 224 px, which is what
STEGO's correlation loss and the upsampled predictions need; a stride-32 7x7 grid is too coarse
for segmentation. The cost is ~16x the FLOPs of ``layer4`` and ~4x of ``layer3``.
"""

from __future__ import annotations

import logging

from timm.models.resnet import ResNet
from torch import Tensor

from .base import Backbone
from .spec import BackboneSpec

__all__ = ["ResNetBackbone", "RESNET_OUTPUT_STRIDE"]

logger = logging.getLogger(__name__)

#: Output stride of the dilated ResNets built here (timm ``output_stride``).
RESNET_OUTPUT_STRIDE = 8


class ResNetBackbone(Backbone):
    """Frozen dilated timm :class:`ResNet`; dense features are the last stage's output.

    Args:
        spec: registry row; ``patch_size`` must be 8 and ``embed_dim`` the last stage width.
        model: a timm ``ResNet`` built with ``output_stride=8`` and ``num_classes=0``.

    Raises:
        ValueError: if ``model`` is not a ResNet or disagrees with ``spec``.
    """

    model: ResNet

    def __init__(self, spec: BackboneSpec, model: ResNet) -> None:
        if not isinstance(model, ResNet):
            raise ValueError(
                f"backbone {spec.name!r}: expected a timm ResNet, got {type(model).__name__}"
            )
        if spec.patch_size != RESNET_OUTPUT_STRIDE:
            raise ValueError(
                f"backbone {spec.name!r}: dilated ResNets have stride {RESNET_OUTPUT_STRIDE}, "
                f"but spec.patch_size={spec.patch_size}"
            )
        if model.num_features != spec.embed_dim:
            raise ValueError(
                f"backbone {spec.name!r}: spec.embed_dim={spec.embed_dim} but the model's last "
                f"stage has {model.num_features} channels"
            )
        super().__init__(spec, model)

    def _dense(self, images: Tensor) -> Tensor:
        return self.model.forward_features(images)
