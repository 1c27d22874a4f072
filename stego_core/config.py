"""Typed configuration: one pydantic model per stage, composed into :class:`ExperimentConfig`.

The same model is the Prefect flow's parameter (the UI renders it as a form) and what the CLI
builds from a preset, a YAML file and ``--set key=value`` overrides. Unknown keys are errors.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(_Strict):
    dataset: str = Field("camvid", description="registered dataset name, or 'folder' for a custom image folder")
    data_root: Optional[str] = Field(None, description="data root (default: $STEGO_DATA_ROOT)")
    train_split: str = Field("train", description="split the head is trained on (labels unused except by linear probes)")
    eval_split: str = Field("val", description="split the methods are evaluated on")
    subset: Optional[Literal["curated", "full"]] = Field(
        None, description="cocostuff27: 'curated' (default) reads STEGO's curated image lists (49,629 / 2,175), 'full' "
        "every 2017 image (not comparable with the paper; the run is tagged so); other datasets: leave unset")
    train_images: Optional[str] = Field(None, description="dataset='folder': training image folder")
    train_labels: Optional[str] = Field(None, description="dataset='folder': training label folder (optional)")
    eval_images: Optional[str] = Field(None, description="dataset='folder': evaluation image folder")
    eval_labels: Optional[str] = Field(None, description="dataset='folder': evaluation label folder")
    num_classes: Optional[int] = Field(None, ge=1, le=255, description="dataset='folder': number of classes")
    eval_dataset: Optional[str] = Field(
        None, description="transfer: evaluate on another dataset than the training one (a registered name, or 'folder' "
        "with eval_images / eval_labels / eval_num_classes); its eval_split is scored and its classes set the number of "
        "clusters; default: data.dataset")
    eval_data_root: Optional[str] = Field(None, description="transfer: data root of eval_dataset (default: data_root)")
    eval_num_classes: Optional[int] = Field(None, ge=1, le=255, description="transfer to eval_dataset='folder': its "
                                            "number of classes (default: num_classes)")
    train_limit: Optional[int] = Field(None, ge=2, description="use only the first N training images")
    eval_limit: Optional[int] = Field(None, ge=1, description="use only the first N evaluation images")
    five_crop: bool = Field(True, description="train on the 5 half-size crops of each training image")
    crop_ratio: float = Field(0.5, gt=0.0, le=1.0, description="crop side as a fraction of the image side")
    bad_files: Literal["error", "skip"] = Field(
        "error", description="a bad image or label (unreadable, too small, label of another size or with ids out of "
        "range, missing label in a labelled split): 'error' stops the run before any compute, naming the file; 'skip' "
        "leaves it out (preflight adds it to data.exclude), lists it in bad_files.json and runs on the rest")
    exclude: tuple[str, ...] = Field(
        (), description="image or label files left out of both splits, as listed (a sample goes if its image or its "
        "label is here); preflight fills it under bad_files='skip', so the cache keys see the exclusion")

    @model_validator(mode="after")
    def _eval_classes_of_a_folder(self):
        if self.eval_num_classes is not None and (self.eval_dataset or self.dataset) != "folder":
            raise ValueError(f"data.eval_num_classes is for an evaluation folder; the evaluation dataset "
                             f"{self.eval_dataset or self.dataset!r} has its own classes: leave it out")
        return self

    def evaluation(self) -> DataConfig:
        """These settings as the evaluation split sees them: ``dataset``, ``data_root`` and ``num_classes`` are
        the evaluation dataset's (``eval_dataset``, ``eval_data_root``, ``eval_num_classes`` folded in)."""
        if self.eval_dataset is None and self.eval_data_root is None and self.eval_num_classes is None:
            return self
        dataset = self.eval_dataset or self.dataset
        return self.model_copy(update={
            "dataset": dataset, "data_root": self.eval_data_root or (self.data_root if dataset != "folder" else None),
            "num_classes": (self.eval_num_classes or self.num_classes) if dataset == "folder" else None,
            **({} if dataset == "folder" else {"eval_images": None, "eval_labels": None}),  # folder-only fields
            "subset": self.subset if dataset == self.dataset else None,  # the training dataset's subset
            "eval_dataset": None, "eval_data_root": None, "eval_num_classes": None})

    @field_validator("exclude")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not str(v).strip() for v in value):
            raise ValueError("data.exclude holds an empty path")
        return tuple(sorted(set(value)))  # one order, one cache key


