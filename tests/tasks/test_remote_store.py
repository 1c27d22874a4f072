"""Remote artifact store: fsspec round trips, the manifest as commit marker, corrupt copies, healing.

The remote is fsspec's in-process ``memory://`` filesystem (a fresh folder per test: it is
process-global) or a ``file://`` folder; a store with another ``cache_dir`` plays another machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import fsspec.core
import pytest

import tasks.catalog
from tasks.catalog import ArtifactStore, artifact_key
from tasks.prefect_stage import results_folder, run_stage
from tasks.remote_store import RemoteArtifactStore, open_store

FILES = {"feats.bin": b"\x01\x02" * 5000, "sub/names.txt": b"road sky", "meta.json": b'{"n": 3}'}


@pytest.fixture(params=["memory", "file"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://stego-{uuid.uuid4().hex}/artifacts"
    return (tmp_path / "remote").as_uri()


def _machine(url: str, tmp_path: Path, name: str) -> RemoteArtifactStore:
    return RemoteArtifactStore(url, cache_dir=tmp_path / f"mirror-{name}")


def _remote(url: str, *parts: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs("/".join([url, *parts]))


def _write(store, stage: str, key: str, files: dict[str, bytes], **kw) -> None:
    with store.create(stage, key, **kw) as folder:
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)


def _contents(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_open_store_picks_the_store_by_protocol(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), ArtifactStore)
    assert isinstance(open_store(str(tmp_path)), ArtifactStore)
    assert open_store(tmp_path.as_uri()).root == tmp_path.resolve()
    remote = open_store("memory://stego-x/arts/")
    assert isinstance(remote, RemoteArtifactStore) and remote.url == "memory:///stego-x/arts"
    assert results_folder(str(tmp_path)) == str(tmp_path.resolve() / ".prefect-results")
    assert results_folder("memory://stego-x/arts/") == "memory:///stego-x/arts/.prefect-results"


def test_mirror_defaults_to_stego_home_per_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEGO_HOME", str(tmp_path))
    a, b = RemoteArtifactStore("memory://stego-a"), RemoteArtifactStore("memory://stego-b")
    assert a.root.parent == tmp_path.resolve() / "remote-cache" and a.root != b.root
    assert RemoteArtifactStore("memory:///stego-a/").root == a.root  # same URL, same mirror


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("/not/a/url", "must be an fsspec URL"),
        ("nosuchproto://bucket/x", "cannot open 'nosuchproto://bucket/x'.*install its fsspec package"),
        ("memory://", "names no folder"),
    ],
)
def test_bad_urls_are_explained(url: str, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        RemoteArtifactStore(url, cache_dir=tmp_path)


def test_another_machine_gets_the_identical_files(url: str, tmp_path: Path) -> None:
    key = artifact_key("embed", {"size": 224}, {"crop": "k0"})
    first = _machine(url, tmp_path, "a")
    _write(first, "embed", key, FILES, config={"size": 224}, inputs={"crop": "k0"})
    fs, folder = _remote(url, "embed", key)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(folder)) == ["feats.bin", "manifest.json", "meta.json", "names.txt"]

    second = _machine(url, tmp_path, "b")
    assert second.location("embed", key) == tmp_path.resolve() / "mirror-b" / "embed" / key
    assert not second.location("embed", key).exists()
    found = second.open("embed", key)
    assert found.path == second.location("embed", key)
    assert _contents(found.path) == _contents(first.open("embed", key).path)
    assert found.manifest == first.open("embed", key).manifest
    assert found.metadata == {"n": 3} and found.manifest["inputs"] == {"crop": "k0"}
    assert [p.name for p in (second.root / "embed").iterdir()] == [key]  # no temp folders left


def test_manifest_is_uploaded_last_and_marks_the_artifact(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _machine(url, tmp_path, "a")
    uploads: list[str] = []
    fail_at: list[int] = []  # the upload number that dies, if any
    put_file = store.fs.put_file

    def recording_put_file(lpath, rpath, **kw):
        uploads.append(rpath.rsplit("/", 1)[-1])
        if len(uploads) in fail_at:
            raise ConnectionError("network dropped mid-upload")
        return put_file(lpath, rpath, **kw)

    monkeypatch.setattr(store.fs, "put_file", recording_put_file)  # a spy: it still uploads
    _write(store, "crop", "k1", {"a.bin": b"a" * 100, "z.bin": b"z" * 100})
    assert uploads == ["a.bin", "z.bin", "manifest.json"]

    fail_at.append(5)  # the next upload dies after its first file
    with pytest.raises(ConnectionError):
        _write(store, "crop", "k2", {"a.bin": b"a" * 100, "z.bin": b"z" * 100})
    fail_at.clear()
    fs, folder = _remote(url, "crop", "k2")
    assert fs.exists(f"{folder}/a.bin") and not fs.exists(f"{folder}/manifest.json")
    other = _machine(url, tmp_path, "b")
    assert other.get("crop", "k2") is None and other.fingerprint("crop", "k2") is None
    with pytest.raises(FileNotFoundError, match=f"no valid artifact crop/k2 at {re.escape(other.url)}/crop/k2 .*run the 'crop' stage first"):
        other.open("crop", "k2")
    # the writer still holds a valid mirror copy: its next get uploads it (heal)
    assert store.get("crop", "k2") is not None
    assert _contents(other.open("crop", "k2").path) == _contents(store.location("crop", "k2"))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (b"\x01\x02" * 2000, "'feats.bin' has 4000 bytes, manifest says 10000"),
        (b"\x09\x02" + b"\x01\x02" * 4999, "'feats.bin' does not match its sha256"),
        (None, "a listed file is missing"),
    ],
)
def test_corrupt_remote_copy_is_recomputed_and_replaced(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: bytes | None, reason: str
) -> None:
    calls: list[str] = []

    def compute(folder: Path) -> None:
        calls.append(folder.name)
        (folder / "feats.bin").write_bytes(FILES["feats.bin"])

    run_stage(_machine(url, tmp_path, "a"), "embed", {"size": 8}, {}, compute)
    key = artifact_key("embed", {"size": 8}, {})
    fs, folder = _remote(url, "embed", key)
    if damage is None:
        fs.rm_file(f"{folder}/feats.bin")
    else:
        fs.pipe_file(f"{folder}/feats.bin", damage)

    machine_b = _machine(url, tmp_path, "b")
    with caplog.at_level("WARNING", logger="tasks.remote_store"):
        ref = run_stage(machine_b, "embed", {"size": 8}, {}, compute)
    assert "is invalid" in caplog.text and reason in caplog.text and "recomputed and replaced" in caplog.text
    assert len(calls) == 2 and not ref["cached"]  # the corrupt copy was not used
    assert fs.cat_file(f"{folder}/feats.bin") == FILES["feats.bin"]  # ...and was replaced
    fresh = _machine(url, tmp_path, "c").open("embed", key)
    assert fresh.manifest == machine_b.open("embed", key).manifest
    assert (fresh.path / "feats.bin").read_bytes() == FILES["feats.bin"]


def test_deleted_remote_copy_is_healed_from_the_mirror(url: str, tmp_path: Path, caplog) -> None:
    store = _machine(url, tmp_path, "a")
    _write(store, "knn", "k1", FILES)
    fs, folder = _remote(url, "knn", "k1")
    fs.rm(folder, recursive=True)
    assert store.fingerprint("knn", "k1") is None
    with caplog.at_level("WARNING", logger="tasks.remote_store"):
        assert store.get("knn", "k1").path == store.location("knn", "k1")
    assert "missing at" in caplog.text and "uploading the local mirror copy again" in caplog.text
    assert fs.exists(f"{folder}/manifest.json")
    assert _contents(_machine(url, tmp_path, "b").open("knn", "k1").path) == _contents(store.location("knn", "k1"))


def test_fingerprint_follows_the_remote_manifest(url: str, tmp_path: Path) -> None:
    store = _machine(url, tmp_path, "a")
    assert store.fingerprint("crop", "k1") is None
    _write(store, "crop", "k1", {"a.bin": b"a"})
    first = store.fingerprint("crop", "k1")
    assert first is not None and _machine(url, tmp_path, "b").fingerprint("crop", "k1") == first
    fs, folder = _remote(url, "crop", "k1")
    assert first == hashlib.sha256(fs.cat_file(f"{folder}/manifest.json")).hexdigest()[:16]

    fs.rm_file(f"{folder}/manifest.json")  # rewritten by another writer: a new manifest, a new fingerprint
    _write(_machine(url, tmp_path, "c"), "crop", "k1", {"a.bin": b"a"})
    assert store.fingerprint("crop", "k1") not in (None, first)
    fs.pipe_file(f"{folder}/manifest.json", b"{")
    assert store.fingerprint("crop", "k1") is None
    fs.rm_file(f"{folder}/manifest.json")
    assert store.fingerprint("crop", "k1") is None


def test_second_writer_keeps_the_valid_remote_copy(url: str, tmp_path: Path) -> None:
    first, second = _machine(url, tmp_path, "a"), _machine(url, tmp_path, "b")
    _write(first, "cluster", "k1", {"centroids.bin": b"A" * 64}, config={"writer": "A"})
    before = first.fingerprint("cluster", "k1")
    # B computed the same key at the same time (without seeing A's copy) and finishes second
    _write(second, "cluster", "k1", {"centroids.bin": b"B" * 64}, config={"writer": "B"})
    assert second.fingerprint("cluster", "k1") == before
    fresh = _machine(url, tmp_path, "c").open("cluster", "k1")
    assert fresh.manifest["config"] == {"writer": "A"} and (fresh.path / "centroids.bin").read_bytes() == b"A" * 64
    assert second.open("cluster", "k1").manifest["config"] == {"writer": "B"}  # B's own mirror copy is valid too


def test_writer_replaces_a_remote_copy_with_missing_or_short_files(url: str, tmp_path: Path) -> None:
    _write(_machine(url, tmp_path, "a"), "cluster", "k1", {"c.bin": b"A" * 64, "d.bin": b"D" * 8}, config={"writer": "A"})
    fs, folder = _remote(url, "cluster", "k1")
    fs.rm_file(f"{folder}/d.bin")
    _write(_machine(url, tmp_path, "b"), "cluster", "k1", {"c.bin": b"B" * 64, "d.bin": b"D" * 8}, config={"writer": "B"})
    assert _machine(url, tmp_path, "c").open("cluster", "k1").manifest["config"] == {"writer": "B"}
    fs.pipe_file(f"{folder}/c.bin", b"B" * 63)
    _write(_machine(url, tmp_path, "d"), "cluster", "k1", {"c.bin": b"C" * 64, "d.bin": b"D" * 8}, config={"writer": "C"})
    assert _machine(url, tmp_path, "e").open("cluster", "k1").manifest["config"] == {"writer": "C"}


def test_run_stage_computes_once_across_machines(url: str, tmp_path: Path) -> None:
    calls: list[int] = []

    def compute(folder: Path) -> dict:
        calls.append(1)
        (folder / "out.txt").write_text("42")
        return {"answer": 42}

    ref = run_stage(_machine(url, tmp_path, "a"), "answer", {"q": 1}, {"up": "k0"}, compute)
    assert not ref["cached"] and len(calls) == 1
    machine_b = _machine(url, tmp_path, "b")
    again = run_stage(machine_b, "answer", {"q": 1}, {"up": "k0"}, compute)
    assert again["cached"] and len(calls) == 1 and again["key"] == ref["key"]
    assert again["path"] == str(machine_b.location("answer", ref["key"]))
    assert Path(again["path"], "out.txt").read_text() == "42"
    assert machine_b.open("answer", ref["key"]).metadata["answer"] == 42


def test_downloads_are_hashed_in_full_and_the_mirror_can_be_verified(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(_machine(url, tmp_path, "a"), "embed", "k1", FILES)
    hashed: list[str] = []
    real = tasks.catalog.file_sha256
    monkeypatch.setattr(tasks.catalog, "file_sha256", lambda path: hashed.append(Path(path).name) or real(path))

    machine_b = _machine(url, tmp_path, "b")
    path = machine_b.open("embed", "k1").path
    assert sorted(hashed) == ["feats.bin", "meta.json", "names.txt"]  # the download, in full
    hashed.clear()
    assert machine_b.open("embed", "k1").path == path and hashed == []  # the mirror copy's stamp

    info = (path / "feats.bin").stat()  # damage the mirror copy where a stamp cannot see it
    with open(path / "feats.bin", "r+b") as handle:
        handle.write(b"\xff")
    os.utime(path / "feats.bin", ns=(info.st_atime_ns, info.st_mtime_ns))
    assert [(c.stage, c.key, c.ok) for c in machine_b.verify_all()] == [("embed", "k1", False)]
    assert [e.key for e in machine_b.artifacts("embed")] == ["k1"]
    # its stamp is gone: the next open rejects the mirror copy and downloads the remote one again
    assert (machine_b.open("embed", "k1").path / "feats.bin").read_bytes() == FILES["feats.bin"]
    assert [(c.key, c.ok) for c in machine_b.verify_all("embed", fix=True)] == [("k1", True)]
