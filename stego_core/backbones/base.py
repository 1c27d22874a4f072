"""The frozen dense-feature extractor every backbone name resolves to.

STEGO never trains the backbone: it is a fixed function from a normalised image batch
``(B, 3, H, W)`` to a dense feature grid ``(B, C, H / p, W / p)``. :class:`Backbone` enforces
that contract once for all architectures: parameters never require grad, the module stays in
eval mode whatever ``train()`` is asked, inputs are checked, and the result is float32.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from .spec import BackboneSpec

__all__ = ["Backbone"]

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """Frozen wrapper around a network that yields dense features at stride ``patch_size``.

    Subclasses implement :meth:`_dense`; callers only use :meth:`forward`.

    Args:
        spec: the registry row this backbone was built from.
        model: the wrapped network (a timm module), stored as ``self.model``; its own
            ``state_dict`` keys are the "timm layout" weight files use.

    Shapes:
        ``forward(images)``: ``(B, 3, H, W)`` float, normalised with ``spec.mean`` / ``spec.std``,
        ``H % p == 0`` and ``W % p == 0``  ->  ``(B, C, H // p, W // p)`` float32, no grad,
        where ``p = spec.patch_size`` and ``C = spec.embed_dim``.

    Notes:
        Runs under ``torch.no_grad()`` rather than ``inference_mode`` so that its outputs can be
        fed to a trainable head without "inference tensors cannot be saved for backward" errors.
        Mixed precision is the caller's choice (wrap the call in ``torch.autocast``); the output
        is always cast back to float32.

    Example:
        >>> backbone = create_backbone("dino_vits8", pretrained=False)  # doctest: +SKIP
        >>> backbone(torch.zeros(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 384, 28, 28])
    """

    spec: BackboneSpec
    patch_size: int
    embed_dim: int

    def __init__(self, spec: BackboneSpec, model: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.patch_size = spec.patch_size
        self.embed_dim = spec.embed_dim
        self.model = model
        self.freeze()

    def freeze(self) -> Backbone:
        """Set every parameter to ``requires_grad=False`` and switch to eval mode."""
        for param in self.parameters():
            param.requires_grad_(False)
        nn.Module.train(self, False)
        return self

    def train(self, mode: bool = True) -> Backbone:
        """No-op that keeps eval mode: the backbone is frozen (no dropout, fixed norms)."""
        if mode:
            logger.debug("Backbone %s is frozen; ignoring train(True)", self.spec.name)
        return nn.Module.train(self, False)

    def check_images(self, images: Tensor) -> None:
        """Validate an input batch.

        Raises:
            ValueError: if ``images`` is not a floating ``(B, 3, H, W)`` tensor with ``H`` and
                ``W`` multiples of ``patch_size``.
        """
        name = self.spec.name
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"backbone {name!r}: images must be a (B, 3, H, W) tensor, got {shape}"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"backbone {name!r}: images must be float and normalised with mean "
                f"{self.spec.mean} / std {self.spec.std}, got dtype {images.dtype}"
            )
        height, width = images.shape[-2:]
        p = self.patch_size
        if height % p or width % p or height == 0 or width == 0:
            raise ValueError(
                f"backbone {name!r}: image height and width must be positive multiples of the "
                f"patch size {p}, got {height}x{width}; resize or crop to e.g. "
                f"{(height // p or 1) * p}x{(width // p or 1) * p}"
            )

    def forward(self, images: Tensor) -> Tensor:
        """Dense features ``(B, C, H // p, W // p)`` of a normalised batch ``(B, 3, H, W)``."""
        self.check_images(images)
        with torch.no_grad():
            features = self._dense(images)
        expected = (
            images.shape[0],
            self.embed_dim,
            images.shape[2] // self.patch_size,
            images.shape[3] // self.patch_size,
        )
        assert tuple(features.shape) == expected, (tuple(features.shape), expected)
        return features.float()

    def _dense(self, images: Tensor) -> Tensor:
        """Architecture-specific feature computation, called under ``no_grad``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"name={self.spec.name!r}, patch_size={self.patch_size}, "
            f"embed_dim={self.embed_dim}, frozen=True"
        )
