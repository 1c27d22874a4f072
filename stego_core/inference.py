"""Segment new images with a finished run: its config, head, centroids and linear probe.

Each image is resized so its shorter side is the run's evaluation resolution, centre-cropped to a
multiple of the patch size, embedded (+ flip), coded by the head, read out by the cluster centroids
at the crop's resolution and optionally refined with the dense CRF. Writes ``<stem>.png`` (cluster
ids) and ``<stem>_overlay.png`` (colours blended over the image).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from stego_core.backbones import create_backbone
from stego_core.config import ExperimentConfig
from stego_core.crf import dense_crf
from stego_core.data import image_to_tensor, list_samples, load_image, resize_center_crop_geometry
from stego_core.predict import cluster_readout
from stego_core.stages import crf_params, load_head
from stego_core.training import resolve_device

logger = logging.getLogger(__name__)


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (deterministic)."""
    rng = np.random.default_rng(12345)
    return rng.integers(40, 256, size=(max(n, 1), 3), dtype=np.uint8)


def load_run(run_dir: str | Path) -> tuple[ExperimentConfig, Path]:
    run = Path(run_dir)
    meta, model = run / "metrics.json", run / "model"
    if not meta.exists() or not (model / "head.safetensors").exists():
        raise FileNotFoundError(f"{run} is not a finished run folder (needs metrics.json and model/); "
                                f"create one with `stego run --output {run}`")
    return ExperimentConfig.model_validate(json.loads(meta.read_text())["config"]), model


@torch.no_grad()
def predict_images(run_dir: str | Path, images_dir: str | Path, out_dir: str | Path, *, use_crf: bool = False,
                   device: str = "auto", progress: bool = True) -> list[Path]:
    cfg, model = load_run(run_dir)
    dev = resolve_device(device)
    backbone = create_backbone(cfg.embed.backbone, weights=cfg.embed.weights, pretrained=cfg.embed.pretrained).to(dev)
    head = load_head(model, dev)
    readout = cluster_readout(np.load(model / "centroids.npy"), cfg.cluster.temperature)
    colours = palette(len(np.load(model / "centroids.npy")))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    p = backbone.patch_size
    for sample in tqdm(list_samples(images_dir), desc="predict", disable=not progress):
        img = load_image(sample.image)
        w, h, left, top = resize_center_crop_geometry(img.width, img.height, cfg.embed.eval_resolution)
        resized = img.resize((w, h), Image.BICUBIC)
        cw, ch = (w // p) * p, (h // p) * p
        left, top = (w - cw) // 2, (h - ch) // 2
        crop = resized.crop((left, top, left + cw, top + ch))
        x = image_to_tensor(crop, backbone.spec.mean, backbone.spec.std)[None].to(dev)
        feats = backbone(x)
        maps = head(feats)
        if cfg.embed.flip_tta:
            maps = (maps + head(backbone(x.flip(-1))).flip(-1)) / 2
        probs = readout(maps.float(), (ch, cw))[0].cpu().numpy()
        rgb = np.asarray(crop, dtype=np.uint8)
        if use_crf:
            probs = dense_crf(rgb, probs, crf_params(cfg.crf))
        ids = probs.argmax(0).astype(np.uint8)
        Image.fromarray(ids).save(out / f"{sample.stem}.png")
        overlay = (0.5 * rgb + 0.5 * colours[ids]).astype(np.uint8)
        Image.fromarray(overlay).save(out / f"{sample.stem}_overlay.png")
        written.append(out / f"{sample.stem}.png")
    return written
