"""Sharded crops and embedding: a large split in shards of ``embed.shard_size`` images, each shard its own
cached, retryable crop + embed artifacts, joined into one view that later stages read as one table.

Where the shards run is Prefect's business, not ours. With ``shard_deployment`` (the ``embed-shard``
deployment of ``deployments/prefect.yaml``, on the ``gpu`` work pool) every shard that is not in the
artifact store yet becomes a flow run of that deployment, queued on the pool, so N GPU workers on N
machines (``stego worker --pool gpu``) embed N shards at once; the work pool, its workers' concurrency
limits and Prefect's states do the scheduling, retries of transient failures and crash reports. A
work pool was chosen over a distributed task runner (Dask, Ray) because the GPU workers already serve
that pool, it needs no second cluster, and a shard's flow run shows in the UI like any other run.

Whatever happened on the workers, this flow then walks the shards in order through the same cached
tasks: a shard a worker published is a cache hit, a shard whose worker died (its flow run Crashed or
Failed) is computed here, alone. Without ``shard_deployment`` that walk computes every shard in this
process, one after another, each still its own cached unit: a run killed mid-split resumes at the
first missing shard.
"""
from __future__ import annotations

import logging
from typing import Any

from prefect import flow

from flows.runner import StageRunner
from stego_core.budget import crop_bytes, human_bytes, require_disk
from stego_core.config import ExperimentConfig
from stego_core.stages import Role, embed_plan, shard_ranges, split_info
from tasks.catalog import ArtifactStore
from tasks.prefect_stage import run_logger
from tasks.stages import crop_task, embed_task, part_inputs

logger = logging.getLogger(__name__)

SHARD_DEPLOYMENT = "embed_shard/embed-shard"


def embed_split(runner: StageRunner, role: Role, *, shard_deployment: str | None = None,
                timeout_minutes: float | None = None) -> dict[str, dict | None]:
    """The ``{"crop", "embed"}`` refs of the split ``role`` (crops for the training split only): one artifact
    each when the split fits in one shard, else the embed join of the shards' artifacts (and no crop ref:
    each embed shard refers to its own crops) and ``"shards"``: the ranges, those missing at the start,
    the final state of each dispatched one (``"a-b": state``) and those computed in this process."""
    cfg = runner.cfg
    ranges = shard_ranges(len(split_info(cfg, role).samples), cfg.embed.shard_size)
    if len(ranges) == 1:
        return embed_shard_refs(runner, role, None)
    missing = [r for r in ranges if not shard_present(runner, role, r)]
    plan_shards(runner, role, missing)
    dispatched = {}
    if shard_deployment and missing:
        dispatched = dispatch_shards(cfg, role, missing, shard_deployment, runner.store_root, timeout_minutes)
    parts = [embed_shard_refs(runner, role, r) for r in ranges]
    computed = [list(r) for r, p in zip(ranges, parts) if not p["embed"]["cached"]]
    run_logger().info("embed (%s): %d shards of %d images, %d missing; %d computed in this process%s", role,
                      len(ranges), cfg.embed.shard_size, len(missing), len(computed), f" {computed}" if computed else "")
    joined = runner(embed_task, "embed", part_inputs([p["embed"]["key"] for p in parts]), role=role,
                    shards=[list(r) for r in ranges])
    return {"crop": None, "embed": joined,
            "shards": {"ranges": [list(r) for r in ranges], "missing": [list(r) for r in missing],
                       "dispatched": dispatched, "computed_here": computed}}


def embed_shard_refs(runner: StageRunner, role: Role, rows: tuple[int, int] | None) -> dict[str, dict | None]:
    """Crop (training split) and embed one shard (``rows``; None: the whole split): ``{"crop", "embed"}`` refs."""
    args = {} if rows is None else {"rows": list(rows)}
    crop = runner(crop_task, "crop", {}, **args) if role == "train" else None
    embed = runner(embed_task, "embed", {"crop": crop and crop["key"]}, role=role, **args)
    return {"crop": crop, "embed": embed}


def shard_present(runner: StageRunner, role: Role, rows: tuple[int, int]) -> bool:
    """Whether the shard's embed artifact is in the store: its fingerprint, so nothing is computed, hashed or
    downloaded (the walk through the tasks verifies what it then uses)."""
    args = {"rows": list(rows)}
    crop = runner.key("crop", {}, **args) if role == "train" else None
    return runner.store.fingerprint("embed", runner.key("embed", {"crop": crop}, role=role, **args)) is not None


def plan_shards(runner: StageRunner, role: Role, missing: list[tuple[int, int]]) -> None:
    """Refuse before any shard starts when the missing shards' artifacts do not fit on a local store's disk
    (each shard checks its own part again when it starts)."""
    if not missing or not isinstance(runner.store, ArtifactStore):
        return
    per = 5 if role == "train" and runner.cfg.data.five_crop else 1
    images = sum(b - a for a, b in missing) * per
    needed = embed_plan(runner.cfg, role, images)
    if role == "train":
        needed += crop_bytes(images, runner.cfg.embed.train_resolution)
    require_disk(runner.store.root, needed, f"the {len(missing)} missing {role} shards ({images} images)",
                 hint="or set train.features=recompute to store no training features" if role == "train" else "")
    logger.info("%d %s shards to compute: %s planned", len(missing), role, human_bytes(needed))


def dispatch_shards(cfg: ExperimentConfig, role: Role, ranges: list[tuple[int, int]], deployment: str,
                    store_root: str, timeout_minutes: float | None) -> dict[str, str]:
    """One flow run of ``deployment`` per shard, queued on its work pool; waits until all are final and
    returns ``{rows: final state name}``. A shard that did not complete is only logged: the caller computes
    whatever is still missing."""
    from flows.deploy import queue_run, wait_for_runs

    runs = {}
    for a, b in ranges:
        run = queue_run(deployment, {"config": cfg.model_dump(mode="json"), "role": role, "rows": [a, b],
                                     "artifact_root": store_root},
                        name=f"embed {role} shard {a}-{b}", tags=["stego", "embed-shard"],
                        hint="or run the pipeline without shard_deployment to embed the shards in this process")
        runs[str(run.id)] = (a, b)
    run_logger().info("queued %d %s shards on %s", len(runs), role, deployment)
    states: dict[str, str] = {}

    def finished(run: Any) -> None:
        rows = runs[str(run.id)]
        states[f"{rows[0]}-{rows[1]}"] = run.state.name
        if not run.state.is_completed():
            run_logger().warning("shard %s (flow run %s) ended %s: %s; it is computed here", rows, run.id,
                                 run.state.name, run.state.message or "")

    wait_for_runs(list(runs), timeout_s=60 * timeout_minutes if timeout_minutes else None, poll_s=2.0,
                  on_final=finished, what=f"{role} shards")
    return states


@flow(name="embed_shard", log_prints=True)
def embed_shard(config: ExperimentConfig, role: str, rows: list[int], artifact_root: str) -> dict:
    """Crop (training split) and embed one shard of a split into the shared artifact store.

    Args:
        config: the experiment (the pipeline run passes its own, resolved config).
        role: "train" or "eval".
        rows: [start, stop): the shard's images of the split.
        artifact_root: the artifact store every worker sees (a shared path or an fsspec URL).
    """
    refs = embed_shard_refs(StageRunner(config, artifact_root), role, (int(rows[0]), int(rows[1])))
    return {name: ref and {"key": ref["key"], "cached": ref["cached"]} for name, ref in refs.items()}
