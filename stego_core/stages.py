"""The pipeline's stages as pure functions from input folders to an output folder.

Each function reads the artifacts it needs, computes, and writes its own files into ``out_dir``
(the orchestration layer decides where that is, caches it and retries it). Returned dicts are small,
JSON-able summaries that end up in the artifact manifest; ``"reads"`` in a summary lists the other
artifact folders (relative to ``out_dir``) whose files this one refers to instead of copying them.

Big tables are read through :mod:`stego_core.access` within the config's memory budget
(:mod:`stego_core.budget`): nothing here holds a table that grows with the training set unless the
budget allows it, and every stage plans its disk before it writes. ``rows=(start, stop)`` makes the
crop and embed stages compute one shard of a split (its images ``start..stop-1``);
:func:`merge_shards` joins the shards' folders into one view.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from numpy.lib.format import open_memmap
from safetensors.torch import save_file

from stego_core import calibration
from stego_core.access import SHARDS_FILE, BatchTable, materialize, sample_tokens
from stego_core.backbones import create_backbone, get_backbone_spec
from stego_core.budget import MemoryBudget, crop_bytes, embed_bytes, require_disk
from stego_core.config import ClusterConfig, CrfConfig, ExperimentConfig, LossConfig
from stego_core.concepts import fit_clusterbook
from stego_core.consensus import balanced_kmeans_choice, consensus_kmeans
from stego_core.crf import CrfParams, CrfPool
from stego_core.data import (
    DATASETS,
    CropArrays,
    Sample,
    SegmentationDataset,
    dataset_samples,
    list_samples,
    load_image,
    resize_center_crop_image,
    write_crops,
)
from stego_core.features import RECOMPUTE_FILE, default_num_workers, extract_features, open_embedding
from stego_core.head import SegmentationHead, load_tensors, read_json_dims
from stego_core.kmeans import spherical_kmeans
from stego_core.knn import knn_search, unit_descriptors
from stego_core.losses import ConceptContrastiveLoss, ContrastiveCorrelationLoss
from stego_core.metrics import ConfusionMatrix, scores_from_confusion
from stego_core.predict import ClusterReadout, LinearReadout, predict
from stego_core.probes import LinearProbe, train_cluster_probe, train_linear_probe
from stego_core.reduction import PROJECTION_FILE, fit_pca, load_projection, random_projection, save_projection
from stego_core.refine import refine_centroids
from stego_core.sampling import PairSampler
from stego_core.training import head_code, resolve_device, train_head

logger = logging.getLogger(__name__)

Role = Literal["train", "eval"]


@dataclass(frozen=True)
class SplitInfo:
    samples: list[Sample]
    num_classes: int
    class_names: tuple[str, ...]
    label_map: str
    ignore_index: int


def split_info(cfg: ExperimentConfig, role: Role) -> SplitInfo:
    """The samples and label conventions of the training or evaluation split of ``cfg.data``."""
    d = cfg.data if role == "train" else cfg.data.evaluation()  # transfer: another dataset's evaluation split
    transfer = role == "eval" and cfg.data.eval_dataset is not None
    limit = d.train_limit if role == "train" else d.eval_limit
    if d.dataset == "folder":
        images = d.train_images if role == "train" else d.eval_images
        labels = d.train_labels if role == "train" else d.eval_labels
        field = "data.eval_dataset" if transfer else "data.dataset"
        if not images:
            raise ValueError(f"{field}='folder' needs data.{role}_images (a folder of images)")
        if d.subset is not None:
            raise ValueError("data.subset is for registered datasets with subsets (cocostuff27); leave it unset "
                             "for data.dataset='folder'")
        if labels and not d.num_classes:
            raise ValueError(f"{field}='folder' with labels needs "
                             f"{'data.eval_num_classes' if transfer else 'data.num_classes'}")
        samples = list_samples(images, labels, limit=limit, exclude=d.exclude,
                               require_labels=bool(labels) and role == "eval" and d.bad_files == "error")
        k = d.num_classes or 1
        return SplitInfo(samples, k, tuple(str(i) for i in range(k)), "identity", 255)
    if d.dataset not in DATASETS:
        raise ValueError(f"unknown {'data.eval_dataset' if transfer else 'dataset'} {d.dataset!r}; known: "
                         f"{', '.join(sorted(DATASETS))}, or 'folder'")
    spec = DATASETS[d.dataset]
    split = d.train_split if role == "train" else d.eval_split
    samples = dataset_samples(d.dataset, split, d.data_root, subset=d.subset, limit=limit, exclude=d.exclude)
    return SplitInfo(samples, spec.num_classes, spec.class_names, spec.label_map, spec.ignore_index)


Rows = tuple[int, int] | None  # a shard: images start..stop-1 of the split; None: the whole split


def split_rows(samples: list[Sample], rows: Rows) -> list[Sample]:
    if rows is None:
        return samples
    start, stop = rows
    if not 0 <= start < stop <= len(samples):
        raise ValueError(f"shard rows {rows} do not lie within the split's {len(samples)} images")
    return samples[start:stop]


def shard_ranges(num_images: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(0, s), (s, 2s), ...]`` covering ``num_images`` (one range when it fits in one shard)."""
    if shard_size < 1:
        raise ValueError(f"embed.shard_size must be >= 1, got {shard_size}")
    return [(a, min(a + shard_size, num_images)) for a in range(0, num_images, shard_size)]


