"""The stego_pipeline flow end to end on real CamVid images with the offline DINOv2 weights.

Tiny on purpose (4 training images -> 20 crops, 3 evaluation images, small resolutions, a few steps):
it checks the wiring, the artifacts, the metrics file and the cache, not the segmentation quality.
"""
import json

import numpy as np
import pytest

from flows.pipeline import METHODS, REDUCTION_METHODS, stego_pipeline
from stego_core.coherence import spatial_coherence
from stego_core.presets import build_config
from tests_helpers import TINY, flow_run_artifacts, tiny_overrides

pytestmark = pytest.mark.slow



def tiny_config(camvid_root, *extra):
    return build_config("camvid-quick", overrides=[f"data.data_root={camvid_root}", *TINY, *extra])


@pytest.fixture(scope="module")
def first_run_state(prefect_harness, camvid_root, tmp_path_factory):
    """The run form's way in (a preset, the data root, overrides), as the Prefect UI's Run page sends it."""
    art, out = tmp_path_factory.mktemp("artifacts"), tmp_path_factory.mktemp("run")
    state = stego_pipeline(preset="camvid-quick", data_root=str(camvid_root), overrides=tiny_overrides(),
                           artifact_root=str(art), output=str(out), return_state=True)
    return state, art, out


@pytest.fixture(scope="module")
def first_run(first_run_state):
    state, art, out = first_run_state
    return state.result(), art, out


def test_the_form_parameters_give_the_cli_config_and_the_run_page_shows_the_scores(first_run_state, camvid_root):
    from flows.pipeline import resolve_config

    state, _, _ = first_run_state
    result = state.result()
    assert result["config"] == resolve_config(tiny_config(camvid_root)).model_dump(mode="json")
    found = flow_run_artifacts(state.state_details.flow_run_id)
    assert set(found) == {"camvid-quick-metrics", "camvid-quick-summary"}  # no image: the local store has no URL
    table = json.loads(found["camvid-quick-metrics"].data)
    assert {r["method"]: r["mIoU (%)"] for r in table} == {m: round(100 * v["mIoU"], 2) for m, v in result["metrics"].items()}
    summary = found["camvid-quick-summary"].data
    assert "preset: `camvid-quick`" in summary and result["mlflow_run_id"] in summary and "| knn |" in summary


def test_writes_all_methods_with_real_metrics(first_run):
    result, _, out = first_run
    written = json.loads((out / "metrics.json").read_text())
    assert set(written) == {"metrics", "config", "cluster_code"}
    assert written["cluster_code"]["chosen"] == "head" and written["cluster_code"]["rule"] == "head"
    assert set(written["metrics"]) == set(METHODS) | set(REDUCTION_METHODS)  # the CamVid presets score the reductions
    for name, m in written["metrics"].items():
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["mIoU"] <= 1.0, name
        assert len(m["per_class_iou"]) == 11
        assert m["num_pixels"] > 0.8 * 3 * 154 * 154  # void pixels aside, every evaluated pixel counted
    # Raw features of a real backbone separate road / sky / building far better than chance even here.
    assert written["metrics"]["raw_linear"]["accuracy"] > 0.3
    assert written["config"]["data"]["train_limit"] == 4
    for f in ("head.safetensors", "head.json", "centroids.npy", "linear.safetensors", "loss.json", "history.json"):
        assert (out / "model" / f).exists(), f
    loss = json.loads((out / "model" / "loss.json").read_text())
    # The dinov2 recipe: every anchor gets its own shift from the backbone's correlations, no global ones.
    assert loss["shift_mode"] == "per_anchor" and loss["q_anchor"] == 0.8 and "shifts" not in loss


def test_second_identical_run_recomputes_nothing(first_run, camvid_root):
    result, art, _ = first_run
    assert not any(result["cached"].values())
    again = stego_pipeline(config=tiny_config(camvid_root), artifact_root=str(art))
    assert all(again["cached"].values()), again["cached"]
    assert again["artifacts"] == result["artifacts"]
    assert again["metrics"] == result["metrics"]


