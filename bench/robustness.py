"""Does a recipe help on data it was not tuned on? Two datasets, selection on one, report on the other.

Every candidate recipe is run through the real `stego_pipeline` flow (tracking off, the shared artifact
cache) on CamVid (train -> val, and train -> test) and on LabelMeFacade (its 100 train images -> the same
100 images, and -> its 845 test images), for each seed. Every run also scores, with no labels used to choose anything:

* ``raw_kmeans``: raw backbone tokens, the paper's readout (k-means best of 5 by objective): the reference;
* ``pca_kmeans``: PCA of the raw tokens to the code dimension, the same k-means readout;
* ``stego_cluster_head`` / ``stego_cluster_raw``: the recipe's readout on the head's code / on the raw tokens;
* ``stego_cluster``: the one of those two whose k-means restarts agree most (``cluster.code=agreement``);
* ``coherence_choice``: the one of those two whose predictions are spatially most coherent (what
  ``cluster.code=coherence`` would keep; both signals are recorded by every run).

Each dataset has a selection split (CamVid val; LabelMeFacade train, scored with its labels) and a report
split (test). A row is chosen on one dataset's selection split (mean over seeds of cluster mIoU / raw
k-means) and reported on the other's test split, in both directions (and, as in the earlier protocol, chosen
on LabelMeFacade test, reported on CamVid test). The default recipe is the row with the best worse-of-the-two
ratio on both selection splits, reported on both test splits. Each label-free signal's Spearman correlation with mIoU is computed over
every (run, candidate) pair, and over the head-minus-raw differences that its rule decides on.

    python bench/robustness.py                                   # every recipe below, seeds 0 1 2
    python bench/robustness.py --recipes no_concepts --seeds 0 --datasets labelmefacade
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import BEFORE_CLUSTERBOOK, ROOT, machine, mean_std, parse_run_args, run_main, run_pipeline, scores  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "robustness.json"
# Where each dataset is scored: (split, role) - a selection split chooses, a report split is reported.
DATASETS = {
    "camvid": {"preset": "camvid-dinov2s14", "splits": {"val": "select", "test": "report"}},
    # LabelMeFacade has no val split: its 100 train images (the head's own, unlabelled in training) choose.
    "labelmefacade": {"preset": "labelmefacade-dinov2s14", "splits": {"train": "select", "test": "report"}},
}
# (chosen on, reported on): one dataset's selection split against the other's report split, both ways; the
# earlier protocol chose on LabelMeFacade test (kept for comparison: it is not the CamVid report split either).
DIRECTIONS = [(("camvid/val",), ("labelmefacade/test",)), (("labelmefacade/train",), ("camvid/test",)),
              (("labelmefacade/test",), ("camvid/test",))]
# The default recipe: chosen on both selection splits at once (the best worst-of-the-two ratio to raw k-means),
# reported on both report splits.
DEFAULT_CHOICE = (("camvid/val", "labelmefacade/train"), ("camvid/test", "labelmefacade/test"))
# Common to every run: no CRF (the readout alone), PCA to the code dimension, no linear probes (the
# protocol is about the label-free cluster readout), the label-free choice of code recorded.
COMMON = ["crf.enabled=false", "reduce.methods=[pca]", "probes=false", "cluster.code=agreement"]
BASELINE, DEFAULT = "no_concepts", "clusterbook_w0.01"  # the baselines (the same in every recipe's run) come from BASELINE
RECIPES: dict[str, tuple[str, list[str]]] = {
    BASELINE: ("the previous default: the dinov2 recipe without the clusterbook (per-anchor shifts, EMA teacher, 168 px, "
               "balanced k-means + refinement)", BEFORE_CLUSTERBOOK),
    **{f"clusterbook_w{w}": (f"the dinov2 recipe with a CAUSE-style concept clusterbook (256 concepts) at loss.w_concept={w}"
                             + (": the dinov2 preset, the default" if f"clusterbook_w{w}" == DEFAULT else ""),
                             [f"loss.w_concept={w}", "concepts.num_concepts=256"])
       for w in ("0.005", "0.01", "0.02", "0.05", "0.2")},
}
# Rows of the report: (recipe, method) -> description.
ROWS = {
    (BASELINE, "raw_kmeans"): "raw tokens, k-means best of 5 by objective (the paper's readout): reference",
    (BASELINE, "pca_kmeans"): "PCA to 70 dimensions, the same k-means",
    (BASELINE, "stego_cluster_raw"): "raw tokens, the dinov2 readout (balanced restarts + refinement), no head",
    (BASELINE, "stego_cluster_head"): "the previous default's head (no clusterbook), the same readout",
    **{(rec, "stego_cluster_head"): f"the clusterbook head at loss.w_concept={rec.split('_w')[1]}"
       + (" (the default)" if rec == DEFAULT else "") for rec in RECIPES if rec != BASELINE},
    (DEFAULT, "stego_cluster"): "the default, code chosen by restart agreement (head or raw tokens)",
    (DEFAULT, "coherence_choice"): "the default, code chosen by spatial coherence of the predictions (head or raw tokens)",
}


def config(dataset: str, recipe: str, seed: int, split: str):
    from stego_core.presets import build_config

    return build_config(DATASETS[dataset]["preset"],
                        overrides=COMMON + RECIPES[recipe][1] + [f"seed={seed}", f"data.eval_split={split}"])


def run_id(run: dict) -> str:
    return f"{run['dataset']}/{run['split']}/{run['recipe']}/{run['seed']}"


def summarize(runs: list[dict]) -> dict:
    """Per row and (dataset, split): mIoU and accuracy over seeds, and the per-seed ratio to raw k-means and to PCA."""
    by = {(r["dataset"], r["split"], r["recipe"], r["seed"]): r for r in runs}
    base = {(d, s, seed): r["metrics"] for (d, s, rec, seed), r in by.items() if rec == BASELINE}
    table: dict[str, dict] = {}
    for (recipe, method), description in ROWS.items():
        row = table.setdefault(f"{recipe}/{method}", {"description": description, "scores": {}})
        for dataset, spec in DATASETS.items():
            for split in spec["splits"]:
                seeds = sorted(seed for (d, s, rec, seed) in by if (d, s, rec) == (dataset, split, recipe)
                               and (d, s, seed) in base and method in by[(d, s, rec, seed)]["metrics"])
                if not seeds:
                    continue
                m = [by[(dataset, split, recipe, seed)]["metrics"][method] for seed in seeds]
                raw = [base[(dataset, split, seed)]["raw_kmeans"]["mIoU"] for seed in seeds]
                pca = [base[(dataset, split, seed)]["pca_kmeans"]["mIoU"] for seed in seeds]
                row["scores"][f"{dataset}/{split}"] = {
                    "seeds": seeds, "mIoU": mean_std([x["mIoU"] for x in m]), "accuracy": mean_std([x["accuracy"] for x in m]),
                    "vs_raw": mean_std([x["mIoU"] / r for x, r in zip(m, raw)]),
                    "vs_pca": mean_std([x["mIoU"] / p for x, p in zip(m, pca)])}
    return table


def selection(table: dict) -> list[dict]:
    """Every direction of DIRECTIONS, then DEFAULT_CHOICE: the row whose worst mean ratio to raw k-means over the
    selection splits is best, with its scores on each report split."""
    out = []
    for chosen_on, reported_on in DIRECTIONS + [DEFAULT_CHOICE]:
        candidates = {name: min(row["scores"][s]["vs_raw"]["mean"] for s in chosen_on) for name, row in table.items()
                      if all(s in row["scores"] for s in chosen_on + reported_on)}
        if not candidates:
            continue
        best = max(candidates, key=candidates.get)
        out.append({"chosen_on": " + ".join(chosen_on), "reported_on": " + ".join(reported_on), "chosen": best,
                    "selection_vs_raw": candidates[best],
                    "reported": {s: table[best]["scores"][s] for s in reported_on}})
    return out


SIGNALS = {"agreement": "restart agreement (mean pairwise NMI of the k-means restarts)",
           "coherence": "spatial coherence of the predictions (neighbour-agreement kappa)"}


def signal_choice(run: dict, signal: str) -> str | None:
    """The candidate code ("head" or "raw") the signal's rule keeps in ``run`` (the head on a tie)."""
    values = run.get("cluster_code", {}).get(signal) or {}
    return max(values, key=lambda c: (values[c], c == "head")) if set(values) == {"head", "raw"} else None


