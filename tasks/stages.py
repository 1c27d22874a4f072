"""One Prefect task per pipeline stage: a cache key, retries, and an artifact folder around a
:mod:`stego_core.stages` function. No maths here.

Every task takes ``config`` (the stage's view of the experiment, see :mod:`tasks.views`), ``inputs``
(artifact keys of the stages it reads), ``store_root`` (a local path or any fsspec URL, see
:func:`tasks.remote_store.open_store`) and ``settings`` (the unkeyed fields: memory budget, checkpoint
interval, shard size; :func:`tasks.views.run_settings`), and returns an artifact ref ``{"stage", "key",
"path", "cached"}``. Inputs are reopened by key, so a task on another machine downloads them once into
its local mirror, together with the artifacts they refer to (a sharded embedding's shards, the crops a
recomputing embedding reads).

The crop and embed tasks compute one shard when their view's arguments hold ``rows``, and join shards
when their inputs are ``part-0000, part-0001, ...`` (the arguments then hold ``shards``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from stego_core import stages as core
from tasks.catalog import ArtifactStore, artifact_key
from tasks.prefect_stage import checkpoint_dir, run_logger, run_stage, stage_task
from tasks.remote_store import RemoteArtifactStore, open_store
from tasks.views import config_from_view

Store = ArtifactStore | RemoteArtifactStore
PART_PREFIX = "part-"


def part_inputs(keys: list[str]) -> dict[str, str]:
    """``{"part-0000": key0, ...}``: the inputs of a task joining shards, in row order."""
    return {f"{PART_PREFIX}{i:04d}": key for i, key in enumerate(keys)}


def open_artifact(store: Store, stage: str, key: str) -> Path:
    """The local folder of ``stage``/``key``, after opening every artifact it refers to (its ``reads``,
    relative paths) the same way, so that they are present in a remote store's mirror too."""
    artifact = store.open(stage, key)
    for rel in artifact.metadata.get("reads", []):
        target = Path(os.path.normpath(artifact.path / rel))
        open_artifact(store, target.parent.name, target.name)
    return artifact.path


def _path(store: Store, stage: str, inputs: dict[str, str], name: str) -> Path | None:
    key = inputs.get(name)
    return open_artifact(store, stage, key) if key else None


def _parts(store: Store, stage: str, inputs: dict[str, str]) -> list[Path]:
    return [open_artifact(store, stage, inputs[name]) for name in sorted(inputs) if name.startswith(PART_PREFIX)]


@stage_task("crop")
def crop_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config, settings)
    if "shards" in args:
        parts = _parts(store, "crop", inputs)
        return run_stage(store, "crop", config, inputs, lambda out: core.merge_shards(parts, out))
    rows = tuple(args["rows"]) if "rows" in args else None
    return run_stage(store, "crop", config, inputs, lambda out: core.crop_stage(cfg, out, rows))


@stage_task("embed")
def embed_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config, settings)
    if "shards" in args:
        parts = _parts(store, "embed", inputs)
        return run_stage(store, "embed", config, inputs, lambda out: core.merge_shards(parts, out))
    crop = _path(store, "crop", inputs, "crop")
    rows = tuple(args["rows"]) if "rows" in args and crop is None else None
    return run_stage(store, "embed", config, inputs, lambda out: core.embed_stage(cfg, args["role"], out, crop, rows))


@stage_task("knn")
def knn_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, _ = config_from_view(config, settings)
    embed = _path(store, "embed", inputs, "embed")
    return run_stage(store, "knn", config, inputs, lambda out: core.knn_stage(cfg, embed, out))


@stage_task("train_head")
def train_head_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    """Checkpoints go to :func:`checkpoint_dir`, which outlives a failed attempt (the next one resumes
    there) and is removed once the head is published."""
    store = open_store(store_root)
    cfg, _ = config_from_view(config, settings)
    every = max(cfg.train.steps // 20, cfg.train.log_every)

    def callback(step: int, row: dict) -> None:
        if step % every == 0 or step == cfg.train.steps - 1:
            run_logger().info("step %d/%d loss %.4f (self %.4f knn %.4f rand %.4f)", step, cfg.train.steps,
                              row["loss"], row["loss_self"], row["loss_knn"], row["loss_rand"])

    embed, knn = _path(store, "embed", inputs, "embed"), _path(store, "knn", inputs, "knn")
    checkpoints = checkpoint_dir(store, "train_head", artifact_key("train_head", config, inputs))
    ref = run_stage(store, "train_head", config, inputs,
                    lambda out: core.train_stage(cfg, embed, knn, out, callback, checkpoint_dir=checkpoints))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the head is published: nothing left to resume
    return ref


@stage_task("reduce")
def reduce_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config, settings)
    embed = _path(store, "embed", inputs, "embed")
    return run_stage(store, "reduce", config, inputs,
                     lambda out: core.reduce_stage(cfg, embed, out, args["method"], args["dim"]))


def _code_map(store: Store, inputs: dict[str, str]) -> Path | None:
    """The folder of what maps features to the code the readout reads: the head (input ``head``), a
    projection (input ``reduce``), or None for the raw features."""
    return _path(store, "train_head", inputs, "head") or _path(store, "reduce", inputs, "reduce")


@stage_task("cluster")
def cluster_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config, settings)
    embed, head = _path(store, "embed", inputs, "embed"), _code_map(store, inputs)
    return run_stage(store, "cluster", config, inputs,
                     lambda out: core.cluster_stage(cfg, embed, head, out, args["num_classes"], args["method"]))


@stage_task("linear_probe")
def linear_probe_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config, settings)
    embed, head = _path(store, "embed", inputs, "embed"), _code_map(store, inputs)
    return run_stage(store, "linear_probe", config, inputs,
                     lambda out: core.linear_stage(cfg, embed, head, out, args["num_classes"]))


@stage_task("predict")
def predict_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config, settings)
    embed, head = _path(store, "embed", inputs, "embed"), _code_map(store, inputs)
    readout = _path(store, args["readout_stage"], inputs, "readout")
    return run_stage(store, "predict", config, inputs,
                     lambda out: core.predict_stage(cfg, embed, head, readout, out, use_crf=args["crf"]))


@stage_task("evaluate")
def evaluate_task(config: dict, inputs: dict[str, str], store_root: str, settings: dict | None = None) -> dict:
    """``inputs``: ``embed`` (evaluation labels) and one ``predict`` key per method name."""
    store = open_store(store_root)
    _, args = config_from_view(config, settings)
    embed = _path(store, "embed", inputs, "embed")
    methods = {name: store.open("predict", key).path for name, key in inputs.items() if name != "embed"}
    return run_stage(store, "evaluate", config, inputs,
                     lambda out: core.evaluate_stage(embed, methods, out, num_classes=args["num_classes"],
                                                     class_names=args["class_names"], matched=args["matched"]))
