"""The embed stage's pixel loader alone, against a bare memory copy of the same bytes, in the same run.

The training crops are stored by the crop stage as one uint8 array at the training resolution, so the
embed stage reads slices of a memory map instead of decoding image files. Measured here, on CPU, with
no backbone (what the GPU would be fed):

* ``bare copy``: ``np.array(pixels[i:i + B])`` over the whole array, the floor any loader pays;
* ``stored crops``: :func:`stego_core.features.prefetch_batches` over a :class:`~stego_core.data.CropArrays`
  (what the stage runs: one thread a few slices ahead, torch tensors out);
* ``decoded crops``: the same crops as lossless PNG files decoded, resized and batched by the threads
  loader over a :class:`~stego_core.data.SegmentationDataset` (what the stage did before), and the full
  CamVid frames as JPEGs cropped on the fly for reference.

Each figure is the best of ``--repeats`` passes (the page cache is warm after the first). Ratios are
images/s against the bare copy.

Usage::

    python bench/loader.py                      # CamVid train crops at 224 px, writes bench/results/loader.json
    python bench/loader.py --images 200 --repeats 2 --json /tmp/loader.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

from stego_core.data import CropArrays, Sample, SegmentationDataset, dataset_samples, load_image, resolve_data_root, write_crops
from stego_core.features import default_num_workers, prefetch_batches

RESULTS = Path(__file__).resolve().parent / "results"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("STEGO_DATA_ROOT", "../shared/data"))
    parser.add_argument("--images", type=int, default=367, help="CamVid train frames (x5 crops)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS / "loader.json")
    args = parser.parse_args()
    samples = dataset_samples("camvid", "train", resolve_data_root(args.data_root), limit=args.images)
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / "crops"
        t0 = time.perf_counter()
        n = write_crops(samples, crops, resolution=args.resolution, num_classes=11, label_map="camvid11",
                        workers=args.workers, progress=False)
        write_s = time.perf_counter() - t0
        stored = CropArrays(crops, mean=MEAN, std=STD)
        pixels = stored.pixels
        png = Path(tmp) / "png"
        png.mkdir()
        index = json.loads((crops / "index.json").read_text())
        png_samples = []
        for row in index:  # the former crop stage's output: each crop a lossless PNG
            left, top, right, bottom = row["box"]
            path = png / f"{row['stem']}.png"
            load_image(row["image"]).crop((left, top, right, bottom)).save(path, compress_level=1)
            png_samples.append(Sample(row["stem"], path))
        decoded = SegmentationDataset(png_samples, resolution=args.resolution, mean=MEAN, std=STD, normalize=False)
        frames = SegmentationDataset(samples, resolution=args.resolution, mean=MEAN, std=STD, normalize=False)
        b, w = args.batch_size, args.workers

        def bare() -> None:
            for i in range(0, len(pixels), b):
                np.array(pixels[i : i + b])

        def drain(ds, workers: int) -> int:
            return sum(len(batch["image"]) for batch in prefetch_batches(ds, b, workers))

        bare()  # warm the page cache
        seconds = {"bare copy": best(bare, args.repeats),
                   "stored crops": best(lambda: drain(stored, 1), args.repeats),
                   "decoded crops (PNG)": best(lambda: drain(decoded, w), args.repeats),
                   "decoded frames (JPEG, for reference)": best(lambda: drain(frames, w), args.repeats)}
        counts = {"bare copy": n, "stored crops": n, "decoded crops (PNG)": n, "decoded frames (JPEG, for reference)": len(frames)}
        same = all(np.array_equal(stored.read_batch(i, i + 1)["image"][0].numpy(), decoded[i]["image"].numpy())
                   for i in range(0, n, max(1, n // 25)))
    rows = [{"loader": k, "images": counts[k], "seconds": round(s, 3), "images_per_s": round(counts[k] / s, 1),
             "ratio_to_bare_copy": round((counts[k] / s) / (n / seconds["bare copy"]), 3)} for k, s in seconds.items()]
    report = {"what": "pixel loaders without a backbone: images/s, best of repeats, against a bare memory copy",
              "command": "python bench/loader.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
              "crops": n, "resolution": args.resolution, "batch_size": b, "decode_workers": w,
              "write_crops_s": round(write_s, 2), "stored_equal_decoded_pixels": same, "rows": rows}
    print(f"\n{n} crops at {args.resolution} px, batch {b}, {w} decoding threads (crop stage wrote them in {write_s:.1f} s)")
    print("| loader | images/s | x bare copy |\n|---|---|---|")
    for r in rows:
        print(f"| {r['loader']} | {r['images_per_s']} | {r['ratio_to_bare_copy']} |")
    print(f"stored pixels equal the decoded PNG crops: {same}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