def signal_study(runs: list[dict], signal: str) -> dict:
    """How a label-free signal tracks mIoU: Spearman over every (run, candidate) pair, per dataset/split and
    pooled; over the head-minus-raw differences (what its rule decides on); and how often its rule picked the
    candidate with the higher mIoU."""
    from scipy.stats import spearmanr

    def rho(xs, ys):
        return float(spearmanr(xs, ys).statistic) if len(xs) > 2 else None

    points, diffs, right = [], [], []
    for r in runs:
        a, m, pick = r.get("cluster_code", {}).get(signal) or {}, r["metrics"], signal_choice(r, signal)
        if pick is None or "stego_cluster_head" not in m:
            continue
        where = f"{r['dataset']}/{r['split']}"
        mi = {c: m[f"stego_cluster_{c}"]["mIoU"] for c in ("head", "raw")}
        points += [(where, a[c], mi[c]) for c in ("head", "raw")]
        diffs.append((where, a["head"] - a["raw"], mi["head"] - mi["raw"], r["recipe"]))
        right.append((r["recipe"], mi[pick] >= max(mi.values())))
    groups = sorted({w for w, _, _ in points})
    recipes = sorted({d[3] for d in diffs})
    return {
        "description": SIGNALS[signal],
        "pairs": len(points),
        "spearman_pooled": rho([p[1] for p in points], [p[2] for p in points]),
        "spearman_by_split": {g: rho([p[1] for p in points if p[0] == g], [p[2] for p in points if p[0] == g]) for g in groups},
        "spearman_difference": rho([d[1] for d in diffs], [d[2] for d in diffs]),
        "spearman_difference_by_split": {g: rho([d[1] for d in diffs if d[0] == g], [d[2] for d in diffs if d[0] == g])
                                         for g in groups},
        "spearman_difference_by_recipe": {rec: rho([d[1] for d in diffs if d[3] == rec], [d[2] for d in diffs if d[3] == rec])
                                          for rec in recipes},
        "rule_picked_better": f"{sum(ok for _, ok in right)}/{len(right)}",
        "rule_picked_better_by_recipe": {rec: f"{sum(ok for x, ok in right if x == rec)}/{sum(x == rec for x, _ in right)}"
                                         for rec in recipes},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--datasets", nargs="+", default=["labelmefacade", "camvid"], choices=list(DATASETS))
    args, root, out = parse_run_args(ap, RESULTS)
    out.update(what=__doc__.splitlines()[0], common=COMMON, datasets=DATASETS,
               recipes={k: {"description": d, "overrides": o} for k, (d, o) in RECIPES.items()})
    runs = out.setdefault("runs", [])
    done = {run_id(r) for r in runs}
    for seed in args.seeds:
        for recipe in args.recipes:
            for dataset in args.datasets:
                for split in DATASETS[dataset]["splits"]:
                    run = {"dataset": dataset, "split": split, "recipe": recipe, "seed": seed}
                    if run_id(run) in done:
                        continue
                    t0 = time.perf_counter()
                    result = run_pipeline(config(dataset, recipe, seed, split), root)
                    run.update(metrics=scores(result), cluster_code=result["cluster_code"],
                               wall_s=round(time.perf_counter() - t0, 1))
                    if signal_choice(run, "coherence"):
                        run["metrics"]["coherence_choice"] = run["metrics"][f"stego_cluster_{signal_choice(run, 'coherence')}"]
                    runs.append(run)
                    print(f"{run_id(run)}: " + ", ".join(f"{m} {100 * v['mIoU']:.1f}" for m, v in run["metrics"].items())
                          + "".join(f"; {s} {result['cluster_code'].get(s)}" for s in SIGNALS) + f" ({run['wall_s']:.0f} s)",
                          flush=True)
                    write_summary(out, runs, args.json)
    write_summary(out, runs, args.json)  # also when every run was there already: the summary follows this code


def write_summary(out: dict, runs: list[dict], path: Path) -> None:
    """The table, both selections and the signal studies of ``runs``, written with them to ``path``; first the runs
    another process added to ``path`` meanwhile join ``runs`` (one process per recipe can run at once)."""
    if path.exists():
        theirs = json.loads(path.read_text()).get("runs", [])
        runs[:] = [r for r in theirs if run_id(r) not in {run_id(x) for x in runs}] + runs
    table = summarize(runs)
    out.pop("agreement", None)  # written by an earlier version: now under "signals"
    out.update(table=table, selection=selection(table), signals={s: signal_study(runs, s) for s in SIGNALS},
               machine=machine())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_main(main)
