"""The tracking layer against a real MLflow SQLite store: names, batching, failure record, reload."""
import json
import math
import os

import pytest
from mlflow import MlflowClient

from stego_core.config import ExperimentConfig
from tasks.tracking import (
    RunTracker,
    download_run,
    flatten_params,
    git_tags,
    history_metrics,
    local_artifact_root,
    local_tracking_uri,
    metric_key,
    parse_run_ref,
    resolve_tracking_uri,
    result_metrics,
    sqlite_path,
)

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One SQLite store for the module (creating its tables costs ~6 s)."""
    return tmp_path_factory.mktemp("stego-home")


@pytest.fixture(scope="module")
def uri(home):
    return local_tracking_uri(home)


def start(uri, experiment="unit", **config_updates):
    cfg = ExperimentConfig().model_dump(mode="json")
    cfg.update(config_updates)
    return RunTracker.start(config=cfg, tracking_uri=uri, experiment=experiment, tags={"extra": "x"})


def head_dir(tmp_path, history):
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "loss.json").write_text(json.dumps({"shifts": {"self": 0.1, "knn": 0.2, "rand": 0.3}}))
    return tmp_path


def test_params_are_the_flattened_config_with_dotted_names():
    flat = flatten_params({"train": {"lr": 0.5, "dims": [1, 2]}, "preset": None, "loss": {"w": {"a": True}}})
    assert flat == {"train.lr": "0.5", "train.dims": "[1, 2]", "preset": "None", "loss.w.a": "True"}
    assert len(flatten_params({"p": "x" * 7000})["p"]) == 6000
    assert flatten_params(ExperimentConfig().model_dump(mode="json"))["loss.b_self"] == "0.08"


def test_metric_names_are_sanitised_for_mlflow():
    # MLflow allows letters, digits, _ - . space : / in metric names
    assert metric_key("stego_cluster", "iou", "low vegetation-2") == "stego_cluster.iou.low vegetation-2"
    assert metric_key("m", "iou", "road (wet)&b|c") == "m.iou.road _wet__b_c"


def test_history_becomes_one_point_per_term_and_step():
    rows = [{"step": 0, "loss": 1.0, "loss_self": 0.5}, {"step": 10, "loss": float("nan"), "loss_self": 0.25}]
    points = history_metrics(rows, "train", 7)
    assert [(m.key, m.step, m.value, m.timestamp) for m in points] == [
        ("train/loss", 0, 1.0, 7), ("train/loss_self", 0, 0.5, 7), ("train/loss_self", 10, 0.25, 7)]


def test_result_metrics_per_method_class_and_stage():
    result = {"metrics": {"stego_cluster": {"accuracy": 0.5, "mIoU": 0.25, "per_class_iou": {"Sky": 0.75, "Pole": None}}},
              "usage": {"head": {"wall_s": 2.0, "peak_rss_mb": 100.0}, "knn": {"wall_s": 1.0, "peak_rss_mb": 50.0}}}
    got = {m.key: m.value for m in result_metrics(result, 0)}
    assert got == {"stego_cluster.accuracy": 0.5, "stego_cluster.mIoU": 0.25, "stego_cluster.iou.Sky": 0.75,
                   "usage/head/wall_s": 2.0, "usage/head/peak_rss_mb": 100.0, "usage/knn/wall_s": 1.0,
                   "usage/knn/peak_rss_mb": 50.0, "usage/total_wall_s": 3.0}


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_a_sqlite_store_keeps_artifacts_beside_its_database(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/db/m.db") == tmp_path / "db" / "m.db"
    assert local_artifact_root(f"sqlite:///{tmp_path}/db/m.db") == tmp_path.resolve() / "db" / "mlflow-artifacts"
    assert sqlite_path("http://127.0.0.1:5000") is None and local_artifact_root("http://127.0.0.1:5000") is None


def test_run_references():
    assert parse_run_ref(f"runs:/{RUN_ID}") == RUN_ID
    assert parse_run_ref(f"runs:/{RUN_ID}/model") == RUN_ID
    assert parse_run_ref(RUN_ID) == RUN_ID
    assert parse_run_ref("runs/latest") is None  # a folder
    with pytest.raises(ValueError, match="expected runs:/<32-hex run id>"):
        parse_run_ref("runs:/abc")


def test_git_commit_of_this_checkout():
    tags = git_tags()
    if not tags:
        pytest.skip("no git here")
    assert len(tags["mlflow.source.git.commit"]) == 40


def test_probe_loss_curves_are_logged_per_probe(uri, home, tmp_path):
    probe, kmeans = tmp_path / "probe", tmp_path / "kmeans"
    probe.mkdir()
    kmeans.mkdir()  # k-means keeps no history: nothing is logged for it
    (probe / "history.json").write_text(json.dumps([{"step": s, "loss": -0.1 * s} for s in (0, 10, 20)]))
    with start(uri) as tracker:
        tracker.log_probes({"stego_cluster": probe, "raw_cluster": kmeans})
    client = MlflowClient(uri)
    curve = client.get_metric_history(tracker.run_id, "probe/stego_cluster/loss")
    assert [(m.step, m.value) for m in curve] == [(0, 0.0), (10, pytest.approx(-1.0)), (20, pytest.approx(-2.0))]
    assert not any(k.startswith("probe/raw_cluster") for k in client.get_run(tracker.run_id).data.metrics)


def test_empty_experiment_name_is_refused(uri, home):
    with pytest.raises(ValueError, match="experiment name is empty"):
        start(uri, experiment=" ")


def test_a_run_logs_params_tags_and_curves_in_batches(uri, home, tmp_path):
    history = [{"step": s, "loss": 1.0 / (s + 1), "loss_self": 0.1 * s} for s in range(600)]  # 1200 points > 1000
    with start(uri) as tracker:
        tracker.log_training(head_dir(tmp_path, history))
        tracker.log_batch(params={f"extra.p{i}": str(i) for i in range(150)})  # > 100 params
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.0005" and run.data.params["extra.p149"] == "149"
    assert len(run.data.params) == len(flatten_params(ExperimentConfig().model_dump(mode="json"))) + 150
    assert run.data.tags["dataset"] == "camvid" and run.data.tags["extra"] == "x"
    curve = client.get_metric_history(tracker.run_id, "train/loss")
    assert [m.step for m in curve] == list(range(600))
    assert curve[3].value == pytest.approx(0.25)
    assert run.data.metrics["train/shift_rand"] == pytest.approx(0.3)
    # The local store keeps artifacts beside the database, not in the working directory.
    assert run.info.artifact_uri.startswith((home.resolve() / "mlflow-artifacts" / "unit").as_uri())


def test_a_failing_run_is_failed_with_the_error_and_keeps_its_logs(uri, home, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with start(uri) as tracker:
            tracker.log_training(head_dir(tmp_path, [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]))
            raise RuntimeError("boom")
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: boom"
    assert run.data.params["train.steps"] == "5000"
    assert [m.value for m in client.get_metric_history(tracker.run_id, "train/loss")] == [1.0, 0.5]
    local = client.download_artifacts(tracker.run_id, "error.txt", str(tmp_path))
    assert "RuntimeError: boom" in open(local).read()


def test_ctrl_c_ends_the_run_killed(uri, home):
    with pytest.raises(KeyboardInterrupt):
        with start(uri) as tracker:
            raise KeyboardInterrupt
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "KILLED"


def test_logged_checkpoints_download_as_a_run_folder(uri, home, tmp_path):
    model = tmp_path / "src"
    model.mkdir()
    for name in ("head.safetensors", "head.json", "centroids.npy"):
        (model / name).write_bytes(name.encode())
    result = {"metrics": {"m": {"accuracy": 1.0, "mIoU": 0.5, "per_class_iou": {}}}, "config": {"name": "t"},
              "artifacts": {"head": "k1"}, "cached": {"head": False}, "usage": {}}
    with start(uri) as tracker:
        tracker.log_result(result, sorted(model.iterdir()))
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.tags["artifact.head"] == "k1" and run.data.metrics["m.mIoU"] == 0.5
    folder = download_run(tracker.run_id, tracking_uri=uri, cache_root=tmp_path / "cache")
    assert folder == tmp_path / "cache" / tracker.run_id
    assert json.loads((folder / "metrics.json").read_text()) == {"metrics": result["metrics"], "config": {"name": "t"}}
    assert (folder / "model" / "head.safetensors").read_bytes() == b"head.safetensors"
    assert json.loads((folder / "model" / "config.json").read_text()) == {"name": "t"}
    stamp = os.stat(folder / "metrics.json").st_mtime_ns
    assert download_run(tracker.run_id, tracking_uri=uri, cache_root=tmp_path / "cache") == folder
    assert os.stat(folder / "metrics.json").st_mtime_ns == stamp  # complete: reused, not fetched again
    assert not math.isnan(run.info.end_time)


def test_a_model_that_cannot_be_logged_is_a_warning_and_a_tag_not_a_failed_run(uri, tmp_path, caplog):
    """A run folder without metrics.json (the pyfunc cannot be built): the run goes on and ends FINISHED."""
    broken = tmp_path / "run"
    (broken / "model").mkdir(parents=True)
    with start(uri) as tracker:
        assert tracker.log_model(broken) is None
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    error = run.data.tags["mlflow_model.error"]
    assert error.startswith("FileNotFoundError: ") and "metrics.json" in error
    assert any(r.levelname == "WARNING" and "could not log its MLflow model" in r.getMessage() for r in caplog.records)


def test_a_run_without_checkpoints_cannot_be_downloaded(uri, home, tmp_path):
    with start(uri) as tracker:
        pass
    with pytest.raises(FileNotFoundError, match="has no metrics.json \\+ model/ artifacts"):
        download_run(tracker.run_id, tracking_uri=uri, cache_root=tmp_path)
    assert not any(tmp_path.iterdir())  # no half-downloaded folder left behind


def test_a_server_that_stops_answering_gives_one_clear_error_and_no_more_retries(monkeypatch):
    import socket
    import time

    from tasks.tracking import TrackingUnavailable, _ServerGuard

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    guard = _ServerGuard(MlflowClient(url), url)
    with pytest.raises(TrackingUnavailable, match=rf"the MLflow tracking server {url} stopped answering during "
                       r"the run \(\w+ in set_tag\); start it again and rerun"):
        guard.set_tag("0" * 32, "a", "b")
    started = time.perf_counter()
    with pytest.raises(TrackingUnavailable):
        guard.log_batch("0" * 32, metrics=[])
    assert time.perf_counter() - started < 1  # the later calls fail at once
