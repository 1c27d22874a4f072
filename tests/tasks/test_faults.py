"""Faults and safe defaults below the flows: concurrent writers of one artifact, files that are not what
they claim, names that would leave the roots, secrets in what MLflow records, unreachable servers.

Retries of transient vs permanent errors in a toy flow are covered by
``tests/tasks/test_prefect_stage.py::test_transient_error_is_retried`` and
``::test_bad_input_or_maths_error_is_not_retried``; concurrent ``ArtifactStore.create`` by
``tests/tasks/test_catalog.py::test_concurrent_writers_end_with_one_valid_artifact``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import save_file

from stego_core.backbones import create_backbone
from stego_core.config import ExperimentConfig
from stego_core.head import SegmentationHead
from stego_core.stages import load_head, load_linear, save_head, split_info
from tasks.catalog import ArtifactStore, artifact_key
from tasks.prefect_stage import checkpoint_dir, run_stage
from tasks.tracking import RunTracker, TrackingUnavailable, check_reachable, local_tracking_uri, redact

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ two processes, one artifact
WRITER = """
    import hashlib, json, sys, time
    from pathlib import Path
    import numpy as np
    from tasks.catalog import ArtifactStore
    from tasks.prefect_stage import run_stage
    root, name = sys.argv[1], sys.argv[2]

    def compute(out):
        data = np.random.default_rng(7).integers(0, 255, size=2_000_000, dtype=np.uint8)
        (out / "values.bin").write_bytes(data.tobytes())
        (Path(root) / f"inside-{name}").touch()  # both computing at once before either publishes
        deadline = time.monotonic() + 60
        while len(list(Path(root).glob("inside-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"rows": len(data)}

    store = ArtifactStore(root)
    ref = run_stage(store, "toy", {"n": 1}, {}, compute)
    manifest = (Path(ref["path"]) / "manifest.json").read_bytes()  # identifies the published folder
    (Path(root) / f"published-{name}").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(root).glob("published-*"))) < 2 and time.monotonic() < deadline:
        store.open("toy", ref["key"])  # valid at every moment while the other writer publishes
    digest = hashlib.sha256((Path(ref["path"]) / "values.bin").read_bytes()).hexdigest()
    print(json.dumps({"ref": ref, "sha256": digest, "manifest": hashlib.sha256(manifest).hexdigest()}))
"""


def test_two_processes_computing_one_artifact_end_with_the_same_valid_folder(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(root), name], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "AB"]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    refs = [r["ref"] for r in results]
    key = artifact_key("toy", {"n": 1}, {})
    assert [r["key"] for r in refs] == [key, key] and refs[0]["path"] == refs[1]["path"]
    assert not refs[0]["cached"] and not refs[1]["cached"]  # both really computed, at the same time
    artifact = ArtifactStore(root).open("toy", key)  # valid (hashed at publication; its stamp trusted here)
    assert str(artifact.path) == refs[0]["path"] and artifact.metadata["rows"] == 2_000_000
    expected = hashlib.sha256((artifact.path / "values.bin").read_bytes()).hexdigest()
    assert [r["sha256"] for r in results] == [expected, expected]
    final = hashlib.sha256((artifact.path / "manifest.json").read_bytes()).hexdigest()
    assert [r["manifest"] for r in results] == [final, final]  # the first folder published was kept, not replaced
    assert sorted(p.name for p in (root / "toy").iterdir()) == [key]  # no temp or trash folder left
    assert len(list(root.glob("published-*"))) == 2


# ------------------------------------------------------------------------- files that lie
class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_every_torch_load_refuses_pickled_code():
    calls = []
    for path in [*REPO.glob("stego_core/**/*.py"), *REPO.glob("tasks/**/*.py"), *REPO.glob("flows/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                owner = ast.unparse(node.func.value)
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if owner == "torch":
                    calls.append((path.name, kw.get("weights_only")))
                assert owner not in ("pickle", "joblib", "dill"), f"{path}: {owner}.load can run code"
                assert kw.get("allow_pickle") != "True", f"{path}: np.load(allow_pickle=True) can run code"
    assert calls and all(w == "True" for _, w in calls), calls


def test_backbone_weights_holding_code_are_refused_and_not_run(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"could not read weights file .*evil.pth'?: it holds a pickled \S*mkdir "
                       r"object, which is refused: unpickling it could run code") as caught:
        create_backbone("resnet50", weights=path, pretrained=True)
    assert not marker.exists()
    assert "weights_only=False" not in str(caught.value) and "\n" not in str(caught.value)


def test_head_files_that_are_not_what_head_json_says_are_refused(tmp_path):
    save_head(SegmentationHead(16, 4), tmp_path)
    assert load_head(tmp_path).dim == 4
    (tmp_path / "head.json").write_text(json.dumps({"in_dim": 16, "dim": 8}))
    with pytest.raises(ValueError, match=r"head.safetensors does not match .*head.json: linear.bias: file \(4,\) vs \(8,\)"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text(json.dumps({"in_dim": "16", "dim": 4}))
    with pytest.raises(ValueError, match=r"head.json: fields \['in_dim'\] must be integers >= 1"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text(json.dumps({"in_dim": 16, "dim": 4}))
    (tmp_path / "head.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match=r"head.safetensors is not a valid .safetensors file"):
        load_head(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"linear.weight": Payload(marker)}, tmp_path / "head.safetensors")  # a pickle named .safetensors
    with pytest.raises(ValueError, match=r"head.safetensors is not a valid .safetensors file"):
        load_head(tmp_path)
    assert not marker.exists()


def test_linear_probe_with_foreign_tensors_is_refused(tmp_path):
    save_file({"conv.weight": torch.zeros(3, 16, 1, 1), "conv.bias": torch.zeros(3), "extra": torch.zeros(1)},
              str(tmp_path / "linear.safetensors"))
    (tmp_path / "linear.json").write_text(json.dumps({"dim": 16, "num_classes": 3}))
    with pytest.raises(ValueError, match=r"linear.safetensors does not match .*linear.json: unexpected extra"):
        load_linear(tmp_path)


# ----------------------------------------------------------------- names that would escape
@pytest.mark.parametrize("field,value,match", [
    ("dataset", "../../etc", "unknown dataset '../../etc'"),
    ("train_split", "../../etc", "has no split '../../etc'"),
])
def test_dataset_and_split_names_cannot_leave_the_data_root(tmp_path, field, value, match):
    cfg = ExperimentConfig.model_validate({"data": {field: value, "data_root": str(tmp_path)}})
    with pytest.raises(ValueError, match=match):
        split_info(cfg, "train")


@pytest.mark.parametrize("stage,key", [("../../etc", "k1"), ("train_head", "../../etc"), (".checkpoints", "k"),
                                       ("train_head", "/abs")])
def test_stage_and_key_names_cannot_leave_the_artifact_root(store, stage, key):
    for where in (store.location, store.get, lambda s, k: checkpoint_dir(store, s, k)):
        with pytest.raises(ValueError, match=r"(stage|key) .* is not a valid name; use 1-128 letters"):
            where(stage, key)
    if key == "k1":
        with pytest.raises(ValueError, match="is not a valid name"):
            run_stage(store, stage, {}, {}, lambda out: None)
    assert not store.root.exists()  # nothing was written anywhere


# ------------------------------------------------------------------------------- secrets
def test_passwords_and_tokens_are_masked_in_params_and_tags(tmp_path):
    uri = local_tracking_uri(tmp_path)
    cfg = ExperimentConfig().model_dump(mode="json")
    cfg["data"]["data_root"] = "https://alice:s3cr3t-pw@data.example.org/root?token=tok-123&page=2"
    cfg["embed"]["weights"] = "https://ghp_SECRETTOKEN@github.com/x/w.pth"
    tags = {"artifact_root": "s3://bucket/art?X-Amz-Signature=sig-456&X-Amz-Date=1",
            "db": "postgresql://bob:hunter2@db.local:5432/mlflow"}
    with RunTracker.start(config=cfg, tracking_uri=uri, experiment="secrets", tags=tags) as tracker:
        pass
    run = MlflowClient(uri).get_run(tracker.run_id)
    recorded = json.dumps({"params": run.data.params, "tags": run.data.tags})
    for secret in ("s3cr3t-pw", "tok-123", "ghp_SECRETTOKEN", "sig-456", "hunter2"):
        assert secret not in recorded, secret
    assert run.data.params["data.data_root"] == "https://alice:***@data.example.org/root?token=***&page=2"
    assert run.data.params["embed.weights"] == "https://***@github.com/x/w.pth"
    assert run.data.tags["artifact_root"] == "s3://bucket/art?X-Amz-Signature=***&X-Amz-Date=1"
    assert run.data.tags["db"] == "postgresql://bob:***@db.local:5432/mlflow"
    assert run.data.params["train.lr"] == "0.0005" and redact("/data/root") == "/data/root"  # the rest untouched


def test_a_failure_message_with_a_secret_is_masked(tmp_path):
    uri = local_tracking_uri(tmp_path)
    with pytest.raises(RuntimeError):
        with RunTracker.start(config=ExperimentConfig().model_dump(mode="json"), tracking_uri=uri, experiment="e") as t:
            raise RuntimeError("cannot open https://u:pa55@host/x")
    client = MlflowClient(uri)
    assert client.get_run(t.run_id).data.tags["error"] == "RuntimeError: cannot open https://u:***@host/x"
    assert "pa55" not in Path(client.download_artifacts(t.run_id, "error.txt", str(tmp_path))).read_text()


# ------------------------------------------------------------------- unreachable server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_fails_fast_with_a_clear_message(tmp_path):
    url = f"http://bob:pw@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"http://bob:\*\*\*@127.0.0.1:\d+ cannot be reached .*--tracking-fallback"):
        RunTracker.start(config=ExperimentConfig().model_dump(mode="json"), tracking_uri=url, experiment="e")
    assert time.monotonic() - started < 5
    check_reachable(local_tracking_uri(tmp_path))  # local stores are not probed
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"http://127.0.0.1:{listening.getsockname()[1]}")  # something answers: no error