# ----------------------------------------------------------------------------------------- crop
def crop_stage(cfg: ExperimentConfig, out_dir: Path, rows: Rows = None) -> dict:
    """The training crops (five per image, or the whole image) at the training resolution, as uint8 arrays."""
    info = split_info(cfg, "train")
    samples = split_rows(info.samples, rows)
    resolution = cfg.embed.train_resolution
    crops = len(samples) * (5 if cfg.data.five_crop else 1)
    require_disk(out_dir, crop_bytes(crops, resolution), f"the crop stage ({crops} crops at {resolution} px)")
    n = write_crops(samples, out_dir, resolution=resolution, five_crop=cfg.data.five_crop, crop_ratio=cfg.data.crop_ratio,
                    num_classes=info.num_classes, label_map=info.label_map, ignore_index=info.ignore_index,
                    workers=default_num_workers())
    return {"num_images": len(samples), "num_crops": n, "resolution": resolution}


# ---------------------------------------------------------------------------------------- embed
def embed_plan(cfg: ExperimentConfig, role: Role, num_images: int) -> int:
    """Bytes the embed stage will write for ``num_images`` images (crops) of ``role``."""
    spec = get_backbone_spec(cfg.embed.backbone)
    resolution = cfg.embed.train_resolution if role == "train" else cfg.embed.eval_resolution
    return embed_bytes(num_images, channels=spec.embed_dim, grid=resolution // spec.patch_size, label_side=resolution,
                       flip=role == "eval" and cfg.embed.flip_tta,
                       features=not (role == "train" and cfg.train.features == "recompute"))


