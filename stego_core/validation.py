"""A fast pre-flight check of an experiment before any expensive stage runs.

Checks what can be checked up front, so a bad file or value fails in seconds with a message that
names it, instead of minutes into embedding: the backbone name and the resolutions against its
patch size, the dataset folders, ``knn.k`` against the training set, and every image and label of
both splits (each decoded once, JPEGs at 1/8 scale: corrupt, empty, truncated or non-image files,
images too small to hold one backbone patch, labels of another size than their image, label ids
outside the class range, images without a label in a labelled split).

``data.bad_files`` decides what a bad file does: ``error`` (default) raises on the first one;
``skip`` leaves every bad file out: the returned config lists them in ``data.exclude``, which the
split listing (:func:`stego_core.stages.split_info`) honours and the stages' cache keys include, and
the report names each file with its reason (:func:`write_bad_files` writes ``bad_files.json``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from stego_core.backbones import check_weights_file, get_backbone_spec
from stego_core.config import ExperimentConfig
from stego_core.data import DataError, Sample, check_image, check_label
from stego_core.stages import SplitInfo, split_info

logger = logging.getLogger(__name__)

ROLES = ("train", "eval")
SKIP_HINT = "or set data.bad_files=skip to leave bad files out of the run"
_SHOW = 5  # how many files a message lists


@dataclass(frozen=True)
class BadFile:
    """A file left out under ``data.bad_files=skip``: the image or label path, why, and the split
    it was found in (a file shared by both splits is listed once)."""

    file: str
    reason: str
    split: str


@dataclass(frozen=True)
class PreflightReport:
    """What :func:`preflight` found.

    Attributes:
        config: the config to run: the input one, plus (under ``skip``) the bad files in
            ``data.exclude``.
        sizes: samples per split (``train``, ``eval``) after exclusion.
        bad_files: the files left out by this check, in split then file order (empty under
            ``error``, which raises instead).
    """

    config: ExperimentConfig
    sizes: dict[str, int]
    bad_files: tuple[BadFile, ...] = ()


def check_config(cfg: ExperimentConfig) -> None:
    """What needs no data file: the backbone exists, the resolutions are multiples of its patch
    size, a PCA reduction's dimension is within the backbone's channels, and a weights file
    (``embed.weights``) reads weights-only and fits the backbone's keys and shapes
    (:func:`~stego_core.backbones.check_weights_file`, seconds)."""
    spec = get_backbone_spec(cfg.embed.backbone)
    if cfg.embed.weights is not None:
        try:
            check_weights_file(cfg.embed.backbone, cfg.embed.weights)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"embed.weights: {exc}") from None
    for field in ("train_resolution", "eval_resolution"):
        value = getattr(cfg.embed, field)
        if value % spec.patch_size:
            raise ValueError(f"embed.{field}={value} is not a multiple of {spec.name}'s patch size {spec.patch_size}; "
                             f"use e.g. {value - value % spec.patch_size or spec.patch_size}")
    if "pca" in cfg.reduce.methods and cfg.train.dim > spec.embed_dim:
        raise ValueError(f"train.dim={cfg.train.dim} is more than {spec.name}'s {spec.embed_dim} channels: PCA cannot "
                         f"reduce to it; lower train.dim or leave pca out of reduce.methods")


def min_image_side(cfg: ExperimentConfig, role: str) -> int:
    """The smallest shorter side (pixels) an image of ``role`` may have: every crop the backbone
    sees must hold at least one patch of real pixels (smaller images are upscaled, bicubic, to the
    resolution, but an image below one patch would be all interpolation). Training images under
    five-crop need their ``crop_ratio`` crops to reach the patch size."""
    patch = get_backbone_spec(cfg.embed.backbone).patch_size
    if role != "train" or not cfg.data.five_crop:
        return patch
    side = patch
    while max(1, round(cfg.data.crop_ratio * side)) < patch:
        side += 1
    return side


def _check_counts(cfg: ExperimentConfig, infos: dict[str, SplitInfo], bad: list[BadFile] | None = None) -> None:
    """Split-level checks: no split empty, labels to score on, ``knn.k`` within the training set."""
    note = f" after leaving out {len(bad)} bad files" if bad else ""
    for role, info in infos.items():
        if not info.samples:
            shown = "; ".join(b.reason for b in (bad or [])[:3]) + ("; ..." if len(bad or []) > 3 else "")
            raise DataError(f"the {role} split has no images left{note} ({shown}); fix those files")
    if not any(s.label is not None for s in infos["eval"].samples):
        raise ValueError("the evaluation split has no labels: every run scores its methods on it; set "
                         "data.eval_labels (unlabelled images can be segmented with `stego predict --run`)")
    n = len(infos["train"].samples)
    crops = n * 5 if cfg.data.five_crop else n
    what = f"{crops} images ({n} x 5 five-crops)" if cfg.data.five_crop else f"{n} images"
    if cfg.knn.k > crops:
        raise ValueError(f"knn.k={cfg.knn.k} is larger than the training set: {what}{note}; set knn.k to at most "
                         f"{crops} (and knn.num_neighbors below it), or train on more images")


def _missing_labels(samples: list[Sample]) -> list[Sample]:
    """The samples without a label in a split where some have one (a labelled split)."""
    if not any(s.label is not None for s in samples):
        return []
    return [s for s in samples if s.label is None]


class _Checker:
    """Checks samples, each file decoded once even when both splits list it."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.images: dict[str, tuple[int, int] | str] = {}  # path -> upright size, or the problem
        self.labels: dict[tuple[str, tuple[int, int]], str | None] = {}

    def problem(self, role: str, sample: Sample, info: SplitInfo, labelled: bool) -> tuple[str, str] | None:
        """``(file, reason)`` for the first problem of ``sample`` in split ``role``, else None."""
        key = str(sample.image)
        if key not in self.images:
            try:
                self.images[key] = check_image(sample.image)
            except DataError as exc:
                self.images[key] = str(exc)
        size = self.images[key]
        if isinstance(size, str):
            return key, size
        need = min_image_side(self.cfg, role)
        if min(size) < need:
            crops = " under five-crop" if role == "train" and self.cfg.data.five_crop else ""
            return key, (f"image {sample.image} is {size[0]}x{size[1]} px: too small for {self.cfg.embed.backbone}, "
                         f"whose {role} images need a shorter side of at least {need} px{crops} (one "
                         f"{get_backbone_spec(self.cfg.embed.backbone).patch_size} px patch of real pixels per crop); "
                         "use a larger image or remove it")
        if sample.label is None:
            if labelled:
                return key, (f"image {sample.image} has no label {sample.stem}.png, but the rest of the {role} split "
                             "is labelled; add the label or remove the image")
            return None
        label_key = (str(sample.label), size)
        if label_key not in self.labels:
            try:
                check_label(sample.label, size=size, num_classes=info.num_classes, label_map=info.label_map,
                            ignore_index=info.ignore_index, image=sample.image)
                self.labels[label_key] = None
            except DataError as exc:
                self.labels[label_key] = str(exc)
        reason = self.labels[label_key]
        return (str(sample.label), reason) if reason else None