def test_changed_parameter_recomputes_only_the_stages_below(first_run, camvid_root):
    _, art, _ = first_run
    changed = stego_pipeline(config=tiny_config(camvid_root, "train.lr=0.001"), artifact_root=str(art))
    c = changed["cached"]
    upstream = ["crop", "embed_train", "embed_eval", "knn", "readout_raw_cluster", "readout_raw_linear",
                "predict_raw_kmeans", "predict_raw_linear", "reduce_pca", "reduce_randproj", "readout_pca_cluster",
                "readout_randproj_linear", "predict_pca_kmeans", "predict_randproj_linear"]
    downstream = ["head", "readout_stego_cluster", "readout_stego_linear", "predict_stego_cluster",
                  "predict_stego_linear", "predict_stego_cluster_crf", "evaluate"]
    assert all(c[s] for s in upstream), c
    assert not any(c[s] for s in downstream), c


def test_predictions_are_label_sized_cluster_ids(first_run):
    result, art, _ = first_run
    key = result["artifacts"]["predict_stego_cluster"]
    preds = np.load(art / "predict" / key / "predictions.npy")
    assert preds.shape == (3, 154, 154) and preds.max() < 11


def test_unlabelled_training_folder_runs_the_cluster_methods_only(prefect_harness, camvid_root, tmp_path):
    """A custom dataset: unlabelled training images, a labelled evaluation folder (CamVid files copied)."""
    import shutil

    from stego_core.validation import preflight

    src = camvid_root / "camvid"
    train, ev_img, ev_lab = tmp_path / "train", tmp_path / "eval_img", tmp_path / "eval_lab"
    for d in (train, ev_img, ev_lab):
        d.mkdir()
    for f in sorted((src / "images" / "train").iterdir())[:4]:
        shutil.copy(f, train / f.name)
    for f in sorted((src / "images" / "val").iterdir())[:2]:
        shutil.copy(f, ev_img / f.name)
        shutil.copy(src / "labels" / "val" / f"{f.stem}.png", ev_lab / f"{f.stem}.png")
    folder = ["data.dataset=folder", f"data.train_images={train}", f"data.eval_images={ev_img}",
              f"data.eval_labels={ev_lab}", "data.num_classes=11", "crf.enabled=false"]
    cfg = build_config("camvid-quick", overrides=[*TINY, *folder])
    result = stego_pipeline(config=cfg, artifact_root=str(tmp_path / "art"), output=str(tmp_path / "run"))
    assert set(result["metrics"]) == {"stego_cluster", "raw_kmeans", "pca_kmeans", "randproj_kmeans"}  # label-free only
    assert all(0 < m["accuracy"] <= 1 for m in result["metrics"].values())
    assert (tmp_path / "run" / "model" / "centroids.npy").exists()

    unlabelled_eval = build_config("camvid-quick", overrides=[*TINY, *folder[:3], "data.num_classes=11"])
    with pytest.raises(ValueError, match="evaluation split has no labels"):
        preflight(unlabelled_eval)


def test_raw_baseline_ignores_the_stego_readout_options_and_baselines_off_skips_it(first_run, camvid_root):
    """The raw k-means baseline stays the paper's (best restart by objective, no refinement): a changed
    STEGO readout recomputes only the STEGO clusters; ``baselines=false`` drops both raw methods."""
    result, art, _ = first_run
    changed = stego_pipeline(config=tiny_config(camvid_root, "cluster.method=kmeans", "cluster.select=balance",
                                                "cluster.refine_steps=3"),
                             artifact_root=str(art))
    assert changed["artifacts"]["readout_raw_cluster"] == result["artifacts"]["readout_raw_cluster"]
    assert changed["cached"]["readout_raw_cluster"] and not changed["cached"]["readout_stego_cluster"]
    assert changed["metrics"]["raw_kmeans"] == result["metrics"]["raw_kmeans"]
    chosen = json.loads((art / "cluster" / changed["artifacts"]["readout_stego_cluster"] / "clustering.json").read_text())
    assert len(chosen["entropy"]) == 1 and chosen["chosen"] == 0
    no_raw = stego_pipeline(config=tiny_config(camvid_root, "baselines=false", "reduce.methods=[]"), artifact_root=str(art))
    assert set(no_raw["metrics"]) == {"stego_cluster", "stego_cluster_crf", "stego_linear"}
    assert no_raw["metrics"]["stego_cluster"] == result["metrics"]["stego_cluster"]


