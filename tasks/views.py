"""What each stage's cache key covers: the slice of the experiment config the stage reads.

A task rebuilds its :class:`ExperimentConfig` from this view alone (defaults elsewhere), so a stage
can never depend on a field that is not in its key: changing a field recomputes exactly the stages
whose view holds it, and those below them through their input keys.
"""
from __future__ import annotations

from typing import Any

from stego_core.config import ExperimentConfig

# stage -> top-level sections / fields of ExperimentConfig it reads
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "crop": ("data",),
    "embed": ("data", "embed", "device"),
    "knn": ("knn",),
    "train_head": ("loss", "train", "knn", "seed", "device"),
    "cluster": ("cluster", "seed", "device"),
    "linear_probe": ("linear", "seed", "device"),
    "predict": ("cluster", "crf", "device"),
    "evaluate": (),
}


# Fields of a section that only some calls of a stage read (the rest of the section is left out of
# their key, so e.g. changing the CRF does not recompute predictions made without it).
CLUSTER_FIELDS = {
    "kmeans": ("num_clusters", "kmeans_restarts", "kmeans_max_tokens", "select", "refine_steps"),
    "consensus": ("num_clusters", "kmeans_restarts", "kmeans_max_tokens", "overcluster", "refine_steps"),
    "probe": ("num_clusters", "probe_steps", "probe_lr", "probe_batch_size", "refine_steps"),
}


# Fields that change how a stage runs but not what it writes: left out of its key (a changed
# checkpoint interval must not retrain the head); the task takes them as separate parameters.
UNKEYED_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {"train_head": {"train": ("checkpoint_every",)}}


# Data fields that describe only one split: the training side (crop, embed role=train) is keyed
# without the evaluation fields and the other way round, so scoring on another split (val -> test)
# reuses the crops, training features, KNN table and head.
DATA_FIELDS_OF_ONE_SPLIT = {
    "train": ("train_split", "train_images", "train_labels", "train_limit", "five_crop", "crop_ratio"),
    "eval": ("eval_split", "eval_images", "eval_labels", "eval_limit"),
}


EMBED_FIELDS_OF_ONE_SPLIT = {"train": ("train_resolution",), "eval": ("eval_resolution", "flip_tta")}


def stage_view(stage: str, cfg: ExperimentConfig, **args: Any) -> dict:
    """The JSON-able config a stage is keyed on: its sections of ``cfg`` plus stage arguments."""
    full = cfg.model_dump(mode="json")
    view = {name: full[name] for name in STAGE_SECTIONS[stage]}
    if "data" in view:
        other = "train" if args.get("role") == "eval" else "eval"  # crop reads the training split
        # bad_files only decides what preflight puts in data.exclude, which is keyed itself.
        view["data"] = {k: v for k, v in view["data"].items() if k not in DATA_FIELDS_OF_ONE_SPLIT[other] + ("bad_files",)}
        if "embed" in view:
            view["embed"] = {k: v for k, v in view["embed"].items() if k not in EMBED_FIELDS_OF_ONE_SPLIT[other]}
    for section, fields in UNKEYED_FIELDS.get(stage, {}).items():
        view[section] = {k: v for k, v in view[section].items() if k not in fields}
    if stage == "cluster":
        view["cluster"] = {k: full["cluster"][k] for k in CLUSTER_FIELDS[args["method"]]}
    if stage == "predict":
        view["cluster"] = {"temperature": full["cluster"]["temperature"]}
        if not args.get("crf"):
            del view["crf"]
    if args:
        view["stage_args"] = args
    return view


def config_from_view(view: dict) -> tuple[ExperimentConfig, dict]:
    """Inverse of :func:`stage_view`: the config the stage computes with, and its arguments."""
    view = dict(view)
    args = view.pop("stage_args", {})
    return ExperimentConfig.model_validate(view), args
