"""Artifact catalog: key stability, atomic publication, checksum verification, verified stamps,
verify_all, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

import tasks.catalog
from tasks.catalog import CODE_VERSION, ArtifactStore, artifact_key

REPO_ROOT = Path(__file__).resolve().parents[2]


class CropConfig(BaseModel):
    size: int = 224
    crop_type: str = "five"
    ratio: float = 0.5
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    out: Path = Path("crops/a")


def _python(code: str, *args: str, hash_seed: str = "0") -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _publish(store: ArtifactStore, stage: str, key: str, files: dict[str, bytes], **kw) -> Path:
    with store.create(stage, key, **kw) as folder:
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    return store.location(stage, key)


def _leftovers(store: ArtifactStore, stage: str) -> list[str]:
    return [p.name for p in (store.root / stage).iterdir() if p.name.startswith(".")]


# --- artifact_key --------------------------------------------------------------------------------

def test_key_is_hex_prefix_of_sha256_over_canonical_json() -> None:
    config = {"b": [1, 2.5], "a": "x"}
    canonical = json.dumps(
        {"stage": "crop", "config": config, "inputs": {"img": "k1"}, "code_version": CODE_VERSION},
        sort_keys=True, separators=(",", ":"),
    )
    key = artifact_key("crop", config, {"img": "k1"})
    assert key == hashlib.sha256(canonical.encode()).hexdigest()[:20]
    assert artifact_key("crop", {"a": "x", "b": [1, 2.5]}, {"img": "k1"}) == key  # order-free


def test_key_is_stable_across_processes() -> None:
    config = CropConfig(size=320, out=Path("/data/x"))
    inputs = {"images": "0123abcd", "labels": "ffff0000"}
    here = artifact_key("crop", config, inputs)
    code = """
        import sys; from pathlib import Path; from pydantic import BaseModel
        from tasks.catalog import artifact_key
        class CropConfig(BaseModel):
            size: int = 224
            crop_type: str = "five"
            ratio: float = 0.5
            mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
            out: Path = Path("crops/a")
        cfg = CropConfig(size=320, out=Path("/data/x"))
        print(artifact_key("crop", cfg, {"labels": "ffff0000", "images": "0123abcd"}))
    """
    outputs = [_python(code, hash_seed=seed).communicate(timeout=60) for seed in ("1", "987")]
    assert [out.strip() for out, _ in outputs] == [here, here], outputs
    # a model and its JSON dump name the same artifact
    assert artifact_key("crop", config.model_dump(mode="json"), inputs) == here


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "crop2"},
        {"config": {"size": 225, "mode": "five"}},
        {"config": {"size": 224.0, "mode": "five"}},
        {"inputs": {"images": "k2"}},
        {"inputs": {"pictures": "k1"}},
        {"inputs": {"images": "k1", "labels": "k3"}},
        {"code_version": "stego-99"},
    ],
)
def test_key_changes_with_every_component(change: dict) -> None:
    base = {"stage": "crop", "config": {"size": 224, "mode": "five"}, "inputs": {"images": "k1"},
            "code_version": CODE_VERSION}
    assert artifact_key(**{**base, **change}) != artifact_key(**base)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("a/b", {}, {}), "stage 'a/b' is not a valid name"),
        ((".hidden", {}, {}), "stage '.hidden' is not a valid name"),
        (("crop", [1, 2], {}), "config must be a pydantic model or a mapping, got list"),
        (("crop", {}, ["k"]), "inputs must be a mapping"),
        (("crop", {}, {"img": 3}), r"inputs\['img'\] = 3: names and artifact keys must both be str"),
        (("crop", {"lr": float("nan")}, {}), "cannot be written as canonical JSON"),
        (("crop", {"w": object()}, {}), "object is not JSON-serialisable"),
        (("crop", {}, {}, ""), "code_version must be a non-empty str"),
    ],
)
def test_key_validation(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        artifact_key(*args)


# --- ArtifactStore -------------------------------------------------------------------------------

def test_root_accepts_paths_and_file_urls_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ArtifactStore(tmp_path).root == ArtifactStore(tmp_path.as_uri()).root == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert ArtifactStore("rel").root == tmp_path.resolve() / "rel"
    assert ArtifactStore(tmp_path).url == tmp_path.resolve().as_uri()
    with pytest.raises(ValueError, match="protocol 's3', but ArtifactStore is local-only.*open_store"):
        ArtifactStore("s3://bucket/artifacts")
    with pytest.raises(ValueError, match="names a host"):
        ArtifactStore("file://server/share")
    with pytest.raises(ValueError, match="root must be a non-empty path"):
        ArtifactStore("")


def test_create_publishes_folder_with_manifest(store: ArtifactStore) -> None:
    config = CropConfig()
    key = artifact_key("crop", config, {"images": "k1"})
    files = {"a.bin": b"\x00\x01" * 1000, "sub/b.txt": b"hello", "meta.json": b'{"n_crops": 7}'}
    path = _publish(store, "crop", key, files, config=config, inputs={"images": "k1"})

    artifact = store.open("crop", key)
    assert artifact.path == path == store.root / "crop" / key
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest == artifact.manifest
    assert manifest["files"] == {
        rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for rel, data in files.items()
    }
    assert (manifest["stage"], manifest["key"], manifest["code_version"]) == ("crop", key, CODE_VERSION)
    assert manifest["config"] == config.model_dump(mode="json")
    assert manifest["inputs"] == {"images": "k1"}
    assert artifact.metadata == {"n_crops": 7}
    assert _leftovers(store, "crop") == []


def test_exception_inside_create_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="stage failed"):
        with store.create("crop", "k1") as folder:
            (folder / "half.bin").write_bytes(b"123")
            raise RuntimeError("stage failed")
    assert store.get("crop", "k1") is None
    assert list((store.root / "crop").iterdir()) == []


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda f: (f / "manifest.json").write_text("{}"), "wrote manifest.json, which the store owns"),
        (lambda f: (f / "meta.json").write_text("[1, 2]"), "meta.json must hold a JSON object, not list"),
        (lambda f: (f / "meta.json").write_text("{nope"), "meta.json is not valid JSON"),
        (lambda f: (f / "link").symlink_to(f.parent), "are links or special files"),
    ],
)
def test_create_rejects_bad_contents(store: ArtifactStore, write, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        with store.create("crop", "k1") as folder:
            write(folder)
    assert list((store.root / "crop").iterdir()) == []


def test_bad_names_are_rejected(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match=r"key '\.\./x' is not a valid name"):
        store.location("crop", "../x")
    with pytest.raises(ValueError, match="stage '' is not a valid name"):
        store.get("", "k1")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "a.bin").write_bytes(b"\x07" * 10), "has 10 bytes, manifest says 4000"),
        (lambda p: (p / "a.bin").write_bytes(b"\x07" * 4000), "does not match its sha256"),
        (lambda p: (p / "sub" / "b.txt").unlink(), "file 'sub/b.txt' is missing"),
        (lambda p: (p / "extra.txt").write_text("x"), "files not in the manifest: \\['extra.txt'\\]"),
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{"), "manifest.json is unreadable"),
    ],
)
def test_damaged_artifact_is_never_used(store: ArtifactStore, caplog, damage, reason: str) -> None:
    path = _publish(store, "crop", "k1", {"a.bin": b"\x01" * 4000, "sub/b.txt": b"hello"})
    assert store.get("crop", "k1") is not None
    damage(path)
    with caplog.at_level("WARNING", logger="tasks.catalog"):
        assert store.get("crop", "k1") is None
    assert "it is recomputed" in caplog.text and reason.replace("\\", "") in caplog.text
    with pytest.raises(FileNotFoundError, match=f"is invalid \\(.*{reason}.*delete the folder and rerun"):
        store.open("crop", "k1")
    # recreating the same key replaces the damaged folder
    _publish(store, "crop", "k1", {"a.bin": b"\x02" * 4000, "sub/b.txt": b"hello"})
    assert (store.open("crop", "k1").path / "a.bin").read_bytes() == b"\x02" * 4000
    assert _leftovers(store, "crop") == []


def test_receive_publishes_a_verified_copy_only(store: ArtifactStore, tmp_path: Path) -> None:
    source = ArtifactStore(tmp_path / "elsewhere")
    original = _publish(source, "crop", "k1", {"a.bin": b"\x01" * 300, "sub/b.txt": b"hello"})

    def copy(damage: bool):
        def fill(folder: Path) -> None:
            shutil.copytree(original, folder, dirs_exist_ok=True)
            if damage:
                (folder / "a.bin").write_bytes(b"\x01" * 299)
        return fill

    with pytest.raises(ValueError, match="copy of artifact crop/k1 is invalid .*'a.bin' has 299 bytes"):
        store.receive("crop", "k1", copy(damage=True))
    assert store.get("crop", "k1") is None and _leftovers(store, "crop") == []
    received = store.receive("crop", "k1", copy(damage=False))
    assert received.path == store.location("crop", "k1") and _leftovers(store, "crop") == []
    assert received.manifest == store.open("crop", "k1").manifest == source.open("crop", "k1").manifest
    assert (received.path / "sub" / "b.txt").read_bytes() == b"hello"


def test_open_missing_artifact_says_what_to_run(store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError, match="no artifact crop/k1 under .*run the 'crop' stage first"):
        store.open("crop", "k1")


def test_fingerprint_tracks_folder_identity(store: ArtifactStore) -> None:
    assert store.fingerprint("crop", "k1") is None
    path = _publish(store, "crop", "k1", {"a.bin": b"\x01" * 100})
    first = store.fingerprint("crop", "k1")
    assert first is not None and first == store.fingerprint("crop", "k1")
    stat = (path / "a.bin").stat()
    (path / "a.bin").write_bytes(b"\x02" * 100)  # same size, new content and mtime
    os.utime(path / "a.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert store.fingerprint("crop", "k1") not in (None, first)
    (path / "a.bin").write_bytes(b"\x02" * 10)
    assert store.fingerprint("crop", "k1") is None


# --- verified stamps: hash at publication and on change, not on every open ------------------------

TWO_FILES = {"a.bin": b"\x01" * 4000, "sub/b.txt": b"hello"}


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the store hashes from now on (a counting wrapper around the real
    ``file_sha256``, which still does the work)."""
    calls: list[str] = []
    real = tasks.catalog.file_sha256

    def counting(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(tasks.catalog, "file_sha256", counting)
    return calls


def _stamp(store: ArtifactStore, stage: str, key: str) -> Path:
    return store.root / ".verified" / stage / f"{key}.json"


def _flip_byte_keep_stat(path: Path) -> None:
    """Edit one byte in place and restore the mtime: the one change a stamp cannot see."""
    info = path.stat()
    with open(path, "r+b") as handle:
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (info.st_size, info.st_mtime_ns)


def _touch_later(path: Path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))