def embed_stage(cfg: ExperimentConfig, role: Role, out_dir: Path, crop_dir: Path | None = None, rows: Rows = None) -> dict:
    """Features of the training crops (``crop_dir``: the crop stage's folder) or of the evaluation images
    (``rows``: one shard of them). ``train.features=recompute`` stores no training features: only the
    labels, the descriptors and what :func:`~stego_core.features.open_embedding` needs to recompute them."""
    info = split_info(cfg, role)
    e = cfg.embed
    backbone = create_backbone(e.backbone, weights=e.weights, pretrained=e.pretrained)
    resolution = e.train_resolution if role == "train" else e.eval_resolution
    if resolution % backbone.patch_size:
        raise ValueError(
            f"embed.{role}_resolution={resolution} is not a multiple of {e.backbone}'s patch size {backbone.patch_size}; "
            f"use e.g. {resolution - resolution % backbone.patch_size}"
        )
    recompute = role == "train" and cfg.train.features == "recompute"
    if crop_dir is not None:
        dataset = CropArrays(crop_dir, mean=backbone.spec.mean, std=backbone.spec.std)
        if dataset.resolution != resolution:
            raise ValueError(f"the crops in {crop_dir} are {dataset.resolution} px, embed.train_resolution is {resolution}; "
                             "rerun the crop stage")
    elif recompute:
        raise ValueError("train.features=recompute reads the training crops: pass the crop stage's folder (crop_dir)")
    else:
        dataset = SegmentationDataset(
            split_rows(info.samples, rows), resolution=resolution, mean=backbone.spec.mean, std=backbone.spec.std,
            num_classes=info.num_classes, label_map=info.label_map, ignore_index=info.ignore_index,
        )
    hint = "or set train.features=recompute to store no training features" if role == "train" and not recompute else ""
    require_disk(out_dir, embed_plan(cfg, role, len(dataset)), f"the embed stage ({role}, {len(dataset)} images)", hint)
    summary = extract_features(
        backbone, dataset, out_dir, batch_size=e.batch_size, num_workers=e.num_workers,
        device=resolve_device(cfg.device), flip=(role == "eval" and e.flip_tta), loader=e.loader,
        store_features=not recompute,
    )
    if recompute:
        crops = os.path.relpath(crop_dir, out_dir)
        spec = {"crops": crops, "backbone": e.backbone, "weights": e.weights, "pretrained": e.pretrained,
                "mean": list(backbone.spec.mean), "std": list(backbone.spec.std),
                "feature_shape": summary["feature_shape"][1:], "batch_size": e.batch_size}
        (out_dir / RECOMPUTE_FILE).write_text(json.dumps(spec, indent=1))
        summary["reads"] = [crops]
    return {**summary, "backbone": e.backbone, "resolution": resolution, "num_classes": info.num_classes}


def merge_shards(parts: Sequence[Path], out_dir: Path) -> dict:
    """Join shard folders of one stage (crop or embed) into one view: ``shards.json`` lists them, in row
    order, relative to ``out_dir``; readers (:func:`stego_core.access.open_table`) see one table."""
    if not parts:
        raise ValueError("merge_shards needs at least one shard folder")
    relative = [os.path.relpath(p, out_dir) for p in parts]
    (out_dir / SHARDS_FILE).write_text(json.dumps({"parts": relative}, indent=1))
    return {"shards": len(parts), "reads": relative}


# ------------------------------------------------------------------------------------------ knn
def knn_stage(cfg: ExperimentConfig, embed_dir: Path, out_dir: Path) -> dict:
    means = open_embedding(embed_dir).descriptors
    if means is None:
        raise FileNotFoundError(f"{embed_dir} holds no descriptors.npy (written by an older version); rerun the embed stage")
    descriptors = unit_descriptors(np.asarray(means))
    info: dict = {}
    nbrs, sims = knn_search(descriptors, min(cfg.knn.k, len(descriptors)), index=cfg.knn.index,
                            approx_threshold=cfg.knn.approx_threshold, min_recall=cfg.knn.min_recall,
                            info=info)
    np.save(out_dir / "knn.npy", nbrs)
    np.save(out_dir / "similarities.npy", sims)
    return {"num_images": int(len(nbrs)), "k": int(nbrs.shape[1]), **info}


