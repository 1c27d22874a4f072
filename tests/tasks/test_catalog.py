"""Artifact catalog: key stability, atomic publication, checksum verification, concurrent writers."""

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
        {"code_version": "stego-0.2"},
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