def test_publication_hashes_once_and_later_opens_trust_the_stamp(store: ArtifactStore, hashed: list[str]) -> None:
    path = _publish(store, "crop", "k1", TWO_FILES)
    assert sorted(hashed) == ["a.bin", "b.txt"]  # for the manifest, once
    stamp = json.loads(_stamp(store, "crop", "k1").read_text())
    assert stamp["manifest_sha256"] == hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    info = (path / "a.bin").stat()
    assert stamp["files"]["a.bin"] == {"size": 4000, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino}
    assert os.listdir(_stamp(store, "crop", "k1").parent) == ["k1.json"]  # no temp files left
    assert not (path / ".verified").exists()  # the stamp lives outside the artifact

    hashed.clear()
    assert store.get("crop", "k1") is not None and store.open("crop", "k1").path == path
    assert hashed == []

    # a same-size, same-mtime edit is trusted by get (that is the cost of not re-hashing)...
    _flip_byte_keep_stat(path / "a.bin")
    assert store.get("crop", "k1") is not None and hashed == []
    # ...and caught by verify_all, which ignores stamps and drops the corrupt one's stamp
    [check] = store.verify_all()
    assert (check.stage, check.key, check.path, check.ok, check.removed) == ("crop", "k1", path, False, False)
    assert "'a.bin' does not match its sha256" in check.reason and check.bytes_hashed > 0
    assert not _stamp(store, "crop", "k1").exists()
    assert store.get("crop", "k1") is None  # so the next open re-hashes, rejects it and it is recomputed
    assert path.exists()  # without fix the folder stays (a rerun replaces it)