# ----------------------------------------------------------------------------------- train head
def loss_from_config(loss: LossConfig, sampler: PairSampler | None,
                     clusterbook: np.ndarray | None = None) -> tuple[ContrastiveCorrelationLoss, dict]:
    """Build the loss; with ``shift_mode='calibrated'`` measure the shifts on ``sampler``'s batches; with
    ``loss.w_concept > 0`` its concept term contrasts over ``clusterbook`` (:func:`fit_concepts`)."""
    if loss.w_concept > 0 and clusterbook is None:
        raise ValueError("loss.w_concept > 0 needs a concept clusterbook (fit_concepts)")
    shifts: dict | None = {"self": loss.b_self, "knn": loss.b_knn, "rand": loss.b_rand}
    info: dict = {"shift_mode": loss.shift_mode}
    if loss.shift_mode == "per_anchor":
        shifts = None
        info["q_anchor"] = loss.q_anchor
    elif loss.shift_mode == "calibrated":
        stats = calibration.correlation_statistics(
            sampler, batches=loss.calibration_batches, feature_samples=loss.feature_samples,
            pointwise=loss.pointwise, add_back_mean=loss.add_back_mean,
        )
        shifts = calibration.calibrate_shifts(stats, {"self": loss.q_self, "knn": loss.q_knn, "rand": loss.q_rand})
        info["correlation_stats"] = calibration.summarize(stats)
    if shifts is not None:
        info["shifts"] = shifts
    fn = ContrastiveCorrelationLoss(
        shifts=shifts, weights={"self": loss.w_self, "knn": loss.w_knn, "rand": loss.w_rand},
        anchor_quantile=loss.q_anchor if loss.shift_mode == "per_anchor" else None,
        teacher_weight=loss.w_teacher, teacher_quantile=loss.q_teacher,
        feature_samples=loss.feature_samples, neg_samples=loss.neg_samples, pointwise=loss.pointwise,
        add_back_mean=loss.add_back_mean, zero_clamp=loss.zero_clamp,
        concept=ConceptContrastiveLoss(torch.from_numpy(clusterbook), temperature=loss.concept_temperature)
        if loss.w_concept > 0 else None, concept_weight=loss.w_concept,
    )
    return fn, info


CONCEPTS_FILE = "concepts.npy"


def fit_concepts(cfg: ExperimentConfig, feats, out_dir: Path, device: torch.device) -> tuple[np.ndarray, dict]:
    """The concept clusterbook of ``loss.w_concept``, fitted on a seeded sample of ``concepts.tokens`` training
    tokens (fewer when the sample would not fit ``memory.host_gb``) and written to ``out_dir/concepts.npy``
    (with ``concepts.json``: its modularity and how many concepts it uses). Training data with fewer tokens
    than ``concepts.num_concepts`` gets one concept per token (the default preset's 256 on a tiny dataset)."""
    c = cfg.concepts
    cap = MemoryBudget.from_config(cfg.memory).limit("cpu") // (4 * int(feats.shape[1]))
    tokens = sample_tokens(feats, max_tokens=max(c.num_concepts, min(c.tokens, cap)), seed=cfg.seed)
    num_concepts = min(c.num_concepts, len(tokens))
    if num_concepts < c.num_concepts:
        logger.warning("concepts.num_concepts=%d: the training data has %d tokens, so %d concepts are fitted",
                       c.num_concepts, len(tokens), num_concepts)
    book, info = fit_clusterbook(tokens, num_concepts=num_concepts, steps=c.steps, batch=c.batch_tokens, lr=c.lr,
                                 temperature=c.temperature, seed=cfg.seed, device=device)
    del tokens
    np.save(out_dir / CONCEPTS_FILE, book)
    (out_dir / "concepts.json").write_text(json.dumps(info, indent=1))
    return book, info


