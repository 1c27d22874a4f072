"""Named presets (YAML shipped in the package) and the config builder used by the CLI and flows.

Precedence: defaults < preset < config file < ``--set key=value`` overrides. Every key is checked
against the models: an unknown key is an error that lists the valid ones.

A preset may ``extends: <other preset>`` (its own keys win). Some backbones have a *recipe*, a preset
of training and readout settings that suits them on any data (:data:`BACKBONE_RECIPES`): when no
preset is named and the configured backbone has one, the recipe takes the preset's place, so
``stego run --set embed.backbone=dinov2_vits14 ...`` on a custom folder does not start from the
reference recipe's DINO v1 shifts and schedule, which collapse on DINOv2.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stego_core.config import ExperimentConfig


class ConfigError(ValueError):
    """A config file, preset or override that cannot be used; the message says what to change."""


PRESET_DIR = Path(__file__).resolve().parent / "presets"
BACKBONE_RECIPES = {"dinov2_vits14": "dinov2"}  # backbone -> the preset applied when none is named


def _preset_files() -> dict[str, Path]:
    return {p.stem: p for p in PRESET_DIR.glob("*.yaml")}


def list_presets() -> dict[str, str]:
    """``{name: one-line description}`` of the shipped presets."""
    out = {}
    for name, path in sorted(_preset_files().items()):
        data = yaml.safe_load(path.read_text()) or {}
        out[name] = str(data.get("description", ""))
    return out


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The preset's settings, merged over those of the preset it ``extends`` (if any)."""
    files = _preset_files()
    if name not in files:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(files))}")
    if name in _seen:
        raise ConfigError(f"presets extend each other in a loop: {' -> '.join((*_seen, name))}")
    data = yaml.safe_load(files[name].read_text()) or {}
    data.pop("description", None)
    parent = data.pop("extends", None)
    if parent:
        data = deep_merge(load_preset(str(parent), (*_seen, name)), data)
    return {**data, "preset": name}


def load_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML config file; errors name the file (and the line, for bad YAML)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; pass a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        parts = (getattr(exc, "context", None), getattr(exc, "problem", None))
        what = ": ".join(str(p) for p in parts if p) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {what}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _valid_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    for part in path:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def nest_override(key: str, value: Any) -> dict:
    """``("train.lr", 1e-4)`` -> ``{"train": {"lr": 1e-4}}``; an unknown key lists the valid ones."""
    parts = [p for p in str(key).strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override key {key!r} is empty; use section.key, e.g. train.steps")
    valid = _valid_keys(ExperimentConfig, parts[:-1])
    if parts[-1] not in valid:
        where = ".".join(parts[:-1]) or "top level"
        raise ConfigError(f"unknown config key {str(key).strip()!r}; valid keys at {where}: {', '.join(valid) or '(none)'}")
    node: dict = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        node = {part: node}
    return node


def parse_override(item: str) -> dict:
    """``"train.lr=1e-4"`` -> ``{"train": {"lr": 1e-4}}`` (value parsed as YAML); keys are checked."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.steps=500")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return nest_override(key, value)


def apply_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """``config`` with typed dotted-key overrides (``{"loss.b_self": 0.1}``), validated like a file."""
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        data = deep_merge(data, nest_override(key, value))
    return validate_config(data)


def build_config(
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    base: dict | None = None,
) -> ExperimentConfig:
    """Compose defaults, a preset (or the backbone's recipe), a YAML file and overrides into a validated config."""
    data: dict = dict(base or {})
    if preset:
        data = deep_merge(data, load_preset(preset))
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
    for item in overrides:
        data = deep_merge(data, parse_override(item))
    if not preset and not data.get("preset"):
        backbone = (data.get("embed") or {}).get("backbone", ExperimentConfig.model_fields["embed"].default.backbone)
        if backbone in BACKBONE_RECIPES:
            data = deep_merge(load_preset(BACKBONE_RECIPES[backbone]), data)
    return validate_config(data)


def validate_config(data: dict) -> ExperimentConfig:
    """The validated model; every invalid field is listed in one :class:`ConfigError`."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            line = f"  {loc}: {err['msg']} (got {err.get('input')!r})"
            if err["type"] == "extra_forbidden":
                parent = [str(p) for p in err["loc"][:-1]]
                valid = ", ".join(_valid_keys(ExperimentConfig, parent))
                line += f"; valid keys at {'.'.join(parent) or 'top level'}: {valid}"
            lines.append(line)
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