class EmbedConfig(_Strict):
    backbone: str = Field("dinov2_vits14", description="backbone registry name (see `stego backbones`)")
    weights: Optional[str] = Field(None, description="local weights file; default: the backbone's default source")
    pretrained: bool = Field(True, description="False = random weights (tests only)")
    train_resolution: int = Field(224, ge=16, le=2048, description="training crops: shorter side resized + centre crop")
    eval_resolution: int = Field(322, ge=16, le=2048, description="evaluation centre crop size")
    flip_tta: bool = Field(True, description="average codes with the horizontally flipped image at evaluation")
    batch_size: int = Field(8, ge=1, le=1024)
    num_workers: Optional[int] = Field(None, ge=0, le=64, description="decoding workers (default: cores - 1, at most 4 on CPU, 16 on CUDA)")
    loader: Literal["auto", "threads", "processes"] = Field(
        "auto", description="decoding workers: threads, or processes (fork server); auto = processes on CUDA "
                            "with more than one worker, threads otherwise (same outputs either way)")
    shard_size: int = Field(5000, ge=1, description="a split of more images than this is cropped and embedded in "
                            "shards of this many images, each its own cached, retryable unit (not in the cache key "
                            "of unsharded splits); shards run on the gpu pool's workers when the pipeline is given "
                            "shard_deployment")


class KnnConfig(_Strict):
    k: int = Field(30, ge=2, description="neighbours stored per image (rank 0 is the image itself)")
    num_neighbors: int = Field(7, ge=1, description="positive partner drawn uniformly from ranks 1..num_neighbors")
    index: Literal["auto", "exact", "ivf", "hnsw"] = Field(
        "auto", description="auto: exact up to approx_threshold images, an inverted file (ivf) above; hnsw: a graph index")
    approx_threshold: int = Field(200_000, ge=1)
    min_recall: float = Field(0.95, ge=0.0, le=1.0, description="an approximate index widens its search until recall@k "
                              "against exact search on a sample of queries reaches this (0 = no tuning)")

    @model_validator(mode="after")
    def _check(self):
        if self.num_neighbors >= self.k:
            raise ValueError(f"knn.num_neighbors ({self.num_neighbors}) must be < knn.k ({self.k})")
        return self


class LossConfig(_Strict):
    shift_mode: Literal["fixed", "calibrated", "per_anchor"] = Field(
        "calibrated", description="fixed: use b_*; calibrated: b_* = quantiles q_* of the training correlations (label-free); "
        "per_anchor: each sampled point's shift = the q_anchor quantile of its correlations with random images' points "
        "(hidden positives mined from the backbone)")
    w_self: float = Field(0.67, ge=0.0, description="weight of the image-with-itself term")
    w_knn: float = Field(0.25, ge=0.0, description="weight of the image-with-KNN-partner term")
    w_rand: float = Field(0.63, ge=0.0, description="weight of the image-with-random-image term")
    b_self: float = Field(0.08, ge=-1.0, le=1.0, description="self shift (shift_mode=fixed)")
    b_knn: float = Field(0.02, ge=-1.0, le=1.0, description="KNN shift (shift_mode=fixed)")
    b_rand: float = Field(0.66, ge=-1.0, le=1.0, description="random shift (shift_mode=fixed)")
    q_self: float = Field(0.5, ge=0.0, le=1.0, description="self shift = this quantile of self-pair correlations (calibrated)")
    q_knn: float = Field(0.5, ge=0.0, le=1.0, description="KNN shift = this quantile of KNN-pair correlations (calibrated)")
    q_rand: float = Field(0.8, ge=0.0, le=1.0, description="random shift = this quantile of random-pair correlations (calibrated)")
    q_anchor: float = Field(0.8, ge=0.0, le=1.0, description="per-anchor shift quantile (shift_mode=per_anchor)")
    w_teacher: float = Field(0.0, ge=0.0, description="weight of the teacher-positives term: distil the EMA teacher's code "
                             "correlations on KNN and random pairs (needs train.ema_decay > 0)")
    q_teacher: float = Field(0.8, ge=0.0, le=1.0, description="per-anchor shift quantile of the teacher term")
    w_concept: float = Field(0.0, ge=0.0, description="weight of the concept-wise contrastive term (CAUSE; 0 = off): "
                             "points whose frozen features share a concept of the modularity clusterbook (the "
                             "concepts section) are positives, the others negatives, against the EMA teacher's codes "
                             "(train.ema_decay > 0; before it warms up, or without it, the head's own detached codes)")
    concept_temperature: float = Field(0.1, gt=0.0, description="softmax temperature of the concept term")
    calibration_batches: int = Field(20, ge=1, description="training batches sampled to calibrate the shifts")
    pointwise: bool = True
    add_back_mean: bool = Field(True, description="after pointwise centering add back the global mean (as the reference)")
    zero_clamp: bool = True
    feature_samples: int = Field(11, ge=1, le=64)
    neg_samples: int = Field(5, ge=1, le=64)


