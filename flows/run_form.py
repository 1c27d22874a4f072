"""The run form of the deployments: what a person chooses on the Prefect UI's Run page.

The pipeline and sweep flows take a ``preset`` (a dropdown of the shipped presets), a ``backbone`` (a dropdown
of the registered ones), ``data_root``, ``seed`` and ``overrides`` (dotted keys, checked exactly as the CLI's
``--set``); the whole experiment config stays an advanced, optional parameter which, when given, is the base
instead of the preset. :func:`form_config` turns those into the experiment config with the CLI's own builder
(:func:`stego_core.presets.build_config`, :func:`~stego_core.presets.apply_overrides`).

The choices are ``Literal`` types built from the shipped preset files and the backbone registry, so Prefect's
parameter schema lists them as an ``enum`` and the UI shows a select (a multi-select for a list of them).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from stego_core.backbones import BACKBONES
from stego_core.config import ExperimentConfig
from stego_core.presets import apply_overrides, build_config, list_presets

PresetName = Literal[tuple(list_presets())]  # type: ignore[valid-type]  # stego_core/presets/*.yaml
BackboneName = Literal[tuple(sorted(BACKBONES))]  # type: ignore[valid-type]  # the registry
DEFAULT_PRESET = "camvid-dinov2s14"  # pressing Run on stego-pipeline runs CamVid


def backbone_point(base: ExperimentConfig, backbone: str) -> dict[str, Any]:
    """``{"embed.backbone": backbone}``, plus the resolutions rounded down to the backbone's patch
    size where the base's are not multiples of it (322 for a /14 model is 320 for a /8 one)."""
    point: dict[str, Any] = {"embed.backbone": backbone}
    if backbone not in BACKBONES:
        return point  # validation reports the unknown name with the known ones
    patch = BACKBONES[backbone].patch_size
    for field_name in ("train_resolution", "eval_resolution"):
        value = getattr(base.embed, field_name)
        if value % patch:
            point[f"embed.{field_name}"] = max(patch, value - value % patch)
    return point


def form_config(preset: str | None, config: ExperimentConfig | None = None, *, backbone: str | None = None,
                data_root: str | None = None, seed: int | None = None,
                overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The experiment a run form describes: ``config`` if given, else the ``preset`` (as ``stego run --preset``);
    then the backbone (resolutions rounded to its patch size), the data root, the seed, and last ``overrides``
    (``{"train.steps": 500}``, the CLI's ``--set train.steps=500``).

    Raises:
        ConfigError: an unknown preset, an unknown key or an invalid value (the messages of ``--set``).
    """
    base = config if config is not None else build_config(preset)
    sets: dict[str, Any] = backbone_point(base, backbone) if backbone else {}
    if data_root:
        sets["data.data_root"] = data_root
    if seed is not None:
        sets["seed"] = seed
    sets.update(overrides or {})
    return apply_overrides(base, sets) if sets else base
