"""The ``stego_pipeline`` flow: the STEGO stages as cached Prefect tasks, read top to bottom."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
from prefect import flow

from stego_core.coherence import spatial_coherence
from stego_core.config import ExperimentConfig
from stego_core.home import stego_home
from stego_core.stages import split_info
from stego_core.validation import excluded_files, preflight, write_bad_files
from stego_core.data import dataset_subset, resolve_data_root
from flows.run_form import DEFAULT_PRESET, BackboneName, PresetName, form_config
from flows.runner import StageRunner
from flows.shards import embed_split
from tasks.stages import (
    cluster_task,
    evaluate_task,
    knn_task,
    linear_probe_task,
    predict_task,
    reduce_task,
    train_head_task,
)
from tasks.figures import run_figures
from tasks.prefect_stage import run_logger
from tasks.run_artifacts import publish_run
from tasks.run_folder import write_model_folder, write_run_info
from tasks.tracking import (
    NullTracker,
    RunTracker,
    TrackingUnavailable,
    dataset_inputs,
    local_tracking_uri,
    redact,
    resolve_tracking_uri,
)

logger = logging.getLogger(__name__)

METHODS = ("stego_cluster", "stego_cluster_crf", "stego_linear", "raw_kmeans", "raw_linear")
REDUCTION_METHODS = ("pca_kmeans", "pca_linear", "randproj_kmeans", "randproj_linear")  # reduce.methods=[pca, randproj]


def default_artifact_root() -> str:
    return str(stego_home() / "artifacts")


def resolve_config(config: ExperimentConfig) -> ExperimentConfig:
    """Pin what the environment decides (the data root) and the dataset's default subset (cocostuff27:
    ``curated``) into the config, so cache keys, params and tags see them."""
    d, update = config.data, {}
    if d.dataset != "folder":
        update["data_root"] = str(resolve_data_root(d.data_root).resolve())
        update["subset"] = dataset_subset(d.dataset, d.subset)  # cocostuff27: 'curated' unless asked
    if d.eval_dataset not in (None, "folder"):  # transfer to a registered dataset: its root too
        update["eval_data_root"] = str(resolve_data_root(d.eval_data_root or d.data_root).resolve())
    return config.model_copy(update={"data": d.model_copy(update=update)}) if update else config


@flow(name="stego_pipeline", log_prints=True, persist_result=True, result_serializer="json")
def stego_pipeline(preset: PresetName = DEFAULT_PRESET, backbone: Optional[BackboneName] = None,  # type: ignore[valid-type]
                   data_root: Optional[str] = None, seed: Optional[int] = None,
                   overrides: dict[str, Any] = {},  # noqa: B006 (Prefect reads it, never mutates)
                   config: Optional[ExperimentConfig] = None, artifact_root: Optional[str] = None,
                   output: Optional[str] = None, check_inputs: bool = True, tracking: bool = True,
                   tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                   parent_run_id: Optional[str] = None, tracking_fallback: bool = False,
                   shard_deployment: Optional[str] = None) -> dict:
    """Five-crop, embed, KNN, train the head, cluster, probe, predict (+ CRF) and evaluate.

    The result (metrics, artifact keys, cache hits, stage usage) is persisted as JSON in Prefect's
    result storage, so a sweep on another machine can read it.

    On its flow-run page (Artifacts tab) the run shows a table of every method's accuracy and mIoU, a
    summary (dataset, backbone, preset, stage times, cache hits, the MLflow run) and, with an MLflow
    server, the overlay figure.

    Args:
        preset: the shipped preset the run starts from (`stego presets` lists them; the CLI's --preset).
        backbone: the frozen backbone (`stego backbones`); empty: the preset's. Resolutions that are not
            a multiple of its patch size are rounded down.
        data_root: the folder holding the datasets, on the worker; empty: $STEGO_DATA_ROOT.
        seed: the random seed; empty: the preset's.
        overrides: dotted config keys -> values, applied last, as the CLI's --set,
            e.g. {"train.steps": 500, "loss.b_self": 0.1, "crf.enabled": false}.
        config: advanced: a whole experiment config (data, backbone, loss, training, readouts, CRF);
            when given it is the base instead of the preset.
        artifact_root: the artifact cache: a path or an fsspec URL (s3://bucket/prefix) shared by
            the workers; default $STEGO_HOME/artifacts.
        output: also write metrics.json and the model files to this folder (on the worker).
        check_inputs: check the config and every image/label first (seconds), before any compute.
        tracking: record the run in MLflow.
        tracking_uri: MLflow store; default $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db.
        experiment: MLflow experiment; default the config's name.
        parent_run_id: nest the MLflow run under this run (set by the sweeps).
        tracking_fallback: when the tracking server cannot be reached, warn and track to the local
            store ($STEGO_HOME/mlflow.db) instead of failing (the default fails in seconds, before
            any stage runs).
        shard_deployment: a split of more than embed.shard_size images is cropped and embedded in
            shards; with this deployment (embed_shard/embed-shard) each missing shard is a flow run on
            its work pool, so every GPU worker takes shards; empty: the shards run here, one by one.
            Give the artifact_root every worker sees.
    """
    cfg = resolve_config(form_config(preset, config, backbone=backbone, data_root=data_root, seed=seed,
                                     overrides=overrides))
    store = artifact_root or default_artifact_root()
    if cfg.data.subset == "full":
        run_logger().warning("%s on its full 2017 split (data.subset=full): the numbers are not comparable with the "
                             "paper's, which uses the curated lists (data.subset=curated)", cfg.data.dataset)
    if check_inputs:
        cfg = preflight(cfg).config  # under data.bad_files=skip, the bad files are now in data.exclude
    bad = excluded_files(cfg)  # the files data.exclude leaves out, with reasons (reads only those files)
    listed = bool(bad) or cfg.data.bad_files == "skip"
    if output and listed:
        write_bad_files(output, bad)
    tracker = start_tracking(cfg, tracking, tracking_uri, experiment, parent_run_id, store, fallback=tracking_fallback)
    with tracker:  # ends the MLflow run FINISHED, or FAILED with the error
        if listed:
            tracker.log_bad_files([asdict(b) for b in bad])
        result = run_stages(cfg, store, output, tracker, shard_deployment=shard_deployment)
    publish_run(result)  # the flow-run page: metrics table, summary, overlay figure (never fails the run)
    return result


def start_tracking(cfg: ExperimentConfig, enabled: bool, tracking_uri: str | None, experiment: str | None,
                   parent_run_id: str | None, store: str, *, fallback: bool = False) -> RunTracker | NullTracker:
    """Start the MLflow run (before any stage). An unreachable server raises
    :class:`~tasks.tracking.TrackingUnavailable`, or with ``fallback`` warns and tracks locally."""
    if not enabled:
        return NullTracker()
    uri = resolve_tracking_uri(tracking_uri, stego_home())
    args = {"config": cfg.model_dump(mode="json"), "experiment": experiment or cfg.name, "parent_run_id": parent_run_id}
    try:
        return RunTracker.start(tracking_uri=uri, tags={"artifact_root": str(store)}, **args)
    except TrackingUnavailable as exc:
        if not fallback:
            raise
        local = local_tracking_uri(stego_home())
        run_logger().warning("%s; tracking_fallback is on: recording the run in the local store %s", exc, local)
        return RunTracker.start(tracking_uri=local, tags={"artifact_root": str(store), "tracking_fallback": uri},
                                **{**args, "parent_run_id": None})


def run_stages(cfg: ExperimentConfig, store: str, output: str | None, tracker: RunTracker | NullTracker,
               shard_deployment: str | None = None) -> dict:
    """The stages in order (the flow's body); ``tracker`` gets the loss curves and the final record."""
    eval_info, train_info = split_info(cfg, "eval"), split_info(cfg, "train")
    k, names = eval_info.num_classes, list(eval_info.class_names)
    # 0. Lineage: the images trained on and scored (names, roots, counts, digests) as the run's dataset inputs.
    tracker.log_datasets(dataset_inputs(cfg.model_dump(mode="json"), train_info.samples, eval_info.samples))
    run = StageRunner(cfg, store)

    # 1-2. Training crops (five per image, uint8 at the training resolution) and frozen-backbone features,
    # once per split; a large split in shards (on the gpu pool's workers with shard_deployment).
    train_refs = embed_split(run, "train", shard_deployment=shard_deployment)
    crop, emb_train = train_refs["crop"], train_refs["embed"]
    eval_refs = embed_split(run, "eval", shard_deployment=shard_deployment)
    emb_eval = eval_refs["embed"]
    # 3. KNN partners over the training set.
    knn = run(knn_task, "knn", {"embed": emb_train["key"]})
    # 4. The segmentation head, trained with the contrastive correlation loss.
    head = run(train_head_task, "train_head", {"embed": emb_train["key"], "knn": knn["key"]})
    tracker.log_training(Path(head["path"]))
    # 5. Readouts: clusters (no labels) and linear probes (labels), on the code and on raw features.
    # Linear probes need training labels; an unlabelled training folder gets the cluster methods only.
    # A linear probe predicts the training split's classes: it is scored only when the evaluation split has
    # the same ones (a transfer to a dataset with other classes gets the label-free methods only).
    same_classes = (train_info.num_classes, train_info.class_names) == (k, eval_info.class_names)
    labelled = cfg.probes and same_classes and any(s.label is not None for s in train_info.samples)
    if not same_classes:
        run_logger().info("the evaluation classes (%d) are not the training classes (%d): no linear probes", k,
                          train_info.num_classes)
    # Where each family's code comes from (inputs of its readouts and predictions): the head; nothing (the raw
    # features); a reduction of the raw features to train.dim (reduce.methods: PCA, random projection). The
    # baselines (raw and reduced) use the paper's readout: k-means best of kmeans_restarts by objective,
    # whatever readout options the STEGO code uses, and the same linear probe.
    sources: dict[str, tuple[dict, ExperimentConfig]] = {"stego": ({"head": head["key"]}, cfg)}
    if cfg.cluster.code != "head":  # the raw features with the STEGO readout: the other candidate of cluster.code
        sources["tokens"] = ({}, cfg)
    if cfg.baselines:
        sources["raw"] = ({}, baseline_config(cfg))
    reductions = {}
    for method in cfg.reduce.methods:
        reductions[method] = run(reduce_task, "reduce", {"embed": emb_train["key"]}, method=method, dim=cfg.train.dim)
        sources[method] = ({"reduce": reductions[method]["key"]}, baseline_config(cfg))
    readouts = {}  # readout name -> (stage, ref, code inputs)
    for name, (code, of) in sources.items():
        inputs = {"embed": emb_train["key"], **code}
        readouts[f"{name}_cluster"] = ("cluster", run(cluster_task, "cluster", inputs, of=of, num_classes=k,
                                                      method=of.cluster.method), code)
        if labelled and name != "tokens":
            readouts[f"{name}_linear"] = ("linear_probe", run(linear_probe_task, "linear_probe", inputs, num_classes=k), code)
    tracker.log_probes({name: Path(ref["path"]) for name, (_, ref, _) in readouts.items()})
    # 6. Predictions on the evaluation split (+ dense CRF on the STEGO clusters).
    def predict_with(readout_name: str, use_crf: bool) -> dict:
        readout_stage, ref, code = readouts[readout_name]
        return run(predict_task, "predict", {"embed": emb_eval["key"], **code, "readout": ref["key"]},
                   readout_stage=readout_stage, crf=use_crf)

    # The cluster readout's code (cluster.code): the head's, the raw features', or the candidate that a label-free
    # signal prefers; the candidates are predicted first, both signals are recorded whenever both are there.
    candidates = {c: r for c, r in (("head", "stego_cluster"), ("raw", "tokens_cluster")) if r in readouts}
    early = {f"stego_cluster_{c}": predict_with(r, False) for c, r in candidates.items()} if cfg.cluster.code != "head" else {}
    cluster_code = choose_cluster_code(cfg, {c: Path(readouts[r][1]["path"]) for c, r in candidates.items()},
                                       {c: Path(early[f"stego_cluster_{c}"]["path"]) / "predictions.npy" for c in candidates
                                        if f"stego_cluster_{c}" in early})
    chosen = candidates[cluster_code["chosen"]]
    plan = {"stego_cluster": (chosen, False), "stego_linear": ("stego_linear", False),
            "raw_kmeans": ("raw_cluster", False), "raw_linear": ("raw_linear", False)}
    plan.update({m: None for m in early})  # predicted above
    if cfg.crf.enabled:
        plan["stego_cluster_crf"] = (chosen, True)
    for method in cfg.reduce.methods:
        plan.update({f"{method}_kmeans": (f"{method}_cluster", False), f"{method}_linear": (f"{method}_linear", False)})
    preds = {method: early[method] if spec is None else predict_with(*spec)
             for method, spec in plan.items() if spec is None or spec[0] in readouts}
    # 7. Hungarian evaluation over the whole split.
    matched = {m: not m.endswith("linear") for m in preds}
    scores = run(evaluate_task, "evaluate", {"embed": emb_eval["key"], **{m: p["key"] for m, p in preds.items()}},
                 num_classes=k, class_names=names, matched=matched)
    metrics = json.loads((Path(scores["path"]) / "metrics.json").read_text())
    refs = {"crop": crop, "embed_train": emb_train, "embed_eval": emb_eval, "knn": knn, "head": head,
            **{f"reduce_{m}": r for m, r in reductions.items()},
            **{f"readout_{n}": r for n, (_, r, _) in readouts.items()}, **{f"predict_{m}": p for m, p in preds.items()},
            "evaluate": scores}
    result = {"metrics": metrics, "config": cfg.model_dump(mode="json"),
              "artifacts": {n: r["key"] for n, r in refs.items() if r},
              "cached": {n: bool(r.get("cached")) for n, r in refs.items() if r},
              "usage": {n: r["usage"] for n, r in refs.items() if r and r.get("usage")}, "cluster_code": cluster_code}
    shards = {role: refs_["shards"] for role, refs_ in (("train", train_refs), ("eval", eval_refs)) if "shards" in refs_}
    if shards:
        result["shards"] = shards
    linear = readouts.get("stego_linear")
    files = model_files(Path(head["path"]), Path(readouts[chosen][1]["path"]), Path(linear[1]["path"]) if linear else None)
    if output:
        write_model_folder(Path(output), result, files)
        write_run_info(Path(output), result)
    # 8. The record in MLflow: metrics, checkpoints, figures.
    if tracker.run_id:
        history = json.loads((Path(head["path"]) / "history.json").read_text())
        figures = run_figures(metrics, history, eval_embed_dir=Path(emb_eval["path"]), dataset=cfg.data.evaluation().dataset,
                              predict_dirs={m: Path(p["path"]) for m, p in preds.items()}, class_names=names)
        tracker.log_result(result, files, figures)
        result.update(mlflow_run_id=tracker.run_id, tracking_uri=redact(tracker.tracking_uri))
    return result


def choose_cluster_code(cfg: ExperimentConfig, cluster_dirs: dict[str, Path],
                        predictions: dict[str, Path] | None = None) -> dict:
    """Which code ``stego_cluster`` reads out (``cluster.code``): ``{"rule", "chosen": "head" | "raw", "agreement":
    {candidate: mean pairwise NMI of its k-means restarts}, "coherence": {candidate: spatial coherence of its
    predictions}}`` (coherence when ``predictions`` holds each candidate's ``predictions.npy``). Under
    ``agreement`` or ``coherence`` the candidate with the highest signal wins (the head on a tie)."""
    rule = cfg.cluster.code
    agreement = {c: json.loads((d / "clustering.json").read_text()).get("agreement") for c, d in cluster_dirs.items()}
    signals = {"agreement": agreement}
    if predictions and set(predictions) == set(cluster_dirs):
        signals["coherence"] = {c: spatial_coherence(np.load(f, mmap_mode="r")) for c, f in predictions.items()}
    if rule in signals:
        values = signals[rule]
        missing = [c for c, a in agreement.items() if a is None] if rule == "agreement" else []
        if missing:
            raise RuntimeError(f"cluster.code=agreement: the cluster artifacts of {missing} hold no restart agreement "
                               "(written by an older release): run `stego cache verify --fix` or clear the cluster stage")
        chosen = max(values, key=lambda c: (values[c], c == "head"))
        run_logger().info("cluster.code=%s: %s: the cluster readout uses the %s", rule, {c: round(a, 3) for c, a in values.items()},
                          "head's code" if chosen == "head" else "raw features")
    elif rule in ("head", "raw"):
        chosen = rule
    else:
        raise RuntimeError(f"cluster.code={rule}: the head's code and the raw features must both be clustered and predicted")
    return {"rule": rule, "chosen": chosen, **signals}


def baseline_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the raw-feature k-means baseline's readout: best of ``kmeans_restarts`` by objective."""
    cluster = cfg.cluster.model_copy(update={"method": "kmeans", "select": "objective", "refine_steps": 0})
    return cfg.model_copy(update={"cluster": cluster})


def model_files(head_dir: Path, cluster_dir: Path, linear_dir: Path | None) -> list[Path]:
    """The files ``stego predict --run`` needs (head, centroids, linear probe if any) plus the loss record."""
    files = [head_dir / "head.safetensors", head_dir / "head.json", head_dir / "loss.json", head_dir / "history.json",
             cluster_dir / "centroids.npy"]
    return files + ([linear_dir / "linear.safetensors", linear_dir / "linear.json"] if linear_dir else [])


