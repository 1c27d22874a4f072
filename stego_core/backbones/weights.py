"""Where backbone weights come from: local files, timm's hub, a checkpoint URL, and the cache.

Local files (``.pth`` / ``.pt`` / ``.pth.tar`` read with ``torch.load(weights_only=True)``, or
``.safetensors``) may hold the timm layout or a known original layout:

* a wrapper dict: ``{"state_dict": ...}`` (MoCo), ``{"model": ...}``, ``{"teacher": ...}`` (DINO
  training checkpoints), nested any number of times;
* key prefixes: ``module.encoder_q.`` (MoCo v2; ``encoder_k`` and the queue are ignored),
  ``module.``, ``backbone.``, ``model.`` (this package's own :class:`Backbone` state dict);
* heads the dense extractor does not use: ``fc.*`` (MoCo's projection MLP, ImageNet classifier),
  ``head.*``, DINOv2's ``mask_token``.

DINO's ViT keys are already timm's layout. Loading is strict: any missing or unexpected key (or a
shape mismatch) raises a ``ValueError`` naming the file and the keys.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from stego_core.home import stego_home

from .spec import BackboneSpec

__all__ = [
    "default_cache_dir",
    "read_state_dict",
    "match_state_dict",
    "state_dict_mismatches",
    "fitted_state_dict",
    "load_state_dict_strict",
    "load_weights_file",
    "create_timm_model",
    "fetch_hub_state_dict",
    "fetch_url_weights",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "teacher", "module")
_PREFIXES = (
    "module.encoder_q.", "encoder_q.", "module.backbone.", "backbone.", "module.", "model."
)
_IGNORED_PREFIXES = ("fc.", "head.", "head_dist.", "mask_token")
_MAX_LISTED_KEYS = 8


def default_cache_dir() -> Path:
    """``$STEGO_HOME/weights``, with ``STEGO_HOME`` defaulting to ``~/.cache/stego``."""
    return stego_home() / "weights"


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a weights file and unwrap it to a flat ``{key: tensor}`` dict.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file cannot be read as a checkpoint or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; check embed.weights / --weights")
    if path.stat().st_size == 0:
        raise ValueError(f"could not read weights file {str(path)!r}: the file is empty (0 bytes); {_WEIGHTS_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            # DINO training checkpoints pickle their argparse options next to the weights
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, pickled code, wrong format
        raise ValueError(f"could not read weights file {str(path)!r}: {_load_failure(err, path)}; {_WEIGHTS_HINT}") from err
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        keys = list(obj)[:_MAX_LISTED_KEYS] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"weights file {str(path)!r} holds no state dict (top level: {keys}); expected a "
            f"dict of tensors, possibly wrapped in one of {list(_WRAPPER_KEYS)}"
        )
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


_WEIGHTS_HINT = ("pass a PyTorch checkpoint of tensors (.pth/.pt, e.g. torch.save(model.state_dict(), FILE)) "
                 "or a .safetensors file")


def _load_failure(err: BaseException, path: Path) -> str:
    """Why a weights file did not load, in one line. torch's own message for a file that is not a
    plain checkpoint runs to paragraphs and advises turning the weights-only guard off, which is
    unsafe for a file of unknown origin; this never does."""
    text = str(err)
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a pickled {found.group(1)} object, which is refused: unpickling it could run code "
                "(only tensors, containers and numbers are read)")
    if isinstance(err, EOFError) or "central directory" in text:
        return "it is truncated or corrupt (the checkpoint's archive is incomplete)"
    if path.suffix != ".safetensors" and not zipfile.is_zipfile(path) or isinstance(err, pickle.UnpicklingError) \
            or "Weights only load failed" in text:  # a checkpoint is a zip archive (or an old-style pickle)
        return "it is not a PyTorch checkpoint (it cannot be read as tensors)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.split('. ')[0][:300]}"


def match_state_dict(state: Mapping[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Map a checkpoint's keys onto a model's: strip the best known prefix, drop unused heads.

    The prefix kept is the one (among ``""`` and the known ones) whose stripped keys overlap
    ``model_keys`` most; keys outside that prefix (e.g. MoCo's ``encoder_k``) are dropped, and so
    are head keys the model does not have. Remaining mismatches are left for strict loading.
    """
    best: dict[str, Tensor] = dict(state)
    best_overlap = len(model_keys & best.keys())
    for prefix in _PREFIXES:
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        overlap = len(model_keys & stripped.keys())
        if overlap > best_overlap:
            best, best_overlap = stripped, overlap
    return {
        k: v
        for k, v in best.items()
        if k in model_keys or not k.startswith(_IGNORED_PREFIXES)
    }


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else ""
    return ", ".join(sorted(keys)[:_MAX_LISTED_KEYS]) + more