def preflight(cfg: ExperimentConfig, *, check_files: bool = True, progress: bool = False) -> PreflightReport:
    """Check ``cfg`` and (``check_files``) every file of both splits before any compute.

    Under ``data.bad_files='error'`` the first problem raises; under ``'skip'`` bad files are left
    out and listed, and the returned ``config`` (which the run must use) excludes them.

    Raises:
        ValueError: a bad value (``DataError``, a subclass, for files and folders); the message
            names the field or file and what to do.
    """
    check_config(cfg)
    skip = cfg.data.bad_files == "skip"
    infos = {role: split_info(cfg, role) for role in ROLES}
    _check_counts(cfg, infos)
    if not skip:
        for role, info in infos.items():
            missing = _missing_labels(info.samples)
            if missing:
                folder = next(s.label for s in info.samples if s.label is not None).parent
                shown = ", ".join(str(s.image) for s in missing[:_SHOW]) + (", ..." if len(missing) > _SHOW else "")
                raise DataError(f"{len(missing)} of {len(info.samples)} images of the labelled {role} split have no "
                                f"label <stem>.png in {folder}: {shown}; add the labels or remove those images, "
                                f"{SKIP_HINT}")
    bad: list[BadFile] = []
    if check_files:
        checker, flagged = _Checker(cfg), set(cfg.data.exclude)
        for role, info in infos.items():
            labelled = any(s.label is not None for s in info.samples)
            for s in tqdm(info.samples, desc=f"check {role} files", disable=not progress, leave=False):
                found = checker.problem(role, s, info, labelled)
                if found is None:
                    continue
                file, reason = found
                if not skip:
                    raise DataError(f"{reason}, {SKIP_HINT}")
                if file not in flagged:
                    flagged.add(file)
                    bad.append(BadFile(file, reason, role))
    if bad:
        exclude = tuple(sorted(set(cfg.data.exclude) | {b.file for b in bad}))
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"exclude": exclude})})
        infos = {role: split_info(cfg, role) for role in ROLES}  # the listing the stages will see
        for b in bad:
            logger.warning("left out %s: %s", b.file, b.reason)
        _check_counts(cfg, infos, bad)
    sizes = {role: len(info.samples) for role, info in infos.items()}
    logger.info("preflight ok: %s%s", sizes, f", {len(bad)} bad files left out" if bad else "")
    return PreflightReport(cfg, sizes, tuple(bad))


def excluded_files(cfg: ExperimentConfig) -> list[BadFile]:
    """The files ``cfg.data.exclude`` leaves out, each with its reason as :func:`preflight` gives it
    now (only those files are read again), for a run whose preflight happened elsewhere (the CLI).
    A file that checks fine now is listed with the reason ``listed in data.exclude``."""
    if not cfg.data.exclude:
        return []
    drop = set(cfg.data.exclude)
    full = cfg.model_copy(update={"data": cfg.data.model_copy(update={"exclude": (), "bad_files": "skip"})})
    checker, out, seen = _Checker(full), [], set()
    for role in ROLES:
        info = split_info(full, role)
        labelled = any(s.label is not None for s in info.samples)
        for s in info.samples:
            for path in (s.image, s.label):
                file = None if path is None else str(path)
                if file in drop and file not in seen:
                    seen.add(file)
                    found = checker.problem(role, s, info, labelled)
                    reason = found[1] if found and found[0] == file else "listed in data.exclude"
                    out.append(BadFile(file, reason, role))
    return out


def write_bad_files(folder: str | os.PathLike, bad_files: list[BadFile] | tuple[BadFile, ...]) -> Path:
    """Write ``folder/bad_files.json``: ``[{"file", "reason", "split"}, ...]``; return its path."""
    path = Path(folder) / "bad_files.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(b) for b in bad_files], indent=1, ensure_ascii=False), encoding="utf-8")
    return path