def test_a_new_mtime_means_a_full_rehash_that_refreshes_the_stamp(store: ArtifactStore, hashed: list[str]) -> None:
    path = _publish(store, "crop", "k1", TWO_FILES)
    before = _stamp(store, "crop", "k1").read_text()
    _touch_later(path / "sub" / "b.txt")
    hashed.clear()
    assert store.get("crop", "k1") is not None
    assert sorted(hashed) == ["a.bin", "b.txt"]  # every file: the stamp no longer vouches for the folder
    assert _stamp(store, "crop", "k1").read_text() != before
    hashed.clear()
    assert store.open("crop", "k1").path == path and hashed == []


def test_new_content_and_mtime_is_caught_as_before(store: ArtifactStore, hashed: list[str], caplog) -> None:
    path = _publish(store, "crop", "k1", TWO_FILES)
    (path / "a.bin").write_bytes(b"\x07" * 4000)  # same size, new bytes, new mtime
    _touch_later(path / "a.bin")
    with caplog.at_level("WARNING", logger="tasks.catalog"):
        assert store.get("crop", "k1") is None
    assert "'a.bin' does not match its sha256" in caplog.text and "it is recomputed" in caplog.text
    assert not _stamp(store, "crop", "k1").exists()
    with pytest.raises(FileNotFoundError, match="does not match its sha256.*delete the folder and rerun"):
        store.open("crop", "k1")
    # republishing replaces the folder, and the new folder is stamped
    _publish(store, "crop", "k1", {**TWO_FILES, "a.bin": b"\x02" * 4000})
    hashed.clear()
    assert (store.open("crop", "k1").path / "a.bin").read_bytes() == b"\x02" * 4000 and hashed == []
    assert _leftovers(store, "crop") == []


