"""Models in MLflow's registry, end to end against a real `mlflow server` on 127.0.0.1: a tracked run (random
ViT-S/8 at 32 px on synthetic folders) logs an MLflow model and its dataset inputs; `stego register` adds it to
the Model Registry; `stego predict --run models:/NAME/1` and `models:/NAME@ALIAS` segment with it; the model
loads with `mlflow.pyfunc.load_model` in a fresh process (outside the repository) and gives the class map
`stego predict` wrote; unknown names, versions and aliases are one line, exit 2; `stego run --register`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from flows.pipeline import stego_pipeline
from stego_core.digest import listing_digest
from stego_core.presets import apply_overrides
from tests_helpers import mlflow_server, synthetic_config, synthetic_folder

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "registry-e2e"
FAST = {"crf.enabled": False, "baselines": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture(scope="module")
def tracked(prefect_harness, server, tmp_path_factory):
    """One tracked run on synthetic folders: ``(result, config, data root, artifact root)``."""
    data, art = tmp_path_factory.mktemp("folders"), tmp_path_factory.mktemp("artifacts")
    synthetic_folder(data, "train", 4, 0)
    synthetic_folder(data, "val", 2, 1)
    cfg = apply_overrides(synthetic_config(data), FAST)
    result = stego_pipeline(config=cfg, artifact_root=str(art), tracking_uri=server, experiment=EXPERIMENT)
    return result, cfg, data, art


@pytest.fixture(scope="module")
def registered(tracked, server, tmp_path_factory):
    """The run registered as ``synth`` version 1 with alias ``champion`` by `stego register`: its output."""
    result, _, _, _ = tracked
    out = stego("register", result["mlflow_run_id"], "--name", "synth", "--alias", "champion", server=server,
                home=tmp_path_factory.mktemp("home"))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def stego(*args, server: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": server, "STEGO_HOME": str(home),
           "PREFECT_API_URL": PREFECT_API_URL.value() or ""}
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def odd_image(folder: Path) -> Path:
    """A 45 x 37 picture of the synthetic kind (odd sides, another aspect ratio than the training images)."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    label = np.kron(rng.integers(0, 3, size=(5, 6)), np.ones((8, 8), dtype=np.int64))[:37, :45]
    pixels = (label[..., None] * 70 + rng.integers(0, 60, size=(37, 45, 3))).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "odd.png")
    return folder / "odd.png"