class TrainConfig(_Strict):
    dim: int = Field(70, ge=1, le=4096, description="code dimension")
    steps: int = Field(5000, ge=0)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(5e-4, gt=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    feature_dropout: bool = Field(True, description="channel dropout on the features entering the loss")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="keep an EMA teacher of the head with this decay and "
                             "return it (0 = off); its codes feed loss.w_teacher")
    features: Literal["cache", "recompute"] = Field(
        "cache", description="cache: train on the embed stage's stored features (fp16 memmap); recompute: store no "
        "training features and run the frozen backbone on each batch's crops (the reference's design: any dataset "
        "trains on any disk, at the cost of a backbone pass per step and per readout)")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=0, description="save a resumable training checkpoint every N steps (0 = off)")


class ConceptConfig(_Strict):
    """The concept clusterbook of loss.w_concept: concept vectors fitted once, before training, by gradient ascent
    on the modularity of the cosine-affinity graph of a token sample of the training features (CAUSE)."""

    num_concepts: int = Field(256, ge=2, le=4096, description="concept vectors (unused ones stay empty)")
    tokens: int = Field(50_000, ge=100, description="training tokens sampled (seeded, within memory.host_gb)")
    steps: int = Field(200, ge=0, description="Adam steps of modularity ascent")
    batch_tokens: int = Field(1024, ge=16, description="tokens per step (the affinity graph is batch x batch)")
    lr: float = Field(1e-2, gt=0.0)
    temperature: float = Field(0.1, gt=0.0, description="soft assignment = softmax(cosine / temperature)")

    @model_validator(mode="after")
    def _enough_tokens(self):
        if self.num_concepts > self.tokens:
            raise ValueError(f"concepts.num_concepts ({self.num_concepts}) must be <= concepts.tokens ({self.tokens})")
        return self


class ClusterConfig(_Strict):
    method: Literal["probe", "kmeans", "consensus"] = Field(
        "probe", description="probe: STEGO's SGD cluster probe; kmeans: faiss spherical k-means (restarts chosen by "
        "cluster.select); consensus: overcluster, then the grouping most of kmeans_restarts k-means runs agree on")
    num_clusters: Optional[int] = Field(None, ge=1, le=255, description="default: number of classes")
    select: Literal["objective", "balance"] = Field(
        "objective", description="method=kmeans: keep the restart with the best k-means objective, or the one with the "
        "most even cluster sizes (label-free; see docs/RESULTS.md for how each tracks val mIoU on CamVid)")
    overcluster: int = Field(100, ge=2, le=4096, description="method=consensus: number of fine clusters")
    refine_steps: int = Field(0, ge=0, description="pseudo-label refinement of the centroids: teacher-student steps "
                              "with affinity-smoothed pseudo-labels (0 = off)")
    probe_steps: int = Field(1000, ge=1)
    probe_lr: float = Field(5e-3, gt=0.0)
    probe_batch_size: int = Field(32, ge=1)
    kmeans_restarts: int = Field(5, ge=1, description="k-means restarts (kmeans), or solutions voting (consensus)")
    kmeans_max_tokens: int = Field(500_000, ge=1000, description="token sample for k-means fits")
    temperature: float = Field(2.0, gt=0.0, description="cluster probabilities = softmax(temperature * cosine)")
    code: Literal["head", "raw", "agreement", "coherence"] = Field(
        "head", description="what the cluster readout (stego_cluster) clusters: head: the head's code; raw: the raw "
        "backbone features (the head is still trained and scored as stego_cluster_head); agreement: both, keeping the "
        "one whose k-means restarts agree most (mean pairwise NMI, no labels; needs method=kmeans, select=balance); "
        "coherence: both, keeping the one whose predictions on the evaluation images are spatially most coherent "
        "(neighbour-agreement kappa, no labels)")

    @model_validator(mode="after")
    def _agreement_needs_restarts(self):
        if self.code == "agreement" and (self.method, self.select) != ("kmeans", "balance"):
            raise ValueError(f"cluster.code=agreement compares the restarts of cluster.method=kmeans with "
                             f"cluster.select=balance, got method={self.method}, select={self.select}")
        if self.code == "agreement" and self.kmeans_restarts < 2:
            raise ValueError("cluster.code=agreement needs cluster.kmeans_restarts >= 2 (restarts to compare)")
        return self


