"""Segment new images with a finished run: its config, head, cluster centroids and matching.

:class:`Segmenter` loads a run folder once (``stego run --output``: ``metrics.json`` + ``model/``) and
segments whole images at their own resolution, in one resized pass:

1. the image ``(H, W)`` is resized (bicubic) so its shorter side is the run's ``embed.eval_resolution``
   (the scale the head and centroids were fitted at), the aspect ratio kept, each side then rounded
   to the nearest multiple of the backbone's patch size ``p`` (at most ``p / 2`` pixels of
   stretch per side) -- no crop, every pixel is seen;
2. the frozen backbone (and, with ``embed.flip_tta``, its mirrored view flipped back) and the head
   give a code ``(D, H'/p, W'/p)``, read out by the cluster centroids at ``(H', W')`` into
   probabilities ``(K, H', W')`` as the run's evaluation does;
3. the probabilities are upsampled bilinearly to ``(H, W)`` (optionally refined by the dense CRF
   against the original image with the run's ``crf`` settings), then ``argmax``.

A run evaluated on labels stores the Hungarian cluster -> class matching of its ``stego_cluster``
method (``stego_cluster_crf`` with the CRF) in ``metrics.json``; :meth:`Segmenter.classes` applies
it (unmatched clusters are 255, "no class"), with the dataset's class names and colours.

Memory: the probabilities at full size are ``4 K H W`` bytes (a 12-megapixel photo with 27
clusters: 1.3 GB); the backbone sees only the resized image.

:func:`predict_folder` (:func:`predict_images` from a run folder) runs a :class:`Segmenter` over a folder and writes, per image, ``<stem>.png``
(class ids, or cluster ids without a matching, as a palette PNG), ``<stem>_overlay.png`` (the
colours over the image, a legend of the classes present below it) and ``<stem>.json`` (each
class's share of the pixels), plus ``_summary.json`` for the folder.

Example:
    >>> seg = Segmenter.from_run("runs/camvid", device="cpu")  # doctest: +SKIP
    >>> seg.classes(np.asarray(load_image("street.jpg"))).shape  # (H, W) of the photo  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from stego_core.backbones import Backbone, create_backbone
from stego_core.colours import blend, class_colours, class_ids_from_clusters, colorize, palette, palette_image, with_legend
from stego_core.config import ExperimentConfig
from stego_core.crf import CrfParams, dense_crf
from stego_core.data import DataError, Sample, image_to_tensor, list_samples, load_image, resize_center_crop_geometry
from stego_core.features import embed_batch
from stego_core.head import SegmentationHead
from stego_core.predict import Readout, ClusterReadout
from stego_core.stages import crf_params, load_head
from stego_core.training import resolve_device

logger = logging.getLogger(__name__)

NO_CLASS = 255
SUMMARY_FILE = "_summary.json"


def load_run(run_dir: str | Path) -> tuple[ExperimentConfig, Path]:
    """A run folder's config and ``model/`` folder.

    Raises:
        FileNotFoundError: the folder has no ``metrics.json`` or no ``model/head.safetensors``.
    """
    run = Path(run_dir)
    meta, model = run / "metrics.json", run / "model"
    if not meta.exists() or not (model / "head.safetensors").exists():
        raise FileNotFoundError(f"{run} is not a finished run folder (needs metrics.json and model/); "
                                f"create one with `stego run --output {run}`")
    return ExperimentConfig.model_validate(json.loads(meta.read_text())["config"]), model


def matching_of(metrics: dict, use_crf: bool) -> tuple[list[int] | None, list[str] | None]:
    """The cluster -> class ``assignment`` and the class names of the run's cluster method
    (``stego_cluster_crf`` when ``use_crf`` and the run scored it, else ``stego_cluster``);
    ``(None, None)`` when the run has no such scores (nothing labelled to match against); names are
    None when the scores do not list them."""
    method = "stego_cluster_crf" if use_crf and "stego_cluster_crf" in metrics else "stego_cluster"
    scores = metrics.get(method) or {}
    assignment = scores.get("assignment")
    if assignment is None:
        return None, None
    return [int(a) for a in assignment], [str(name) for name in scores.get("per_class_iou", {})] or None


def pass_size(height: int, width: int, resolution: int, patch: int) -> tuple[int, int]:
    """``(H', W')`` of the resized pass: shorter side ``resolution``, aspect ratio kept, each side
    rounded to the nearest multiple of ``patch`` (at least one patch)."""
    new_w, new_h, _, _ = resize_center_crop_geometry(width, height, resolution)
    return max(patch, round(new_h / patch) * patch), max(patch, round(new_w / patch) * patch)


@dataclass(eq=False)
class Segmenter:
    """A finished run, loaded once, that segments ``(H, W, 3)`` uint8 RGB images of any size.

    Attributes:
        class_names: the evaluation dataset's class names when the run has a matching, else None.
        colours: ``(K, 3)`` uint8: the dataset's class colours with a matching, else one fixed
            colour per cluster.
        has_matching: whether :meth:`classes` maps clusters to classes.
        assignment: cluster -> class id (``-1``: unmatched), or None.
    """

    backbone: Backbone
    head: SegmentationHead | None  # None: the run's cluster readout clusters the raw features (cluster.code)
    readout: Readout
    num_clusters: int
    flip_tta: bool
    resolution: int
    crf: CrfParams | None
    assignment: list[int] | None
    class_names: list[str] | None
    colours: np.ndarray
    device: torch.device
    run_dir: Path

    @classmethod
    def from_run(cls, run_dir: str | Path, *, device: str = "auto", use_crf: bool = False) -> "Segmenter":
        """Load a run folder (``stego run --output``, or one fetched from MLflow).

        Raises:
            FileNotFoundError: not a finished run folder.
            ValueError: an unavailable device, or model files that do not match their metadata.
        """
        cfg, model = load_run(run_dir)
        dev = resolve_device(device)
        backbone = create_backbone(cfg.embed.backbone, weights=cfg.embed.weights, pretrained=cfg.embed.pretrained).to(dev)
        centroids = np.load(model / "centroids.npy")
        record = json.loads((Path(run_dir) / "metrics.json").read_text())
        metrics = record.get("metrics") or {}
        assignment, names = matching_of(metrics, use_crf)
        if assignment is not None and len(assignment) != len(centroids):
            raise ValueError(f"{Path(run_dir) / 'metrics.json'}: the matching has {len(assignment)} entries for "
                             f"{len(centroids)} clusters in {model / 'centroids.npy'}; the files are from different runs")
        if names:
            colours = class_colours(cfg.data.evaluation().dataset, len(names))
        else:  # no names: one colour per id that classes() (or clusters()) can give
            colours = palette(max([len(centroids), *[a + 1 for a in assignment or []]]))
        raw = (record.get("cluster_code") or {}).get("chosen") == "raw"
        return cls(backbone=backbone, head=None if raw else load_head(model, dev), readout=ClusterReadout(centroids, cfg.cluster.temperature),
                   num_clusters=len(centroids), flip_tta=cfg.embed.flip_tta, resolution=cfg.embed.eval_resolution,
                   crf=crf_params(cfg.crf) if use_crf else None, assignment=assignment, class_names=names,
                   colours=colours, device=dev, run_dir=Path(run_dir))

    @property
    def has_matching(self) -> bool:
        return self.assignment is not None

    @torch.no_grad()
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``(K, H, W)`` float32 cluster probabilities of an ``(H, W, 3)`` uint8 RGB image (see the module doc)."""
        image = check_rgb(image)
        height, width = image.shape[:2]
        h, w = pass_size(height, width, self.resolution, self.backbone.patch_size)
        resized = Image.fromarray(image).resize((w, h), Image.BICUBIC)
        x = image_to_tensor(resized, self.backbone.spec.mean, self.backbone.spec.std)[None].to(self.device)
        feats, flipped = embed_batch(self.backbone, x, flip=self.flip_tta)
        def code_of(f: torch.Tensor) -> torch.Tensor:
            return f.float() if self.head is None else self.head(f.float())

        code = code_of(feats)
        if flipped is not None:
            code = (code + code_of(flipped)) / 2
        probs = F.interpolate(self.readout(code.float(), (h, w)), size=(height, width), mode="bilinear", align_corners=False)
        probs = probs[0].cpu().numpy()
        if self.crf is not None:
            probs = dense_crf(image, probs / probs.sum(0, keepdims=True), self.crf)
        return probs

    def clusters(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 cluster ids, the size of the ``(H, W, 3)`` uint8 RGB input."""
        return self.probabilities(image).argmax(0).astype(np.uint8)

    def classes(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 class ids through the run's matching (255: a cluster matched to no class);
        the cluster ids when the run has no matching."""
        ids = self.clusters(image)
        if self.assignment is None:
            return ids
        return class_ids_from_clusters(ids, self.assignment, NO_CLASS).astype(np.uint8)

    def label(self, idx: int) -> str:
        """The legend / JSON name of id ``idx`` in :meth:`classes`' output."""
        if idx == NO_CLASS and self.has_matching:
            return "no class"
        if self.class_names is not None and idx < len(self.class_names):
            return self.class_names[idx]
        return f"cluster {idx}"


def check_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` if it is an ``(H, W, 3)`` uint8 array; else a ValueError saying what to pass."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"Segmenter needs an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}; "
                         "load it with stego_core.data.load_image and np.asarray")
    return image


def pixel_shares(ids: np.ndarray) -> dict[int, float]:
    """Each id's share of the pixels of ``ids``: present ids only, largest first, summing to 1."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64).ravel(), minlength=256)
    return {int(i): float(counts[i] / ids.size) for i in np.argsort(-counts, kind="stable") if counts[i]}


def write_prediction(seg: Segmenter, image: np.ndarray, out: Path, stem: str, name: str) -> dict:
    """``<stem>.png``, ``<stem>_overlay.png`` and ``<stem>.json`` for one image; returns its JSON record."""
    ids = seg.classes(image)
    palette_image(ids, seg.colours).save(out / f"{stem}.png")
    shares = pixel_shares(ids)
    overlay = blend(image, colorize(ids, seg.colours, NO_CLASS), alpha=0.5)
    legend = [(seg.label(i), seg.colours[i] if i < len(seg.colours) else (0, 0, 0)) for i in shares]
    Image.fromarray(with_legend(overlay, legend)).save(out / f"{stem}_overlay.png")
    record = {"image": name, "size": [int(image.shape[1]), int(image.shape[0])], "ids": "classes" if seg.has_matching else "clusters",
              "shares": {seg.label(i): share for i, share in shares.items()}}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    return record


def predict_images(run_dir: str | Path, images_dir: str | Path, out_dir: str | Path, *, use_crf: bool = False,
                   device: str = "auto", progress: bool = True) -> list[Path]:
    """:func:`predict_folder` with the run folder ``run_dir`` loaded as a :class:`Segmenter`.

    Raises:
        DataError: as :func:`predict_folder` (checked before the run is loaded).
        FileNotFoundError: ``run_dir`` is not a finished run folder.
    """
    samples = folder_samples(images_dir)
    return predict_folder(Segmenter.from_run(run_dir, device=device, use_crf=use_crf), samples, out_dir, progress=progress)


def folder_samples(images_dir: str | Path) -> list[Sample]:
    """The images of a folder to predict.

    Raises:
        DataError: the folder is missing or holds no images, or an image is named like the summary file.
    """
    samples = list_samples(images_dir)
    if any(s.stem == Path(SUMMARY_FILE).stem for s in samples):
        raise DataError(f"{images_dir}: an image is named {Path(SUMMARY_FILE).stem}, which would overwrite the "
                        f"summary {SUMMARY_FILE}; rename it")
    return samples


def predict_folder(seg: Segmenter, images: str | Path | list[Sample], out_dir: str | Path, *,
                   progress: bool = True) -> list[Path]:
    """Segment every image of a folder (or the listed samples) and write the files of the module doc
    into ``out_dir``, with a progress bar over the images; returns the class-map PNGs.

    Raises:
        DataError: the folder is missing or holds no images, an image cannot be read (the message
            names it), or an image is named like the summary file.
    """
    samples = images if isinstance(images, list) else folder_samples(images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, records, pixels = [], {}, {}
    for sample in tqdm(samples, desc="predict", unit="image", disable=not progress):
        image = np.asarray(load_image(sample.image), dtype=np.uint8)
        record = write_prediction(seg, image, out, sample.stem, sample.image.name)
        records[sample.image.name] = {"png": f"{sample.stem}.png", "overlay": f"{sample.stem}_overlay.png",
                                      "json": f"{sample.stem}.json", **record}
        n = image.shape[0] * image.shape[1]
        for name, share in record["shares"].items():
            pixels[name] = pixels.get(name, 0.0) + share * n
        written.append(out / f"{sample.stem}.png")
    total = sum(pixels.values())
    summary = {"run": str(seg.run_dir), "images": len(records), "ids": "classes" if seg.has_matching else "clusters",
               "class_names": seg.class_names, "crf": seg.crf is not None,
               "shares": {k: v / total for k, v in sorted(pixels.items(), key=lambda kv: -kv[1])}, "per_image": records}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return written