def test_cluster_code_agreement_and_coherence_pick_the_code_their_signal_prefers(first_run, camvid_root, tmp_path):
    """``cluster.code=agreement``: the head's code and the raw features are clustered with the same readout; the
    candidate whose restarts agree most (NMI, recomputed here from the stored record) is ``stego_cluster``, both
    are scored, and the run folder records the choice. ``cluster.code=raw`` reads out the raw features whatever
    they score; ``probes=false`` scores no linear probe."""
    _, art, _ = first_run
    readout = ["cluster.method=kmeans", "cluster.select=balance", "cluster.kmeans_restarts=3", "reduce.methods=[]"]
    out = tmp_path / "run"
    auto = stego_pipeline(config=tiny_config(camvid_root, *readout, "cluster.code=agreement"), artifact_root=str(art),
                          output=str(out))
    code = auto["cluster_code"]
    stored = {c: json.loads((art / "cluster" / auto["artifacts"][f"readout_{r}"] / "clustering.json").read_text())
              for c, r in (("head", "stego_cluster"), ("raw", "tokens_cluster"))}
    assert code["agreement"] == {c: v["agreement"] for c, v in stored.items()}
    assert all(0.0 <= a <= 1.0 for a in code["agreement"].values())
    assert code["chosen"] == max(code["agreement"], key=code["agreement"].get)
    m = auto["metrics"]
    assert m["stego_cluster"] == m[f"stego_cluster_{code['chosen']}"]
    assert m["stego_cluster_head"] != m["stego_cluster_raw"]
    assert json.loads((out / "metrics.json").read_text())["cluster_code"] == code
    # Both signals are recorded; under cluster.code=coherence the candidate whose predictions are most coherent
    # (recomputed here from the stored predictions) is stego_cluster, from the same cached stages.
    coherent = stego_pipeline(config=tiny_config(camvid_root, *readout, "cluster.code=coherence"), artifact_root=str(art))
    kappa = {c: spatial_coherence(np.load(art / "predict" / coherent["artifacts"][f"predict_stego_cluster_{c}"] / "predictions.npy"))
             for c in ("head", "raw")}
    assert coherent["cluster_code"]["coherence"] == kappa == code["coherence"]
    assert coherent["cluster_code"]["chosen"] == max(kappa, key=kappa.get)
    assert coherent["metrics"]["stego_cluster"] == m[f"stego_cluster_{coherent['cluster_code']['chosen']}"]
    assert not any(hit is False for stage, hit in coherent["cached"].items() if stage != "evaluate")
    raw = stego_pipeline(config=tiny_config(camvid_root, *readout, "cluster.code=raw", "probes=false"),
                         artifact_root=str(art))
    assert raw["metrics"]["stego_cluster"] == m["stego_cluster_raw"] and raw["cluster_code"]["chosen"] == "raw"
    assert not any(name.endswith("linear") for name in raw["metrics"])


def test_sharded_splits_give_the_metrics_of_whole_ones(first_run, camvid_root, tmp_path):
    """Both splits in shards of 2 images (training: 2 shards of 10 crops; evaluation: 2 shards): every stage
    after the embedding reads the joined shards as one table, so the run scores exactly as the unsharded one."""
    result, _, _ = first_run
    sharded = stego_pipeline(config=tiny_config(camvid_root, "embed.shard_size=2"), artifact_root=str(tmp_path),
                             tracking=False)
    assert sharded["shards"]["train"]["ranges"] == [[0, 2], [2, 4]]
    assert sharded["shards"]["eval"]["ranges"] == [[0, 2], [2, 3]]
    assert sharded["shards"]["train"]["computed_here"] == [[0, 2], [2, 4]]
    assert sharded["metrics"] == result["metrics"]