class LinearConfig(_Strict):
    steps: int = Field(1000, ge=1)
    lr: float = Field(5e-3, gt=0.0)
    batch_size: int = Field(32, ge=1)
    loss_resolution: Optional[int] = Field(
        None, ge=1, le=2048, description="score the probe against label class shares pooled to this size (e.g. 64: "
        "about 10x faster); default: every label pixel")


class ReduceConfig(_Strict):
    """Dimensionality-reduction baselines: the raw backbone features reduced to ``train.dim`` channels, then read
    out exactly as the raw features and the STEGO code are (the raw baseline's k-means, the same linear probe)."""

    methods: tuple[Literal["pca", "randproj"], ...] = Field(
        (), description="reductions scored by every run, each as <method>_kmeans and <method>_linear: pca (fitted on a "
        "token sample of the training features), randproj (a seeded Gaussian random projection); empty = none")
    whiten: bool = Field(False, description="pca: divide each component by its standard deviation")
    max_tokens: int = Field(200_000, ge=100, description="pca: training tokens sampled (seeded) to fit the components")

    @field_validator("methods")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


class CrfConfig(_Strict):
    enabled: bool = True
    iterations: int = Field(10, ge=1)
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    processes: Optional[int] = Field(None, ge=1, description="CRF worker processes (default: all cores)")


class MemoryConfig(_Strict):
    """How much of a machine a stage may fill with resident copies. Never part of a cache key: whether a table is
    resident or streamed from its memory-mapped artifact, the numbers are the same."""

    host_gb: float = Field(4.0, gt=0.0, description="host memory for resident copies (the training features on a "
                           "CPU, the training code for the readouts); larger tables are read from their memory-mapped "
                           "files batch by batch (the code through a float32 file beside the artifacts)")
    device_gb: float = Field(4.0, gt=0.0, description="GPU memory for a device-resident copy of the training features; "
                             "larger tables are gathered from the host memmap batch by batch")
    placement: Literal["auto", "resident", "stream"] = Field(
        "auto", description="auto: resident when a table fits its budget, else streamed; resident / stream force one")


class ExperimentConfig(_Strict):
    name: str = Field("stego", description="experiment name")
    preset: Optional[str] = Field(None, description="preset this config was built from")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    data: DataConfig = DataConfig()
    embed: EmbedConfig = EmbedConfig()
    knn: KnnConfig = KnnConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    concepts: ConceptConfig = ConceptConfig()
    cluster: ClusterConfig = ClusterConfig()
    linear: LinearConfig = LinearConfig()
    crf: CrfConfig = CrfConfig()
    reduce: ReduceConfig = ReduceConfig()
    memory: MemoryConfig = MemoryConfig()
    baselines: bool = Field(True, description="also score raw-feature k-means and linear probe")
    probes: bool = Field(True, description="train and score the linear probes (supervised by the training labels)")

    @model_validator(mode="after")
    def _teacher_needs_ema(self):
        if self.loss.w_teacher > 0 and self.train.ema_decay == 0:
            raise ValueError(f"loss.w_teacher={self.loss.w_teacher} needs an EMA teacher: set train.ema_decay "
                             "(e.g. 0.99) or loss.w_teacher=0")
        return self
