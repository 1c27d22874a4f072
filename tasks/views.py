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
    "crop": ("data", "embed"),
    "embed": ("data", "embed", "device", "train"),
    "knn": ("knn",),
    "train_head": ("loss", "train", "knn", "seed", "device", "concepts"),
    "reduce": ("reduce", "seed"),
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


# The reduce stage reads only the fields of its method (adding randproj to reduce.methods, or whitening
# the PCA, leaves the other reductions' keys alone); its dimension (train.dim) is a stage argument.
REDUCE_FIELDS = {"pca": ("whiten", "max_tokens"), "randproj": ()}


# The concept clusterbook's fields count only when its term is on: with loss.w_concept=0 the head is keyed as
# before the option existed (the concepts section and the loss's concept fields are left out).
CONCEPT_LOSS_FIELDS = ("w_concept", "concept_temperature")


# Fields that change how a stage runs but not what it writes: left out of every key (a changed
# checkpoint interval must not retrain the head, a memory budget decides only resident vs streamed, the
# shard size only how a split is cut, which the shards' own rows say); tasks take them as ``settings``.
# A section mapped to None is unkeyed whole.
UNKEYED_FIELDS: dict[str, tuple[str, ...] | None] = {
    "memory": None, "train": ("checkpoint_every",), "embed": ("shard_size",),
}

# The fields of a section that a stage reads when it reads only a few of them.
CROP_EMBED_FIELDS = ("train_resolution",)  # the crops are stored at the training resolution
EMBED_TRAIN_FIELDS = ("features",)  # train.features=recompute: the training embed stores no features


# Data fields that describe only one split: the training side (crop, embed role=train) is keyed
# without the evaluation fields and the other way round, so scoring on another split (val -> test)
# reuses the crops, training features, KNN table and head.
DATA_FIELDS_OF_ONE_SPLIT = {
    "train": ("train_split", "train_images", "train_labels", "train_limit", "five_crop", "crop_ratio"),
    "eval": ("eval_split", "eval_images", "eval_labels", "eval_limit", "eval_dataset", "eval_data_root", "eval_num_classes"),
}
# The evaluation side is keyed on the evaluation dataset's own settings (DataConfig.evaluation): an evaluation
# split embedded for one training dataset is the same artifact for any other (a transfer matrix embeds it once).
TRANSFER_FIELDS = ("eval_dataset", "eval_data_root", "eval_num_classes")


EMBED_FIELDS_OF_ONE_SPLIT = {"train": ("train_resolution",), "eval": ("eval_resolution", "flip_tta")}


def stage_view(stage: str, cfg: ExperimentConfig, **args: Any) -> dict:
    """The JSON-able config a stage is keyed on: its sections of ``cfg`` plus stage arguments."""
    full = cfg.model_dump(mode="json")
    view = {name: full[name] for name in STAGE_SECTIONS[stage]}
    for section, fields in UNKEYED_FIELDS.items():
        if section in view and fields is None:
            del view[section]
        elif section in view:
            view[section] = {k: v for k, v in view[section].items() if k not in fields}
    if stage == "crop":
        view["embed"] = {k: full["embed"][k] for k in CROP_EMBED_FIELDS}
    if stage == "embed":
        if args.get("role") == "eval":
            del view["train"]
        else:
            view["train"] = {k: full["train"][k] for k in EMBED_TRAIN_FIELDS}
    if "data" in view:
        other = "train" if args.get("role") == "eval" else "eval"  # crop reads the training split
        if other == "train":
            view["data"] = cfg.data.evaluation().model_dump(mode="json")
        # bad_files only decides what preflight puts in data.exclude, which is keyed itself.
        drop = DATA_FIELDS_OF_ONE_SPLIT[other] + TRANSFER_FIELDS + ("bad_files",)
        view["data"] = {k: v for k, v in view["data"].items() if k not in drop}
        if view["data"].get("subset") is None:  # datasets without subsets: keyed as before the field existed
            view["data"].pop("subset", None)
        if stage == "embed":
            view["embed"] = {k: v for k, v in view["embed"].items() if k not in EMBED_FIELDS_OF_ONE_SPLIT[other]}
    if stage == "train_head" and not cfg.loss.w_concept:
        del view["concepts"]
        view["loss"] = {k: v for k, v in view["loss"].items() if k not in CONCEPT_LOSS_FIELDS}
    if stage == "cluster":
        view["cluster"] = {k: full["cluster"][k] for k in CLUSTER_FIELDS[args["method"]]}
    if stage == "reduce":
        view["reduce"] = {k: full["reduce"][k] for k in REDUCE_FIELDS[args["method"]]}
    if stage == "predict":
        view["cluster"] = {"temperature": full["cluster"]["temperature"]}
        if not args.get("crf"):
            del view["crf"]
    if args:
        view["stage_args"] = args
    return view


def run_settings(cfg: ExperimentConfig) -> dict:
    """The unkeyed fields of ``cfg`` (:data:`UNKEYED_FIELDS`), passed to every task beside its view."""
    full = cfg.model_dump(mode="json")
    return {section: (full[section] if fields is None else {k: full[section][k] for k in fields})
            for section, fields in UNKEYED_FIELDS.items()}


def config_from_view(view: dict, settings: dict | None = None) -> tuple[ExperimentConfig, dict]:
    """Inverse of :func:`stage_view` (plus the unkeyed ``settings`` of :func:`run_settings`, defaults where
    absent): the config the stage computes with, and its arguments."""
    view = dict(view)
    args = view.pop("stage_args", {})
    for section, values in (settings or {}).items():
        if section not in UNKEYED_FIELDS:
            raise ValueError(f"settings section {section!r} is not an unkeyed field; known: {sorted(UNKEYED_FIELDS)}")
        view[section] = {**view.get(section, {}), **values}
    return ExperimentConfig.model_validate(view), args
