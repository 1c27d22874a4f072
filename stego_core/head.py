"""STEGO's segmentation head: a linear plus a non-linear 1x1-conv path over frozen features.

    code = L(drop(f)) + N(drop(f)),   L: conv1x1(C -> D),   N: conv1x1(C -> C), ReLU, conv1x1(C -> D)

``drop`` is channel dropout (``nn.Dropout2d``), active in training mode only; each path draws its own
mask, as in the reference. Shapes: ``(B, C, H, W) -> (B, D, H, W)``. Being pointwise, the head commutes
with flips and crops of its input.

:func:`load_tensors` and :func:`read_json_dims` read saved heads and probes safely: safetensors only
(no pickle), every key and shape checked against the module, errors naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


class SegmentationHead(nn.Module):
    def __init__(self, in_dim: int, dim: int, *, dropout: float = 0.1, nonlinear: bool = True) -> None:
        super().__init__()
        if in_dim < 1 or dim < 1:
            raise ValueError(f"head dimensions must be >= 1, got in_dim={in_dim}, dim={dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.dim = in_dim, dim
        self.dropout = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(in_dim, dim, kernel_size=1)
        self.nonlinear = (
            nn.Sequential(nn.Conv2d(in_dim, in_dim, 1), nn.ReLU(), nn.Conv2d(in_dim, dim, 1)) if nonlinear else None
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim != 4 or feats.shape[1] != self.in_dim:
            raise ValueError(f"expected features (B, {self.in_dim}, H, W), got {tuple(feats.shape)}")
        code = self.linear(self.dropout(feats))
        if self.nonlinear is not None:
            code = code + self.nonlinear(self.dropout(feats))
        return code


def read_json_dims(path: Path, fields: tuple[str, ...]) -> dict[str, int]:
    """The positive integer ``fields`` of a small JSON file such as ``head.json``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it is not JSON, or a field is missing or not an integer >= 1 (the file is named).
    """
    try:
        meta = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; the model folder is incomplete (rerun the stage that wrote it)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the stage that wrote it") from err
    bad = [f for f in fields if not isinstance(meta, dict) or type(meta.get(f)) is not int or meta[f] < 1]
    if bad:
        raise ValueError(f"{path}: fields {bad} must be integers >= 1, got {meta!r}; rerun the stage that wrote it")
    return {f: meta[f] for f in fields}


def load_tensors(module: nn.Module, path: Path, *, described_by: Path) -> None:
    """Load a ``.safetensors`` file into ``module`` strictly (no pickle, so no code can run).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it is not a safetensors file, or its tensors do not match the module that
            ``described_by`` (e.g. ``head.json``) declares: both files are named.
    """
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing; the model folder is incomplete (rerun the stage that wrote it)")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for garbage / truncated files
        raise ValueError(f"{path} is not a valid .safetensors file ({type(err).__name__}: {err}); "
                         "it is corrupt or not what its name says; rerun the stage that wrote it") from err
    expected = module.state_dict()
    problems = sorted(f"missing {k}" for k in expected.keys() - state.keys())
    problems += sorted(f"unexpected {k}" for k in state.keys() - expected.keys())
    problems += sorted(f"{k}: file {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                       if k in state and state[k].shape != v.shape)
    if problems:
        raise ValueError(f"{path} does not match {described_by}: {'; '.join(problems[:8])}; "
                         "the two files come from different runs or were edited")
    module.load_state_dict(state, strict=True)
