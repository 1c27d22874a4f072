"""Predictions without upsampling the features: the cluster readout's argmax at low resolution (docs/RESULTS.md).

``predict`` without a CRF keeps only each pixel's most likely cluster. It used to upsample the ``D``-channel
maps (384 for raw DINOv2 ViT-S/14 tokens) to the label resolution, normalise them and take cosines with the
centroids; it now takes the scores ``x . mu_k`` on the patch grid and upsamples ``K`` channels
(``stego_core.predict``). Both give the same argmax in exact arithmetic (bilinear upsampling is linear, and
dividing by a pixel's norm does not change which ``k`` is largest). This script measures, on real runs:
the time of both paths over the same images, the share of pixels whose label differs (float rounding at
near-ties) and the mIoU of both.

The runs are the robustness protocol's (``bench/robustness.py``, recipe ``no_concepts``, seed 0) on CamVid test
and LabelMeFacade test, through the real pipeline with the shared artifact cache; every cluster readout of
the run (the head's code, the raw tokens with the recipe's readout, raw k-means, PCA k-means) is measured on
the first ``--images`` evaluation images.

    python bench/predict_readout.py                     # CamVid test and LabelMeFacade test, 200 images each
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import ROOT, machine, parse_run_args, run_main, run_pipeline  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "predict_readout.json"
# readout artifact of the run -> the artifact that maps features to its code (None: the raw tokens)
READOUTS = {"stego_cluster": "head", "tokens_cluster": None, "raw_cluster": None, "pca_cluster": "reduce_pca"}


class UpsampledArgmax:
    """The earlier path: the readout's probabilities from the upsampled ``D``-channel maps, then argmax."""

    def __init__(self, readout) -> None:
        self.readout, self.num_outputs = readout, readout.num_outputs

    def __call__(self, maps, size):
        return self.readout(maps, size)

    def labels(self, maps, size):
        return self.readout(maps, size).argmax(1)


def measure(dataset: str, images: int, root: str) -> list[dict]:
    import numpy as np
    import torch

    from robustness import config
    from stego_core.features import open_embedding
    from stego_core.predict import ClusterReadout, predict
    from stego_core.stages import evaluate_predictions, load_code_map
    from tasks.remote_store import open_store

    cfg = config(dataset, "no_concepts", 0, "test")
    result = run_pipeline(cfg, root)
    keys, store = result["artifacts"], open_store(root)
    data = open_embedding(store.open("embed", keys["embed_eval"]).path)
    n = min(images, len(data.labels))
    feats, flips = data.features[:n], None if data.features_flip is None else data.features_flip[:n]
    size = (int(data.labels.shape[-1]),) * 2
    num_classes = len(result["metrics"]["raw_kmeans"]["per_class_iou"])
    labels = np.asarray(data.labels[:n])
    rows = []
    for readout_name, code in READOUTS.items():
        if f"readout_{readout_name}" not in keys:
            continue
        stage = {"head": "train_head", "reduce_pca": "reduce"}.get(code)
        code_map = load_code_map(store.open(stage, keys[code]).path) if code else None
        centroids = np.load(store.open("cluster", keys[f"readout_{readout_name}"]).path / "centroids.npy")
        fast = ClusterReadout(centroids, cfg.cluster.temperature)
        timings, preds = {}, {}
        with torch.no_grad():
            for path, readout in (("upsampled", UpsampledArgmax(fast)), ("low_resolution", fast)):
                t0 = time.perf_counter()
                preds[path] = predict(feats, flips, code_map, readout, size, progress=False)
                timings[path] = time.perf_counter() - t0
        scores = {p: evaluate_predictions(v, labels, num_predictions=max(int(v.max()) + 1, len(centroids)),
                                          num_classes=num_classes, matched=True) for p, v in preds.items()}
        row = {"dataset": dataset, "readout": readout_name, "images": n, "size": size[0],
               "channels": int(getattr(code_map, "dim", None) or feats.shape[1]), "clusters": int(len(centroids)),
               "upsampled_s": round(timings["upsampled"], 2), "low_resolution_s": round(timings["low_resolution"], 2),
               "speedup": round(timings["upsampled"] / timings["low_resolution"], 2),
               "pixels_differing": float((preds["upsampled"] != preds["low_resolution"]).mean()),
               "mIoU_upsampled": scores["upsampled"]["mIoU"], "mIoU_low_resolution": scores["low_resolution"]["mIoU"]}
        rows.append(row)
        print(f"{dataset:<14} {readout_name:<15} D={row['channels']:<4} {row['upsampled_s']:>7.1f} s -> "
              f"{row['low_resolution_s']:>6.1f} s ({row['speedup']:.1f}x)  pixels differing {row['pixels_differing']:.2e}  "
              f"mIoU {100 * row['mIoU_upsampled']:.3f} -> {100 * row['mIoU_low_resolution']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["camvid", "labelmefacade"])
    ap.add_argument("--images", type=lambda v: max(1, int(v)), default=200, help="evaluation images measured (at least 1)")
    args, root, previous = parse_run_args(ap, RESULTS)
    # A run on some datasets keeps the rows of the others.
    rows = [row for row in previous.get("rows", []) if row["dataset"] not in args.datasets]
    rows += [row for dataset in args.datasets for row in measure(dataset, args.images, root)]
    out = {"what": __doc__.splitlines()[0], "command": "python bench/predict_readout.py " + " ".join(sys.argv[1:]),
           "rows": rows, "machine": machine()}
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