def train_stage(
    cfg: ExperimentConfig, embed_dir: Path, knn_dir: Path, out_dir: Path,
    callback: Callable[[int, dict], None] | None = None, checkpoint_dir: Path | None = None,
) -> dict:
    """Train the head into ``out_dir``; with ``checkpoint_dir`` (a folder that outlives a failed
    ``out_dir``), checkpoint every ``train.checkpoint_every`` steps and resume from one found there."""
    device = resolve_device(cfg.device)
    feats = open_embedding(embed_dir, device=device).features
    knn = np.load(knn_dir / "knn.npy")
    t = cfg.train
    table = BatchTable(feats, device, MemoryBudget.from_config(cfg.memory))  # one copy for both samplers

    def sampler(seed: int) -> PairSampler:
        return PairSampler(table, knn, batch_size=min(t.batch_size, len(feats)), num_neighbors=min(cfg.knn.num_neighbors, knn.shape[1] - 1),
                           seed=seed, device=device)

    book, concepts = fit_concepts(cfg, feats, out_dir, device) if cfg.loss.w_concept > 0 else (None, None)
    loss_fn, loss_info = loss_from_config(cfg.loss, sampler(cfg.seed + 1) if cfg.loss.shift_mode == "calibrated" else None,
                                          book)
    result = train_head(
        sampler(cfg.seed), loss_fn, in_dim=feats.shape[1], dim=t.dim, steps=t.steps, lr=t.lr,
        dropout=t.dropout, feature_dropout=t.feature_dropout, seed=cfg.seed, log_every=t.log_every, callback=callback,
        checkpoint_dir=checkpoint_dir, checkpoint_every=t.checkpoint_every, ema_decay=t.ema_decay,
    )
    save_head(result.head, out_dir)
    (out_dir / "history.json").write_text(json.dumps(result.history))
    (out_dir / "loss.json").write_text(json.dumps(loss_info, indent=1))
    final = result.history[-1] if result.history else {}
    return {"shifts": loss_info.get("shifts"), "final_loss": final.get("loss"), "steps": t.steps,
            "resumed_from_step": result.resumed_from, "features": table.placement,
            **({"concepts": concepts} if concepts is not None else {})}


def save_head(head: SegmentationHead, out_dir: Path) -> None:
    save_file({k: v.contiguous().cpu() for k, v in head.state_dict().items()}, str(out_dir / "head.safetensors"))
    (out_dir / "head.json").write_text(json.dumps({"in_dim": head.in_dim, "dim": head.dim}))


def load_head(head_dir: Path, device: str | torch.device = "cpu") -> SegmentationHead:
    """The head saved by :func:`save_head`; a file that is not what ``head.json`` says is refused (ValueError)."""
    meta = read_json_dims(head_dir / "head.json", ("in_dim", "dim"))
    head = SegmentationHead(meta["in_dim"], meta["dim"])
    load_tensors(head, head_dir / "head.safetensors", described_by=head_dir / "head.json")
    return head.to(device).eval()