@pytest.mark.parametrize(
    "lose_trust",
    [
        lambda store, path: _stamp(store, "crop", "k1").unlink(),
        lambda store, path: _stamp(store, "crop", "k1").write_text("{torn"),
        lambda store, path: _stamp(store, "crop", "k1").write_text('{"files": {}}'),
        # the same bytes and mtime in a new file (a copy put in place): a new inode
        lambda store, path: (shutil.copy2(path / "a.bin", path / "a.new"), os.replace(path / "a.new", path / "a.bin")),
    ],
    ids=["deleted", "torn", "foreign", "new-inode"],
)
def test_without_a_matching_stamp_the_artifact_is_verified_in_full(
    store: ArtifactStore, hashed: list[str], lose_trust
) -> None:
    path = _publish(store, "crop", "k1", TWO_FILES)
    lose_trust(store, path)
    hashed.clear()
    assert store.get("crop", "k1") is not None
    assert sorted(hashed) == ["a.bin", "b.txt"]
    hashed.clear()
    assert store.get("crop", "k1") is not None and hashed == []  # stamped again


def test_the_file_list_and_sizes_are_checked_even_with_a_stamp(store: ArtifactStore, hashed: list[str]) -> None:
    path = _publish(store, "crop", "k1", TWO_FILES)
    hashed.clear()
    (path / "extra.txt").write_text("x")
    assert store.get("crop", "k1") is None and hashed == []  # an unlisted file needs no hashing
    (path / "extra.txt").unlink()
    assert store.get("crop", "k1") is not None and sorted(hashed) == ["a.bin", "b.txt"]  # its stamp was dropped
    hashed.clear()
    with open(path / "a.bin", "r+b") as handle:
        handle.truncate(10)
    assert store.get("crop", "k1") is None and hashed == []  # nor does a size mismatch


def test_a_received_copy_is_hashed_in_full_then_stamped(store: ArtifactStore, tmp_path: Path, hashed: list[str]) -> None:
    original = _publish(ArtifactStore(tmp_path / "elsewhere"), "crop", "k1", TWO_FILES)
    _touch_later(original / "a.bin")  # what the source's stamp says does not matter to the copy
    hashed.clear()
    store.receive("crop", "k1", lambda folder: shutil.copytree(original, folder, dirs_exist_ok=True))
    assert sorted(hashed) == ["a.bin", "b.txt"]
    hashed.clear()
    assert store.open("crop", "k1") is not None and hashed == []


def test_a_stamp_that_cannot_be_written_is_not_fatal(store: ArtifactStore, hashed: list[str], caplog) -> None:
    store.root.mkdir(parents=True)
    (store.root / ".verified").write_text("a file where the stamps folder should be")
    with caplog.at_level("WARNING", logger="tasks.catalog"):
        path = _publish(store, "crop", "k1", TWO_FILES)
    assert "could not write the verified stamp" in caplog.text and "re-hashes its files" in caplog.text
    hashed.clear()
    assert store.open("crop", "k1").path == path
    assert sorted(hashed) == ["a.bin", "b.txt"]  # no stamp: every open verifies in full, as before


# --- verify_all ----------------------------------------------------------------------------------