def state_dict_mismatches(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor]
) -> list[str]:
    """Human-readable differences between two state dicts' keys and shapes (empty if none)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches (file vs model): {_listed(shapes)}")
    return problems


def fitted_state_dict(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor], *, source: str, name: str
) -> dict[str, Tensor]:
    """``state`` mapped onto the keys of ``expected`` (:func:`match_state_dict`), checked to match
    them and their shapes exactly (``expected`` may hold meta tensors: only shapes are read).

    Raises:
        ValueError: missing or unexpected keys, or shape mismatches (named, with ``source`` and
            the backbone ``name``).
    """
    state = match_state_dict(state, set(expected))
    problems = state_dict_mismatches(expected, state)
    if problems:
        raise ValueError(
            f"weights {source!r} do not fit backbone {name!r}: " + "; ".join(problems)
            + ". Is it the checkpoint for this architecture?"
        )
    return state


def load_state_dict_strict(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str, name: str = ""
) -> None:
    """Strictly load ``state`` (timm layout or a known original layout) into ``model``.

    Args:
        model: the timm module (``Backbone.model``).
        state: flat ``{key: tensor}`` dict, see :func:`read_state_dict`.
        source: where ``state`` came from (a file path, a hub id), named in errors.
        name: backbone name, named in errors.

    Raises:
        ValueError: if keys or shapes do not match ``model`` after prefix stripping (the
            message names ``source``, the backbone and the missing/unexpected keys).
    """
    state = fitted_state_dict(model.state_dict(), state, source=source, name=name or type(model).__name__)
    model.load_state_dict(state, strict=True)
    logger.info("loaded %d tensors from %s into %s", len(state), source, name or "model")


def load_weights_file(model: nn.Module, path: str | os.PathLike, *, name: str = "") -> None:
    """:func:`read_state_dict` then :func:`load_state_dict_strict`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is unreadable or does not fit ``model``.
    """
    load_state_dict_strict(model, read_state_dict(path), source=str(path), name=name)


def _hub_help(spec: BackboneSpec) -> str:
    if spec.url:
        return (
            f"download {spec.url} on a machine with network access and pass "
            f"`--weights {spec.expected_filename}` (create_backbone(..., weights=FILE))"
        )
    return "pass a local checkpoint with `--weights FILE` (create_backbone(..., weights=FILE))"


def create_timm_model(spec: BackboneSpec, **kwargs: object) -> nn.Module:
    """Randomly initialised ``timm.create_model(spec.architecture, num_classes=0, **kwargs)``."""
    import timm

    return timm.create_model(spec.architecture, pretrained=False, num_classes=0, **kwargs)


def fetch_hub_state_dict(
    spec: BackboneSpec, cache_dir: str | os.PathLike | None = None
) -> dict[str, Tensor]:
    """timm's pretrained weights for ``spec.hub_id`` (Hugging Face hub, timm layout).

    Uses ``timm.models.load_state_dict_from_hf`` (what ``timm.create_model(pretrained=True)``
    uses; it prefers ``model.safetensors`` and reuses the local hub cache, ``cache_dir`` if
    given). Fetching before building the model makes an offline machine fail fast.

    Raises:
        ValueError: if ``spec.hub_id`` is ``None``.
        RuntimeError: if the weights cannot be fetched (offline, unknown id, ...); the message
            says which file to pass with ``--weights`` instead.
    """
    import timm.models

    if not spec.hub_id:
        raise ValueError(
            f"backbone {spec.name!r} has no hub_id: its weights are not on the model hub; "
            "use create_backbone(name) (which fetches spec.url) or pass weights=FILE"
        )
    try:
        state = timm.models.load_state_dict_from_hf(
            spec.hub_id, cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except Exception as err:  # hub/network/cache failures surface as many error types
        raise RuntimeError(
            f"could not load pretrained weights for backbone {spec.name!r} from the model hub "
            f"({spec.hub_id}): {type(err).__name__}: {err}. The hub is unreachable or the "
            f"weights are missing; {_hub_help(spec)}. (HF_HUB_OFFLINE=1 skips the hub's retries.)"
        ) from err
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def fetch_url_weights(spec: BackboneSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``spec.url``'s checkpoint in the cache, downloading it once if needed.

    The file is ``<cache_dir>/<url file name>`` (``cache_dir`` defaults to
    :func:`default_cache_dir`); a file already there is used as is, so copying the checkpoint
    into the cache by hand works offline.

    Raises:
        ValueError: if ``spec`` has no URL.
        RuntimeError: if the download fails.
    """
    if not spec.url or not spec.expected_filename:
        raise ValueError(f"backbone {spec.name!r} has no url to download weights from")
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = target / spec.expected_filename
    if path.is_file():
        return path
    target.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        torch.hub.download_url_to_file(spec.url, str(partial), progress=False)
        os.replace(partial, path)
    except Exception as err:  # URLError, timeouts, HTTP errors, disk full
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download weights for backbone {spec.name!r} from {spec.url} "
            f"({type(err).__name__}: {err}); {_hub_help(spec)}, or copy the file to {path}."
        ) from err
    logger.info("downloaded %s to %s", spec.url, path)
    return path