def test_the_run_logs_its_model_and_its_dataset_inputs(tracked, server):
    result, cfg, data, _ = tracked
    client = MlflowClient(server)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "mlflow_model.error" not in run.data.tags
    (model_id,) = [o.model_id for o in run.outputs.model_outputs]
    model = client.get_logged_model(model_id)
    assert model.name == "stego" and str(model.status) == "READY" and run.data.tags["mlflow_model.id"] == model_id
    assert 0 < run.data.metrics["usage/mlflow_model/wall_s"] < 30
    files = {a.path for a in client.list_logged_model_artifacts(model_id)}
    assert {"MLmodel", "mlflow_pyfunc.py", "requirements.txt", "artifacts", "code"} <= files
    # The run folder layout stego predict --run <run id> reads is still there.
    assert {"metrics.json", "model", "run.json", "figures"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    for context, split, count in (("training", "train", 4), ("evaluation", "val", 2)):
        ds = inputs[context]
        root = data / split / "images"
        assert json.loads(ds.source) == {"uri": str(root)} and ds.source_type == "local"
        assert ds.name == f"folder/{'train' if split == 'train' else 'eval'}"
        samples = sorted(root.iterdir())
        labels = [data / split / "labels" / p.name for p in samples]
        assert ds.digest == listing_digest([p for pair in zip(samples, labels) for p in pair], root)
        assert json.loads(ds.profile)["num_images"] == count and json.loads(ds.profile)["num_labelled"] == count


def test_register_then_predict_by_version_and_alias_and_load_the_pyfunc_in_a_fresh_process(registered, server, tmp_path,
                                                                                          monkeypatch):
    assert "registered model 'synth' version 1 (alias 'champion'): `stego predict --run models:/synth/1`" in registered
    home = tmp_path / "home"
    image = odd_image(tmp_path / "images")
    out = stego("predict", "--run", "models:/synth@champion", "--images", image.parent, "--out", tmp_path / "pred",
                server=server, home=home)
    assert out.returncode == 0, out.stdout + out.stderr
    predicted = np.asarray(Image.open(tmp_path / "pred" / "odd.png"))
    assert predicted.shape == (37, 45) and len(np.unique(predicted)) > 1  # the size of the image; not one flat class
    (fetched,) = (home / "mlflow-models").iterdir()
    assert (fetched / "artifacts" / "run" / "metrics.json").exists()
    # The version the alias points at is the same model, fetched once (in this process: a CLI start is seconds).
    from flows.predict import resolve_run_dir

    monkeypatch.setenv("STEGO_HOME", str(home))
    assert resolve_run_dir("models:/synth/1", server) == fetched / "artifacts" / "run"

    # A fresh interpreter outside the repository: stego_core comes from the model's code/ folder.
    script = ("import sys, numpy as np, mlflow.pyfunc\n"
              "from PIL import Image\n"
              "model = mlflow.pyfunc.load_model('models:/synth/1', model_config={'device': 'cpu'})\n"
              "image = np.asarray(Image.open(sys.argv[1]).convert('RGB'))\n"
              "np.save(sys.argv[2], model.predict(image))\n"
              "batch = np.empty(2, dtype=object); batch[0] = image; batch[1] = image[:20, :31]\n"
              "maps = model.predict(batch)\n"
              "print([m.shape for m in maps], model.metadata.metadata['stego']['backbone'],"
              " [s.shape for s in model.metadata.get_input_schema().inputs])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, str(image), str(tmp_path / "pyfunc.npy")], cwd=tmp_path,
                          env={**env, "MLFLOW_TRACKING_URI": server}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[(37, 45), (20, 31)] dino_vits8 [(-1, -1, 3)]"
    from_pyfunc = np.load(tmp_path / "pyfunc.npy")
    assert from_pyfunc.dtype == np.uint8 and np.array_equal(from_pyfunc, predicted)


def test_unknown_model_name_version_or_alias_is_one_line(registered, server, tmp_path):
    import re

    from flows.errors import report
    from flows.predict import resolve_run_dir

    out = stego("predict", "--run", "models:/nope/1", "--images", tmp_path, "--out", tmp_path / "out", server=server,
                home=tmp_path / "home", timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert re.fullmatch(r"error: models:/nope/1: no registered model 'nope' at http://127\.0\.0\.1:\d+; registered: "
                        r"[^;]*synth[^;]* \(add one with `stego register RUN --name nope`\)", lines[0]), lines[0]
    for ref, message in (  # the same error path, in this process (a CLI start is seconds)
            ("models:/synth/9", "models:/synth/9: model 'synth' has no version 9; its versions: 1"),
            ("models:/synth@prod", "models:/synth@prod: model 'synth' has no alias 'prod'; its aliases: champion"),
            ("models:/synth", "--run 'models:/synth': no version or alias; expected models:/NAME/VERSION")):
        with pytest.raises(Exception) as caught:
            resolve_run_dir(ref, server)
        code, line = report(caught.value, debug=False)
        assert code == 2 and line.startswith(f"error: {message}") and "\n" not in line, line


def test_run_with_register_adds_a_version(tracked, server, tmp_path):
    """`stego run --register NAME` (the stages are cached from the module's run: only tracking is new)."""
    _, cfg, _, art = tracked
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = stego("run", "--config", config, "--artifact-root", art, "--output", tmp_path / "run", "--experiment",
                EXPERIMENT, "--register", "synth-cli", server=server, home=tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "registered model 'synth-cli' version 1" in out.stdout
    version = MlflowClient(server).get_model_version("synth-cli", "1")
    run_id = next(line.split()[2] for line in out.stdout.splitlines() if line.startswith("MLflow run "))
    assert version.run_id == run_id and version.tags["dataset"] == "folder"