def _three_artifacts(store: ArtifactStore) -> None:
    _publish(store, "crop", "k1", TWO_FILES)
    _publish(store, "crop", "k2", {"c.bin": b"\x03" * 100})
    _publish(store, "knn", "k3", {"nn.bin": b"\x04" * 100})


def test_verify_all_rehashes_everything_and_skips_hidden_folders(store: ArtifactStore, hashed: list[str]) -> None:
    _three_artifacts(store)
    for hidden in (".checkpoints/crop/k1", ".prefect-results/x", ".scratch-1", "crop/.tmp-k9-abc", "crop/.trash-k8-def"):
        (store.root / hidden).mkdir(parents=True)
        (store.root / hidden / "junk.bin").write_bytes(b"junk")
    (store.root / "README").write_text("a stray file")
    hashed.clear()
    report = store.verify_all()
    assert [(c.stage, c.key, c.ok) for c in report] == [("crop", "k1", True), ("crop", "k2", True), ("knn", "k3", True)]
    assert sorted(hashed) == ["a.bin", "b.txt", "c.bin", "nn.bin"]  # stamps ignored
    assert sum(c.bytes_hashed for c in report) == 4000 + 5 + 100 + 100
    assert [e.key for e in store.artifacts()] == ["k1", "k2", "k3"]
    assert [(e.stage, e.size) for e in store.artifacts("crop")] == [("crop", 4005), ("crop", 100)]


def test_verify_all_with_fix_removes_corrupt_artifacts_and_their_stamps(store: ArtifactStore) -> None:
    _three_artifacts(store)
    _flip_byte_keep_stat(store.location("crop", "k2") / "c.bin")
    (store.location("knn", "k3") / "manifest.json").unlink()  # an interrupted foreign write
    report = store.verify_all(fix=True)
    assert [(c.key, c.ok, c.removed) for c in report] == [("k1", True, False), ("k2", False, True), ("k3", False, True)]
    assert "manifest.json is missing" in report[2].reason
    assert not store.location("crop", "k2").exists() and not _stamp(store, "crop", "k2").exists()
    assert store.get("crop", "k2") is None and store.get("knn", "k3") is None
    assert store.get("crop", "k1") is not None and _leftovers(store, "crop") == []
    assert [(c.key, c.ok) for c in store.verify_all()] == [("k1", True)]


def test_verify_all_filters_by_stage(store: ArtifactStore) -> None:
    _three_artifacts(store)
    _flip_byte_keep_stat(store.location("crop", "k1") / "a.bin")
    assert [(c.key, c.ok) for c in store.verify_all("knn")] == [("k3", True)]
    assert [(c.key, c.ok) for c in store.verify_all("crop")] == [("k1", False), ("k2", True)]
    with pytest.raises(ValueError, match="no stage 'nope' under .*; stages there: crop, knn"):
        store.verify_all("nope")
    with pytest.raises(ValueError, match=r"stage '\.verified' is not a valid name"):
        store.verify_all(".verified")
    with pytest.raises(FileNotFoundError, match="no artifact store at .*nothing was published there"):
        ArtifactStore(store.root / "missing").verify_all()
    with pytest.raises(FileNotFoundError, match="no artifact crop/k9 under"):
        store.verify("crop", "k9")


WRITER = """
    import sys, time
    from pathlib import Path
    from tasks.catalog import ArtifactStore
    root, name = sys.argv[1], sys.argv[2]
    store = ArtifactStore(root)
    with store.create("embed", "k1", config={"writer": name}) as folder:
        (folder / "feats.bin").write_bytes(name.encode() * 50_000)
        (Path(root) / f"ready-{name}").touch()
        deadline = time.monotonic() + 30
        while len(list(Path(root).glob("ready-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    print(store.open("embed", "k1").manifest["config"]["writer"])
"""


def test_concurrent_writers_end_with_one_valid_artifact(store: ArtifactStore) -> None:
    store.root.mkdir(parents=True)
    procs = [_python(WRITER, str(store.root), name) for name in ("A", "B")]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    winner = store.open("embed", "k1")
    assert winner.manifest["config"]["writer"] in ("A", "B")
    assert {out.strip() for out, _ in results} == {winner.manifest["config"]["writer"]}
    assert (winner.path / "feats.bin").read_bytes() == winner.manifest["config"]["writer"].encode() * 50_000
    assert _leftovers(store, "embed") == []
