"""One Prefect task per pipeline stage: a cache key, retries, and an artifact folder around a
:mod:`stego_core.stages` function. No maths here.

Every task takes ``config`` (the stage's view of the experiment, see :mod:`tasks.views`), ``inputs``
(artifact keys of the stages it reads) and ``store_root`` (a local path or any fsspec URL, see
:func:`tasks.remote_store.open_store`), and returns an artifact ref ``{"stage", "key", "path",
"cached"}``. Inputs are reopened by key, so a task on another machine downloads them once into its
local mirror.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from stego_core import stages as core
from tasks.catalog import ArtifactStore, artifact_key
from tasks.prefect_stage import checkpoint_dir, run_logger, run_stage, stage_task
from tasks.remote_store import RemoteArtifactStore, open_store
from tasks.views import config_from_view


def _path(store: ArtifactStore | RemoteArtifactStore, stage: str, inputs: dict[str, str], name: str) -> Path | None:
    key = inputs.get(name)
    return store.open(stage, key).path if key else None


@stage_task("crop")
def crop_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    store = open_store(store_root)
    cfg, _ = config_from_view(config)
    return run_stage(store, "crop", config, inputs, lambda out: core.crop_stage(cfg, out))


@stage_task("embed")
def embed_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config)
    crop = _path(store, "crop", inputs, "crop")
    return run_stage(store, "embed", config, inputs, lambda out: core.embed_stage(cfg, args["role"], out, crop))


@stage_task("knn")
def knn_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    store = open_store(store_root)
    cfg, _ = config_from_view(config)
    embed = _path(store, "embed", inputs, "embed")
    return run_stage(store, "knn", config, inputs, lambda out: core.knn_stage(cfg, embed, out))


@stage_task("train_head")
def train_head_task(config: dict, inputs: dict[str, str], store_root: str, checkpoint_every: int | None = None) -> dict:
    """``checkpoint_every`` (not in the key, see :data:`tasks.views.UNKEYED_FIELDS`): default the
    config's. Checkpoints go to :func:`checkpoint_dir`, which outlives a failed attempt (the next one
    resumes there) and is removed once the head is published."""
    store = open_store(store_root)
    cfg, _ = config_from_view(config)
    if checkpoint_every is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": checkpoint_every})})
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


@stage_task("cluster")
def cluster_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config)
    embed, head = _path(store, "embed", inputs, "embed"), _path(store, "train_head", inputs, "head")
    return run_stage(store, "cluster", config, inputs,
                     lambda out: core.cluster_stage(cfg, embed, head, out, args["num_classes"], args["method"]))


@stage_task("linear_probe")
def linear_probe_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config)
    embed, head = _path(store, "embed", inputs, "embed"), _path(store, "train_head", inputs, "head")
    return run_stage(store, "linear_probe", config, inputs,
                     lambda out: core.linear_stage(cfg, embed, head, out, args["num_classes"]))


@stage_task("predict")
def predict_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    store = open_store(store_root)
    cfg, args = config_from_view(config)
    embed, head = _path(store, "embed", inputs, "embed"), _path(store, "train_head", inputs, "head")
    readout = _path(store, args["readout_stage"], inputs, "readout")
    return run_stage(store, "predict", config, inputs,
                     lambda out: core.predict_stage(cfg, embed, head, readout, out, use_crf=args["crf"]))


@stage_task("evaluate")
def evaluate_task(config: dict, inputs: dict[str, str], store_root: str) -> dict:
    """``inputs``: ``embed`` (evaluation labels) and one ``predict`` key per method name."""
    store = open_store(store_root)
    _, args = config_from_view(config)
    embed = _path(store, "embed", inputs, "embed")
    methods = {name: store.open("predict", key).path for name, key in inputs.items() if name != "embed"}
    return run_stage(store, "evaluate", config, inputs,
                     lambda out: core.evaluate_stage(embed, methods, out, num_classes=args["num_classes"],
                                                     class_names=args["class_names"], matched=args["matched"]))
