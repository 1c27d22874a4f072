"""Stage plumbing: the two cache layers, retries of transient errors only, and the task options.

Flow tests share the session's Prefect test server (``prefect_harness``). Each compute appends
its stage name to a log file passed as an extra task parameter (not part of the cache key), so
"recomputed" is counted, not guessed.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import fsspec.core
import pytest
from prefect import flow
from pydantic import BaseModel

from tasks.catalog import ArtifactStore, artifact_key
from tasks.prefect_stage import (
    is_transient_error,
    results_folder,
    retry_on_transient_errors,
    run_stage,
    stage_cache_key,
    stage_task,
)
from tasks.remote_store import RemoteArtifactStore, open_store


class Scale(BaseModel):
    scale: int


def _append(log_path: str, line: str) -> int:
    with open(log_path, "a") as handle:
        handle.write(line + "\n")
    return Path(log_path).read_text().splitlines().count(line)


def _write_values(folder: Path) -> None:
    (folder / "values.txt").write_text("0 2 4 6")


def _counts(log_path: Path) -> dict[str, int]:
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    return {name: lines.count(name) for name in set(lines)}


@stage_task("toy_source", retries=0)
def toy_source(config: dict, inputs: dict[str, str], store_root: str, log_path: str) -> dict:
    def compute(folder: Path) -> dict:
        _append(log_path, "toy_source")
        (folder / "values.txt").write_text(" ".join(str(i * config["scale"]) for i in range(4)))
        return {"n": 4}

    return run_stage(open_store(store_root), "toy_source", config, inputs, compute)


@stage_task("toy_sum", retries=0)
def toy_sum(config: dict, inputs: dict[str, str], store_root: str, log_path: str) -> dict:
    store = open_store(store_root)

    def compute(folder: Path) -> None:
        _append(log_path, "toy_sum")
        source = store.open("toy_source", inputs["values"])
        values = [int(v) for v in (source.path / "values.txt").read_text().split()]
        (folder / "sum.txt").write_text(str(sum(values) + config["offset"]))

    return run_stage(store, "toy_sum", config, inputs, compute)


@flow
def toy_pipeline(source_cfg: dict, sum_cfg: dict, store_root: str, log_path: str) -> dict:
    source = toy_source(source_cfg, {}, store_root, log_path, return_state=True)
    source_ref = source.result()
    total = toy_sum(sum_cfg, {"values": source_ref["key"]}, store_root, log_path, return_state=True)
    total_ref = total.result()
    return {"states": (source.name, total.name), "source": source_ref, "sum": total_ref}


@stage_task("toy_flaky", retries=2, retry_delay_seconds=0)
def toy_flaky(config: dict, inputs: dict[str, str], store_root: str, log_path: str) -> dict:
    attempt = _append(log_path, "toy_flaky")
    if attempt == 1:
        raise {"OSError": OSError, "ValueError": ValueError, "RuntimeError": RuntimeError}[
            config["error"]
        ](f"attempt {attempt} failed")
    return {"attempt": attempt}


@flow
def flaky_flow(error: str, store_root: str, log_path: str) -> dict:
    return toy_flaky({"error": error}, {}, store_root, log_path)


# --- units, no server ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError("disk"), True), (TimeoutError(), True), (ConnectionError(), True),
        (FileNotFoundError(), False), (PermissionError(), False),
        (ValueError("bad"), False), (RuntimeError("nan"), False), (KeyError("k"), False),
    ],
)
def test_only_transient_errors_are_retried(exc: BaseException, transient: bool) -> None:
    assert is_transient_error(exc) is transient

    class FailedState:
        def result(self):
            raise exc

    assert retry_on_transient_errors(None, None, FailedState()) is transient


def test_stage_cache_key_follows_the_artifact_folder(store: ArtifactStore, tmp_path: Path) -> None:
    context = SimpleNamespace(task=SimpleNamespace(name="toy_source"))
    params = {"config": {"scale": 2}, "inputs": {}, "store_root": str(store.root), "log_path": "x"}
    key = artifact_key("toy_source", {"scale": 2}, {})
    assert stage_cache_key(context, params) is None  # nothing published: Prefect must not cache

    run_stage(store, "toy_source", {"scale": 2}, {}, _write_values)
    first = stage_cache_key(context, params)
    assert first.startswith(f"toy_source-{key}-")
    assert stage_cache_key(context, {**params, "log_path": "other"}) == first  # extras not keyed
    assert stage_cache_key(context, {**params, "config": Scale(scale=2)}) == first  # model == its dump

    other_root = ArtifactStore(tmp_path / "other")
    run_stage(other_root, "toy_source", {"scale": 2}, {}, _write_values)
    assert stage_cache_key(context, {**params, "store_root": str(other_root.root)}) != first

    shutil.rmtree(store.location("toy_source", key))
    assert stage_cache_key(context, params) is None
    run_stage(store, "toy_source", {"scale": 2}, {}, _write_values)
    assert stage_cache_key(context, params) not in (None, first)  # a rewritten folder is a new key

    with pytest.raises(ValueError, match=r"task parameters lack \['store_root'\]"):
        stage_cache_key(context, {"config": {}, "inputs": {}})


def test_run_stage_computes_once_and_records_metadata(store: ArtifactStore) -> None:
    calls: list[Path] = []

    def compute(folder: Path) -> dict:
        calls.append(folder)
        (folder / "meta.json").write_text('{"written": 1}')
        (folder / "out.txt").write_text("42")
        return {"returned": 2}

    ref = run_stage(store, "answer", {"q": "life"}, {"up": "k0"}, compute)
    key = artifact_key("answer", {"q": "life"}, {"up": "k0"})
    usage = ref.pop("usage")
    assert ref == {"stage": "answer", "key": key, "path": str(store.root / "answer" / key), "cached": False}
    assert set(usage) == {"wall_s", "peak_rss_mb"} and usage["wall_s"] >= 0 and usage["peak_rss_mb"] > 10
    assert store.open("answer", key).metadata == {"written": 1, "returned": 2, "usage": usage}
    again = run_stage(store, "answer", {"q": "life"}, {"up": "k0"}, compute)
    assert again == {**ref, "cached": True} and len(calls) == 1


def test_run_stage_publishes_nothing_when_compute_fails(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="compute returned list; return a mapping"):
        run_stage(store, "answer", {}, {}, lambda folder: [1])
    with pytest.raises(ZeroDivisionError):
        run_stage(store, "answer", {}, {}, lambda folder: 1 / 0)
    assert list((store.root / "answer").iterdir()) == []


def test_stage_task_sets_the_shared_options() -> None:
    assert toy_source.name == "toy_source"
    assert toy_source.cache_key_fn is stage_cache_key
    assert toy_source.persist_result is True and toy_source.refresh_cache is False
    assert toy_source.result_serializer == "json"
    assert toy_flaky.retries == 2 and toy_flaky.retry_delay_seconds == 0
    assert toy_flaky.retry_condition_fn is retry_on_transient_errors
    assert stage_task("tagged", tags=["gpu"])(toy_source.fn).tags == {"gpu"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stage": "a b"}, "stage 'a b' is not a valid name"),
        ({"stage": "s", "retries": -1}, "retries must be an int >= 0"),
        ({"stage": "s", "retry_delay_seconds": -2.0}, "retry_delay_seconds must be a number >= 0"),
        ({"stage": "s", "cache_policy": None}, r"\['cache_policy'\] are set by stage_task"),
    ],
)
def test_stage_task_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stage_task(**kwargs)


def test_stage_task_requires_the_stage_signature() -> None:
    def bad(config, inputs):
        return {}

    with pytest.raises(TypeError, match=r"lacks parameters \['store_root'\]"):
        stage_task("bad")(bad)


# --- flows against the session's Prefect server --------------------------------------------------

def test_chained_stages_cache_and_recompute(prefect_harness: Path, tmp_path: Path) -> None:
    root, log = str(tmp_path / "artifacts"), tmp_path / "computed.log"

    def run(scale: int, offset: int) -> dict:
        return toy_pipeline({"scale": scale}, {"offset": offset}, root, str(log))

    first = run(2, 0)
    assert _counts(log) == {"toy_source": 1, "toy_sum": 1}
    assert first["states"] == ("Completed", "Completed") and not first["sum"]["cached"]
    assert Path(first["sum"]["path"], "sum.txt").read_text() == "12"

    second = run(2, 0)  # artifacts found by the store; nothing recomputed
    assert _counts(log) == {"toy_source": 1, "toy_sum": 1}
    assert second["source"]["cached"] and second["sum"]["cached"]
    third = run(2, 0)  # now Prefect's own cache skips the bodies
    assert third["states"] == ("Cached", "Cached")
    assert (third["source"]["key"], third["sum"]["key"]) == (first["source"]["key"], first["sum"]["key"])

    changed = run(2, 5)  # a new config for the second stage recomputes only that stage
    assert _counts(log) == {"toy_source": 1, "toy_sum": 2}
    assert changed["sum"]["key"] != first["sum"]["key"]
    assert Path(changed["sum"]["path"], "sum.txt").read_text() == "17"

    shutil.rmtree(first["source"]["path"])  # a deleted artifact is recomputed despite Prefect's cache
    rebuilt = run(2, 5)
    assert _counts(log) == {"toy_source": 2, "toy_sum": 2}
    assert rebuilt["states"][0] == "Completed" and Path(rebuilt["source"]["path"], "values.txt").exists()
    assert rebuilt["sum"]["key"] == changed["sum"]["key"]


def test_results_can_live_beside_the_artifacts(prefect_harness: Path, tmp_path: Path) -> None:
    root, log = str(tmp_path / "artifacts"), str(tmp_path / "computed.log")
    assert results_folder(root) == str(Path(root).resolve() / ".prefect-results")
    local = toy_source.with_options(result_storage=Path(results_folder(root)))

    @flow
    def once() -> str:
        return local({"scale": 3}, {}, root, log, return_state=True).name

    assert [once(), once(), once()] == ["Completed", "Completed", "Cached"]
    records = [p.name for p in Path(results_folder(root)).iterdir()]
    assert len(records) == 1 and records[0].startswith("toy_source-")


def test_chained_stages_on_a_remote_store(prefect_harness: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A memory:// store_root; a second STEGO_HOME (an empty mirror) plays the other machine."""
    root, log = f"memory://stego-{uuid.uuid4().hex}", tmp_path / "computed.log"
    monkeypatch.setenv("STEGO_HOME", str(tmp_path / "machine-a"))
    first = toy_pipeline({"scale": 2}, {"offset": 1}, root, str(log))
    assert _counts(log) == {"toy_source": 1, "toy_sum": 1} and not first["sum"]["cached"]
    assert first["states"] == ("Completed", "Completed")
    assert Path(first["sum"]["path"]).is_relative_to(tmp_path / "machine-a")

    monkeypatch.setenv("STEGO_HOME", str(tmp_path / "machine-b"))
    second = toy_pipeline({"scale": 2}, {"offset": 1}, root, str(log))
    assert _counts(log) == {"toy_source": 1, "toy_sum": 1}  # downloaded, not recomputed
    assert second["source"]["cached"] and second["sum"]["cached"]
    assert Path(second["sum"]["path"]).is_relative_to(tmp_path / "machine-b")
    assert Path(second["sum"]["path"], "sum.txt").read_text() == "13"
    assert toy_pipeline({"scale": 2}, {"offset": 1}, root, str(log))["states"] == ("Cached", "Cached")

    fs, folder = fsspec.core.url_to_fs(f"{root}/toy_sum")  # deleting the remote copy: the body runs again
    fs.rm(folder, recursive=True)
    fourth = toy_pipeline({"scale": 2}, {"offset": 1}, root, str(log))
    assert fourth["states"] == ("Cached", "Completed") and fourth["sum"]["cached"]  # healed from the mirror
    assert _counts(log) == {"toy_source": 1, "toy_sum": 1}
    assert RemoteArtifactStore(root).fingerprint("toy_sum", fourth["sum"]["key"]) is not None


def test_transient_error_is_retried(prefect_harness: Path, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    assert flaky_flow("OSError", str(tmp_path / "artifacts"), str(log)) == {"attempt": 2}
    assert _counts(log) == {"toy_flaky": 2}


@pytest.mark.parametrize("error", ["ValueError", "RuntimeError"])
def test_bad_input_or_maths_error_is_not_retried(prefect_harness: Path, tmp_path: Path, error: str) -> None:
    log = tmp_path / "attempts.log"
    with pytest.raises((ValueError, RuntimeError), match="attempt 1 failed"):
        flaky_flow(error, str(tmp_path / "artifacts"), str(log))
    assert _counts(log) == {"toy_flaky": 1}
