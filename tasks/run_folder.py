"""The run folder: what ``stego run --output DIR`` writes and what each tracked run logs to MLflow.

    metrics.json      {"metrics", "config", "cluster_code", "data_subset"?}: what ``stego predict --run``,
                      ``stego compare`` and the registered model read
    model/            the files predict needs (head, centroids, linear probe, loss record) + config.json
    run.json          artifact keys, cache hits, time and memory per stage (and shards): not part of the model
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RUN_INFO = ("artifacts", "cached", "usage", "shards")


def run_record(result: Mapping[str, Any]) -> dict:
    """``metrics.json`` of a pipeline result: the metrics, the config, the cluster code chosen and, for a
    dataset with subsets, which images the numbers are about (the paper's curated split, or not)."""
    record = {"metrics": result["metrics"], "config": result["config"]}
    if "cluster_code" in result:
        record["cluster_code"] = result["cluster_code"]
    subset = result["config"].get("data", {}).get("subset")
    if subset is not None:
        record["data_subset"] = subset
    return record


def write_model_folder(out: Path, result: Mapping[str, Any], files: Iterable[Path]) -> None:
    """``out/metrics.json`` and ``out/model/`` (``files`` copied, the config beside them)."""
    model = out / "model"
    model.mkdir(parents=True, exist_ok=True)
    for src in files:
        shutil.copy2(src, model / Path(src).name)
    (model / "config.json").write_text(json.dumps(result["config"], indent=1))
    (out / "metrics.json").write_text(json.dumps(run_record(result), indent=1))


def write_run_info(out: Path, result: Mapping[str, Any]) -> None:
    """``out/run.json``: where each stage's artifact is, which were cache hits, time and memory."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps({k: result.get(k) for k in RUN_INFO if k in result}, indent=1))