def load_code_map(folder: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """What maps features to the code a readout reads: the projection of a reduce artifact
    (``projection.json``), else the trained head of a train_head artifact."""
    if (Path(folder) / PROJECTION_FILE).is_file():
        return load_projection(folder, device)
    return load_head(folder, device)


# --------------------------------------------------------------------------------------- reduce
def reduce_stage(cfg: ExperimentConfig, embed_dir: Path, out_dir: Path, method: Literal["pca", "randproj"],
                 dim: int) -> dict:
    """The training features' reduction to ``dim`` channels: PCA fitted on a seeded token sample
    (``reduce.max_tokens``, drawn by :func:`~stego_core.access.sample_tokens`), or a Gaussian random
    projection seeded by ``cfg.seed``; written as a :class:`~stego_core.reduction.Projection`."""
    features = open_embedding(embed_dir).features
    channels = int(features.shape[1])
    summary: dict = {}
    if method == "pca":
        tokens = sample_tokens(features, max_tokens=cfg.reduce.max_tokens, seed=cfg.seed)
        proj, summary = fit_pca(tokens, dim, whiten=cfg.reduce.whiten)
        del tokens
    elif method == "randproj":
        proj = random_projection(channels, dim, seed=cfg.seed)
    else:
        raise ValueError(f"unknown reduction {method!r}; reduce.methods takes pca, randproj")
    save_projection(proj, out_dir, method, summary)
    return {"method": method, "in_dim": channels, "dim": dim,
            **({"explained_variance_ratio": summary["explained_variance_ratio"]} if summary else {})}


@contextlib.contextmanager
def scratch_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` (same disk as the artifacts), removed on exit: where a table over
    the host budget is spilled. Its name starts with a dot, so it is never taken for an artifact."""
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent, prefix=".scratch-") as folder:
        yield Path(folder)


def _readout_maps(cfg: ExperimentConfig, embed_dir: Path, head_dir: Path | None, scratch: Path):
    """The maps a readout trains on (the training code of a head or a projection, ``head_dir``, or the raw
    features when it is None), the
    training labels, and where the maps are: the code is computed once, in memory within ``memory.host_gb``,
    else into a float32 file in ``scratch``; raw features are read from their memmap."""
    device = resolve_device(cfg.device)
    emb = open_embedding(embed_dir, device=device)
    if head_dir is None:
        return emb.features, emb.labels, "raw features read from the embed artifact"
    code = head_code(load_code_map(head_dir, device), emb.features, device=device)
    maps, placement = materialize(code, budget=MemoryBudget.from_config(cfg.memory), scratch=scratch, what="training code")
    return maps, emb.labels, placement


# -------------------------------------------------------------------------------------- cluster
def cluster_stage(cfg: ExperimentConfig, embed_dir: Path, head_dir: Path | None, out_dir: Path,
                  num_classes: int, method: Literal["probe", "kmeans", "consensus"] | None = None) -> dict:
    c: ClusterConfig = cfg.cluster
    method = method or c.method
    k = c.num_clusters or num_classes
    with scratch_folder(out_dir) as scratch:
        maps, _, placement = _readout_maps(cfg, embed_dir, head_dir, scratch)
        summary: dict = {}
        if method in ("kmeans", "consensus"):
            sample = sample_tokens(maps, max_tokens=c.kmeans_max_tokens, seed=cfg.seed)  # ours: normalised in place
            if method == "consensus":
                centroids, summary = consensus_kmeans(sample, k, restarts=c.kmeans_restarts, fine=c.overcluster,
                                                      seed=cfg.seed, overwrite=True)
            elif c.select == "balance":
                centroids, summary = balanced_kmeans_choice(sample, k, restarts=c.kmeans_restarts, seed=cfg.seed,
                                                            overwrite=True)
            else:
                centroids = spherical_kmeans(sample, k, restarts=c.kmeans_restarts, seed=cfg.seed, overwrite=True)
            del sample
        else:
            history: list[dict] = []
            probe = train_cluster_probe(maps, k, steps=c.probe_steps, batch_size=c.probe_batch_size, lr=c.probe_lr,
                                        seed=cfg.seed, device=str(resolve_device(cfg.device)),
                                        callback=lambda step, loss: history.append({"step": step, "loss": loss}))
            (out_dir / "history.json").write_text(json.dumps(history))
            centroids = torch.nn.functional.normalize(probe.centroids.detach().cpu(), dim=1).numpy()
        if c.refine_steps:
            centroids = refine_centroids(maps, centroids, steps=c.refine_steps, seed=cfg.seed, device=resolve_device(cfg.device))
        del maps
    np.save(out_dir / "centroids.npy", centroids.astype(np.float32))
    (out_dir / "clustering.json").write_text(json.dumps(summary))
    return {"method": method, "num_clusters": int(k), "refine_steps": c.refine_steps, "maps": placement}


# --------------------------------------------------------------------------------------- linear
def linear_stage(cfg: ExperimentConfig, embed_dir: Path, head_dir: Path | None, out_dir: Path, num_classes: int) -> dict:
    history: list[dict] = []
    with scratch_folder(out_dir) as scratch:
        maps, labels, placement = _readout_maps(cfg, embed_dir, head_dir, scratch)
        dim = int(maps.shape[1])
        probe = train_linear_probe(maps, labels, num_classes, steps=cfg.linear.steps, batch_size=cfg.linear.batch_size,
                                   lr=cfg.linear.lr, seed=cfg.seed, device=str(resolve_device(cfg.device)),
                                   loss_resolution=cfg.linear.loss_resolution, budget=MemoryBudget.from_config(cfg.memory),
                                   scratch=scratch, callback=lambda step, loss: history.append({"step": step, "loss": loss}))
        del maps
    (out_dir / "history.json").write_text(json.dumps(history))
    save_file({k: v.contiguous().cpu() for k, v in probe.state_dict().items()}, str(out_dir / "linear.safetensors"))
    (out_dir / "linear.json").write_text(json.dumps({"dim": dim, "num_classes": num_classes}))
    return {"num_classes": num_classes, "maps": placement}


def load_linear(linear_dir: Path) -> LinearProbe:
    meta = read_json_dims(linear_dir / "linear.json", ("dim", "num_classes"))
    probe = LinearProbe(meta["dim"], meta["num_classes"])
    load_tensors(probe, linear_dir / "linear.safetensors", described_by=linear_dir / "linear.json")
    return probe.eval()


# -------------------------------------------------------------------------------------- predict
def crf_params(c: CrfConfig) -> CrfParams:
    return CrfParams(iterations=c.iterations, gaussian_sxy=c.gaussian_sxy, gaussian_compat=c.gaussian_compat,
                     bilateral_sxy=c.bilateral_sxy, bilateral_srgb=c.bilateral_srgb, bilateral_compat=c.bilateral_compat)


def eval_images(index: list[dict], rows, size: int) -> list[np.ndarray]:
    return [np.asarray(resize_center_crop_image(load_image(index[i]["image"]), size), dtype=np.uint8) for i in rows]


def predict_stage(cfg: ExperimentConfig, eval_embed_dir: Path, head_dir: Path | None, readout_dir: Path,
                  out_dir: Path, *, use_crf: bool = False) -> dict:
    """Predictions ``(N, R, R)`` uint8 for the evaluation split: cluster ids or class ids, written batch by
    batch into ``predictions.npy``; with ``use_crf`` one CRF process pool serves every batch."""
    data = open_embedding(eval_embed_dir)
    device = resolve_device(cfg.device)
    head = load_code_map(head_dir, device) if head_dir is not None else None
    if (readout_dir / "centroids.npy").exists():
        readout, kind = ClusterReadout(np.load(readout_dir / "centroids.npy"), cfg.cluster.temperature), "cluster"
    else:
        readout, kind = LinearReadout(load_linear(readout_dir).to(device)), "linear"
    size = int(data.labels.shape[-1])
    preds = open_memmap(out_dir / "predictions.npy", mode="w+", dtype=np.uint8, shape=(len(data.labels), size, size))
    with CrfPool(cfg.crf.processes if use_crf else 1) as pool:
        crf = None
        if use_crf:
            params = crf_params(cfg.crf)

            def crf(rows, probs):
                return pool.map(eval_images(data.index, rows, size), list(probs), params)

        predict(data.features, data.features_flip, head, readout, (size, size), crf=crf, device=device,
                desc=f"predict ({kind}{' + crf' if use_crf else ''})", out=preds)
    preds.flush()
    return {"readout": kind, "crf": use_crf, "num_images": int(len(preds))}


# ------------------------------------------------------------------------------------- evaluate
def evaluate_predictions(predictions: np.ndarray, labels: np.ndarray, *, num_predictions: int, num_classes: int,
                         matched: bool, class_names=None, ignore_index: int = 255) -> dict:
    """Accuracy / mIoU / per-class IoU over the whole set (one confusion matrix)."""
    cm = ConfusionMatrix(num_predictions, num_classes, ignore_index=ignore_index)
    for pred, lab in zip(predictions, labels):
        cm.update(np.asarray(pred, dtype=np.int64), np.asarray(lab, dtype=np.int64))
    return scores_from_confusion(cm.matrix, matched=matched, class_names=list(class_names) if class_names else None)


def evaluate_stage(eval_embed_dir: Path, methods: dict[str, Path], out_dir: Path, *, num_classes: int,
                   class_names, matched: dict[str, bool]) -> dict:
    """Score every method's predictions against the evaluation labels into ``metrics.json``."""
    labels = open_embedding(eval_embed_dir).labels
    metrics = {}
    for name, pred_dir in methods.items():
        preds = np.load(pred_dir / "predictions.npy", mmap_mode="r")
        k = max(int(preds.max()) + 1, num_classes) if matched[name] else num_classes
        metrics[name] = evaluate_predictions(preds, labels, num_predictions=k, num_classes=num_classes,
                                             matched=matched[name], class_names=class_names)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return {name: {"accuracy": m["accuracy"], "mIoU": m["mIoU"]} for name, m in metrics.items()}
