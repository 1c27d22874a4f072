"""A fast pre-flight check of an experiment before any expensive stage runs.

Checks what can be checked up front, so a bad file or value fails in seconds with a message that
names it, instead of minutes into embedding: the backbone name and the resolutions against its
patch size, the dataset folders, and every image and label of both splits (decoded once: corrupt or
unreadable images, labels of another size than their image, label ids outside the class range).
"""
from __future__ import annotations

import logging

from tqdm.auto import tqdm

from stego_core.backbones import get_backbone_spec
from stego_core.config import ExperimentConfig
from stego_core.data import load_image, load_label
from stego_core.stages import split_info

logger = logging.getLogger(__name__)


def check_config(cfg: ExperimentConfig) -> None:
    """What needs no file: the backbone exists and the resolutions are multiples of its patch size."""
    spec = get_backbone_spec(cfg.embed.backbone)
    for field in ("train_resolution", "eval_resolution"):
        value = getattr(cfg.embed, field)
        if value % spec.patch_size:
            raise ValueError(f"embed.{field}={value} is not a multiple of {spec.name}'s patch size {spec.patch_size}; "
                             f"use e.g. {value - value % spec.patch_size or spec.patch_size}")


def preflight(cfg: ExperimentConfig, *, check_files: bool = True, progress: bool = False) -> dict:
    """Raise ``ValueError`` (``DataError`` for files) on the first problem; return split sizes."""
    check_config(cfg)
    sizes = {}
    for role in ("train", "eval"):
        info = split_info(cfg, role)
        sizes[role] = len(info.samples)
        if role == "eval" and not any(s.label is not None for s in info.samples):
            raise ValueError("the evaluation split has no labels: every run scores its methods on it; set "
                             "data.eval_labels (unlabelled images can be segmented with `stego predict --run`)")
        if role == "train" and len(info.samples) * (5 if cfg.data.five_crop else 1) <= cfg.knn.num_neighbors:
            raise ValueError(f"knn.num_neighbors={cfg.knn.num_neighbors} needs more than that many training images; "
                             f"the training split has {len(info.samples)}")
        if not check_files:
            continue
        for s in tqdm(info.samples, desc=f"check {role} files", disable=not progress, leave=False):
            img = load_image(s.image)
            if s.label is not None:
                load_label(s.label, size=img.size, num_classes=info.num_classes, label_map=info.label_map,
                           ignore_index=info.ignore_index)
    logger.info("preflight ok: %s", sizes)
    return sizes
