"""Content-addressed artifact store: where every stage writes its output, and how it is found again.

A stage's output is a folder ``<root>/<stage>/<key>`` whose name is :func:`artifact_key`::

    key = sha256(canonical_json({"stage", "config", "inputs", "code_version"}))[:20]

where ``config`` is the stage's pydantic config (``model_dump(mode="json")``) or a plain mapping,
and ``inputs`` maps each input role to the key of the upstream artifact it reads. A change
anywhere upstream therefore changes every key below it, and an unchanged rerun finds its folder.

Every folder holds ``manifest.json``::

    {"stage", "key", "config", "inputs", "code_version", "created",
     "files": {relpath: {"size": int, "sha256": hex}}, "metadata": <contents of meta.json or {}>}

Writers go through :meth:`ArtifactStore.create`, which fills a private temp folder and renames it
into place only after the manifest is written, so a reader sees a complete artifact or nothing.
Readers go through :meth:`ArtifactStore.get` / :meth:`ArtifactStore.open`: a truncated or edited
artifact is reported and recomputed, never used.

Checksums are read where damage can come in unseen, not on every open: at publication (the
manifest's sha256 are computed from the files then), on every received copy (a download from a
remote store), and the first time a reader finds a folder it has not verified. At the paper's scale
an embed artifact is 150-300 GB and is opened about 7 times a run, so re-hashing on each open would
read terabytes. After a full check the store writes a *verified stamp* outside the folder::

    <root>/.verified/<stage>/<key>.json  =  {"manifest_sha256", "files": {relpath: {"size", "mtime_ns", "ino"}}}

A later open on this machine still reads the manifest and lists and stats every file (a missing,
unlisted or resized file is caught at once), and skips reading the bytes only when the manifest and
every file's size, ``st_mtime_ns`` and inode match the stamp. Any difference (a rewritten file has a
new mtime, a replaced one a new inode, a deleted stamp) means a full re-hash, and a new stamp if it
passes. A stamp cannot see a change that keeps size, mtime and inode (bit rot, an edit that resets
the mtime): :meth:`ArtifactStore.verify_all` (``stego cache verify``) re-hashes everything,
ignoring stamps.

:class:`ArtifactStore` is local: ``root`` is a path or a ``file://`` URL. For any other fsspec URL
(``s3://bucket/prefix``, ``memory://x``) use :func:`tasks.remote_store.open_store`, which returns a
:class:`tasks.remote_store.RemoteArtifactStore` with the same interface: it keeps a verified local
mirror of what it reads and writes, published through :meth:`ArtifactStore.receive`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stego_core.digest import file_sha256

logger = logging.getLogger(__name__)

CODE_VERSION: str = "stego-0.2"
"""Part of every artifact key: bump it when a change to the code changes what a stage writes."""

MANIFEST_NAME = "manifest.json"
META_NAME = "meta.json"
STAMPS_DIRNAME = ".verified"
"""``<root>/.verified/<stage>/<key>.json``: the verified stamps (a dot name is never a stage)."""
KEY_HEX_CHARS = 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PUBLISH_ATTEMPTS = 3


def validate_name(value: object, field: str, where: str) -> str:
    """A stage name or key becomes a folder name: letters, digits, ``_ . -``, not starting with ``.``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(
            f"{where}: {field} {value!r} is not a valid name; use 1-128 letters, digits, '_', '.'"
            " or '-', starting with a letter or digit (it becomes a folder name)"
        )
    return value


def _jsonable_config(config: object, where: str) -> dict[str, Any]:
    """The config as plain JSON data: a pydantic model is dumped in JSON mode, a mapping is copied."""
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return {str(k): v for k, v in config.items()}
    raise ValueError(
        f"{where}: config must be a pydantic model or a mapping, got {type(config).__name__}"
    )


def _check_inputs(inputs: object, where: str) -> dict[str, str]:
    """``inputs`` maps an input role (str) to an upstream artifact key (str)."""
    if not isinstance(inputs, Mapping):
        raise ValueError(
            f"{where}: inputs must be a mapping of input name -> artifact key, got {type(inputs).__name__}"
        )
    for name, key in inputs.items():
        if not isinstance(name, str) or not isinstance(key, str):
            raise ValueError(
                f"{where}: inputs[{name!r}] = {key!r}: names and artifact keys must both be str;"
                " pass the upstream stage's key (ref['key']), not an array or a path object"
            )
    return dict(inputs)


def _json_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, os.PathLike):
        return Path(value).as_posix()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _canonical_json(payload: object, where: str) -> str:
    try:
        return json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
            allow_nan=False, default=_json_default,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}: config/inputs cannot be written as canonical JSON ({exc}); use plain numbers,"
            " strings, lists and dicts or a pydantic model (arrays and tensors do not hash stably)"
        ) from exc


def artifact_key(
    stage: str,
    config: Mapping[str, Any] | BaseModel,
    inputs: Mapping[str, str],
    code_version: str = CODE_VERSION,
) -> str:
    """Content address of a stage's output.

    ``sha256`` over the canonical JSON (sorted keys, no whitespace) of
    ``{"stage", "config", "inputs", "code_version"}``, first 20 hex characters. Stable across
    processes and machines (no ``hash()``, no pickles).

    Raises:
        ValueError: a bad stage name, a config that is neither a model nor a mapping, non-str
            inputs, a non-JSON value (NaN, arrays) or an empty ``code_version``.
    """
    where = "artifact_key"
    validate_name(stage, "stage", where)
    if not isinstance(code_version, str) or not code_version:
        raise ValueError(f"{where}: code_version must be a non-empty str, got {code_version!r}")
    payload = {
        "stage": stage,
        "config": _jsonable_config(config, where),
        "inputs": _check_inputs(inputs, where),
        "code_version": code_version,
    }
    digest = hashlib.sha256(_canonical_json(payload, where).encode("ascii")).hexdigest()
    return digest[:KEY_HEX_CHARS]


def _list_files(folder: Path) -> tuple[list[str], list[str]]:
    """(regular files, anything else) under ``folder`` as sorted posix relpaths."""
    regular, other = [], []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            other.append(rel)
        elif path.is_file():
            regular.append(rel)
    return regular, other


def _safe_relpath(rel: object) -> bool:
    """A manifest file name stays inside its folder: a relative posix path without ``..``."""
    return isinstance(rel, str) and bool(rel) and not Path(rel).is_absolute() and ".." not in Path(rel).parts


def _local_root(root: str | os.PathLike[str]) -> Path:
    text = os.fspath(root)
    if not isinstance(text, str) or not text:
        raise ValueError(f"ArtifactStore: root must be a non-empty path or file:// URL, got {root!r}")
    if "://" in text:
        parsed = urllib.parse.urlparse(text)
        if parsed.scheme != "file":
            raise ValueError(
                f"ArtifactStore: root {text!r} uses protocol '{parsed.scheme}', but ArtifactStore is"
                " local-only (a path or a file:// URL); open fsspec URLs with"
                " tasks.remote_store.open_store(root), which returns a RemoteArtifactStore"
            )
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"ArtifactStore: file URL {text!r} names a host; use file:///abs/path")
        text = urllib.parse.unquote(parsed.path)
    return Path(text).expanduser().resolve()


@dataclass(frozen=True)
class Artifact:
    """A published, checksum-verified artifact folder (``path = root / stage / key``)."""

    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        """What the writer put in ``meta.json`` (``{}`` when it wrote none)."""
        return self.manifest.get("metadata", {})


@dataclass(frozen=True)
class ArtifactEntry:
    """A published folder as its manifest describes it, read but not verified (for listings).

    ``size`` (the listed files' bytes) and ``created`` are None when the manifest is unreadable.
    """

    stage: str
    key: str
    path: Path
    size: int | None
    created: str | None


@dataclass(frozen=True)
class ArtifactCheck:
    """What re-hashing one artifact found (:meth:`ArtifactStore.verify`).

    ``reason`` is ``""`` when ``ok``; ``bytes_hashed`` counts the bytes read (a check stops at the
    first bad file); ``removed`` is true when ``fix`` deleted the corrupt folder.
    """

    stage: str
    key: str
    path: Path
    ok: bool
    reason: str
    bytes_hashed: int
    removed: bool = False


@dataclass
class _Checked:
    """The outcome of :meth:`ArtifactStore._check`: the manifest (None when invalid) and why not,
    plus what a stamp needs: the manifest bytes and each file's stat taken before it was hashed."""

    manifest: dict[str, Any] | None
    reason: str = ""
    raw: bytes = b""
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes_hashed: int = 0
    trusted: bool = False  # the stamp matched: no file was read


def _file_stat(path: Path) -> dict[str, int]:
    """What a stamp records of a file: it changes when the file is rewritten (mtime) or replaced (inode)."""
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino}


class ArtifactStore:
    """Artifact folders under one root: ``<root>/<stage>/<key>/{manifest.json, ...}``.

    Example:
        >>> store = ArtifactStore(tmp_path)
        >>> key = artifact_key("embed", {"size": 224}, {})
        >>> with store.create("embed", key, config={"size": 224}) as folder:
        ...     (folder / "feats.npy").write_bytes(data)
        >>> store.open("embed", key).path
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root: Path = _local_root(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        """The root as a ``file://`` URL (a remote store's ``url`` is its fsspec URL)."""
        return self.root.as_uri()

    def location(self, stage: str, key: str) -> Path:
        """Where ``stage``/``key`` lives (or would live); checks both are valid folder names."""
        validate_name(stage, "stage", "ArtifactStore.location")
        validate_name(key, "key", "ArtifactStore.location")
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Artifact | None:
        """The verified artifact, or None when it is absent or fails its manifest checks.

        Its files are re-hashed only when they differ from the verified stamp (see the module
        docstring); the file list and sizes are checked on every call.
        """
        path = self.location(stage, key)
        if not path.exists():
            logger.debug("artifact %s/%s not found under %s", stage, key, self.root)
            return None
        manifest, reason = self._verify_published(stage, key, path)
        if manifest is None:
            logger.warning(
                "artifact %s/%s at %s is invalid (%s); ignoring it so it is recomputed",
                stage, key, path, reason,
            )
            return None
        return Artifact(stage=stage, key=key, path=path, manifest=manifest)

    def open(self, stage: str, key: str) -> Artifact:
        """Like :meth:`get`, but a missing or invalid artifact raises ``FileNotFoundError``."""
        path = self.location(stage, key)
        if not path.exists():
            raise FileNotFoundError(
                f"no artifact {stage}/{key} under {self.root}: run the '{stage}' stage first, or"
                " check store_root and the key"
            )
        manifest, reason = self._verify_published(stage, key, path)
        if manifest is None:
            raise FileNotFoundError(
                f"artifact {stage}/{key} at {path} is invalid ({reason}): delete the folder and"
                f" rerun the '{stage}' stage"
            )
        return Artifact(stage=stage, key=key, path=path, manifest=manifest)

    def fingerprint(self, stage: str, key: str) -> str | None:
        """Cheap identity of the published folder, or None when it is absent or visibly broken.

        sha256 over the manifest bytes and each listed file's ``(relpath, size, mtime_ns)``: it
        changes when the folder is deleted and rewritten, or a file is truncated or rewritten,
        without reading the files (:meth:`get` checks the checksums when the files changed).
        """
        path = self.location(stage, key)
        try:
            raw = (path / MANIFEST_NAME).read_bytes()
            files = json.loads(raw)["files"]
            digest = hashlib.sha256(raw)
            for rel in sorted(files):
                info = (path / rel).stat()
                if info.st_size != files[rel]["size"]:
                    return None
                digest.update(f"\0{rel}\0{info.st_size}\0{info.st_mtime_ns}".encode())
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return digest.hexdigest()[:16]

    def stages(self) -> list[str]:
        """The stage folders under the root, sorted (hidden folders such as ``.verified`` left out)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def artifacts(self, stage: str | None = None) -> list[ArtifactEntry]:
        """Every published folder (of one ``stage``, or all), sorted, as its manifest describes it.

        Reads the manifests only (cheap); temp, trash and other hidden folders are not artifacts.

        Raises:
            FileNotFoundError: the root does not exist.
            ValueError: a bad stage name, or no folder of that stage (the message lists the stages).
        """
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"no artifact store at {self.root}: nothing was published there; check the artifact root"
            )
        if stage is None:
            stages = self.stages()
        else:
            validate_name(stage, "stage", "ArtifactStore.artifacts")
            if not (self.root / stage).is_dir():
                raise ValueError(
                    f"no stage {stage!r} under {self.root}; stages there: {', '.join(self.stages()) or 'none'}"
                )
            stages = [stage]
        entries = []
        for name in stages:
            for folder in sorted((self.root / name).iterdir()):
                if folder.is_dir() and _NAME_RE.match(folder.name):
                    entries.append(self._entry(name, folder))
        return entries

    def verify(self, stage: str, key: str, *, fix: bool = False) -> ArtifactCheck:
        """Re-hash every file of one artifact, ignoring its stamp.

        A valid artifact gets a fresh stamp. A corrupt one loses its stamp (so :meth:`get` re-hashes
        and rejects it), and with ``fix`` the folder is moved aside and deleted, so the next run
        recomputes it.

        Raises:
            FileNotFoundError: there is no folder ``stage``/``key``.
        """
        path = self.location(stage, key)
        if not path.is_dir():
            raise FileNotFoundError(f"no artifact {stage}/{key} under {self.root}")
        checked = self._check(stage, key, path, trust_stamp=False)
        if checked.manifest is not None:
            self._write_stamp(stage, key, checked)
            return ArtifactCheck(stage, key, path, True, "", checked.bytes_hashed)
        if fix:
            self._remove(stage, key, path)
            logger.info("removed corrupt artifact %s/%s at %s (%s)", stage, key, path, checked.reason)
        else:
            self._drop_stamp(stage, key)
        return ArtifactCheck(stage, key, path, False, checked.reason, checked.bytes_hashed, removed=fix)

    def verify_all(
        self,
        stage: str | None = None,
        *,
        fix: bool = False,
        progress: Callable[[Iterable[ArtifactEntry]], Iterable[ArtifactEntry]] | None = None,
    ) -> list[ArtifactCheck]:
        """:meth:`verify` every published artifact (of one ``stage``, or all), ignoring stamps.

        ``progress`` wraps the iterable of artifacts, e.g. ``functools.partial(tqdm, unit="artifact")``.
        A folder deleted while this runs is left out of the report.

        Raises:
            FileNotFoundError: the root does not exist.
            ValueError: a bad stage name, or no folder of that stage.
        """
        entries = self.artifacts(stage)
        report = []
        for entry in progress(entries) if progress is not None else entries:
            try:
                report.append(self.verify(entry.stage, entry.key, fix=fix))
            except FileNotFoundError:
                logger.debug("artifact %s/%s vanished while verifying", entry.stage, entry.key)
        return report

    @contextlib.contextmanager
    def create(
        self,
        stage: str,
        key: str,
        *,
        config: Mapping[str, Any] | BaseModel | None = None,
        inputs: Mapping[str, str] | None = None,
    ) -> Iterator[Path]:
        """Yield an empty temp folder to fill; publish it as ``root/stage/key`` on a clean exit.

        The temp folder is ``root/stage/.tmp-<key>-<uuid>``. On exit the manifest is written and
        the folder renamed into place in one step; if another writer already published a valid
        artifact under the same key, ours is discarded (same key, same content). An invalid
        folder in the way is moved aside and replaced. On an exception the temp folder is removed.
        The files are hashed once, for the manifest, and the folder is stamped as verified.

        Raises:
            ValueError: bad names/config/inputs, a ``manifest.json`` written by the caller, a
                ``meta.json`` that is not a JSON object, or a symlink/special file in the folder.
        """
        where = "ArtifactStore.create"
        final = self.location(stage, key)
        config_json = None if config is None else _jsonable_config(config, where)
        inputs_json = {} if inputs is None else _check_inputs(inputs, where)
        with self._temp_folder(final) as tmp:
            yield tmp
            written = self._write_manifest(tmp, stage, key, config_json, inputs_json)
            self._publish(tmp, final, stage, key, written)

    def receive(self, stage: str, key: str, fill: Callable[[Path], None]) -> Artifact:
        """Publish a copy of an artifact written elsewhere (e.g. downloaded from a remote store).

        ``fill(folder)`` puts the artifact's files and its ``manifest.json`` into an empty temp
        folder beside ``root/stage/key``; every file of the copy is then hashed and checked against
        that manifest (never trusting a stamp), and published as :meth:`create` publishes. Nothing
        is published when ``fill`` raises or the copy fails its checks.

        Raises:
            ValueError: the copy does not match its manifest (the reason says which file).
        """
        final = self.location(stage, key)
        with self._temp_folder(final) as tmp:
            fill(tmp)
            checked = self._check(stage, key, tmp, trust_stamp=False)
            if checked.manifest is None:
                raise ValueError(f"copy of artifact {stage}/{key} is invalid ({checked.reason})")
            self._publish(tmp, final, stage, key, checked)
        published = json.loads((final / MANIFEST_NAME).read_text())  # another writer's copy may have won
        return Artifact(stage=stage, key=key, path=final, manifest=published)

    @contextlib.contextmanager
    def _temp_folder(self, final: Path) -> Iterator[Path]:
        """An empty ``<stage>/.tmp-<key>-<uuid>`` folder, removed on exit (a no-op once published)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _entry(self, stage: str, folder: Path) -> ArtifactEntry:
        try:
            manifest = json.loads((folder / MANIFEST_NAME).read_text())
            size = sum(int(entry["size"]) for entry in manifest["files"].values())
            created = str(manifest.get("created"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            size = created = None
        return ArtifactEntry(stage=stage, key=folder.name, path=folder, size=size, created=created)

    def _write_manifest(
        self, tmp: Path, stage: str, key: str, config: dict | None, inputs: dict[str, str]
    ) -> _Checked:
        """Hash the files into ``manifest.json``; the result carries what the stamp needs."""
        where = f"ArtifactStore.create({stage}/{key})"
        files, other = _list_files(tmp)
        if other:
            raise ValueError(f"{where}: {other} are links or special files; write regular files only")
        if MANIFEST_NAME in files:
            raise ValueError(
                f"{where}: the stage wrote {MANIFEST_NAME}, which the store owns; put extra"
                f" metadata in {META_NAME} instead"
            )
        metadata: dict[str, Any] = {}
        if META_NAME in files:
            try:
                metadata = json.loads((tmp / META_NAME).read_text())
            except ValueError as exc:
                raise ValueError(f"{where}: {META_NAME} is not valid JSON ({exc})") from exc
            if not isinstance(metadata, dict):
                raise ValueError(
                    f"{where}: {META_NAME} must hold a JSON object, not {type(metadata).__name__}"
                )
        stats = {rel: _file_stat(tmp / rel) for rel in files}  # before hashing: a later write shows
        manifest = {
            "stage": stage,
            "key": key,
            "config": config,
            "inputs": inputs,
            "code_version": CODE_VERSION,
            "created": datetime.now(timezone.utc).isoformat(),
            "files": {rel: {"size": stats[rel]["size"], "sha256": file_sha256(tmp / rel)} for rel in files},
            "metadata": metadata,
        }
        raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
        (tmp / MANIFEST_NAME).write_bytes(raw)
        return _Checked(manifest, raw=raw, stats=stats, bytes_hashed=sum(s["size"] for s in stats.values()))

    def _publish(self, tmp: Path, final: Path, stage: str, key: str, checked: _Checked) -> None:
        """Rename ``tmp`` (fully checked, as ``checked`` says) to ``final`` and stamp it verified."""
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                os.rename(tmp, final)  # atomic; fails if a non-empty folder is already there
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            else:
                logger.debug("published artifact %s/%s at %s", stage, key, final)
                self._write_stamp(stage, key, checked)  # a rename keeps the files' inodes and mtimes
                return
            manifest, reason = self._verify_published(stage, key, final)
            if manifest is not None:
                logger.info("artifact %s/%s was published by another writer; keeping theirs", stage, key)
                return
            logger.warning("replacing invalid artifact at %s (%s)", final, reason)
            self._remove(stage, key, final)
        raise OSError(
            f"could not publish artifact {stage}/{key} at {final} after {_PUBLISH_ATTEMPTS} attempts"
        )

    def _remove(self, stage: str, key: str, path: Path) -> None:
        """Delete a published folder and its stamp: moved aside in one rename (readers see it or
        nothing), then deleted."""
        self._drop_stamp(stage, key)
        trash = path.parent / f".trash-{key}-{uuid.uuid4().hex}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # --- verification and stamps ------------------------------------------------------------------

    def _verify_published(self, stage: str, key: str, path: Path) -> tuple[dict[str, Any] | None, str]:
        """(manifest, "") when the published folder is valid, else (None, why not); trusts a
        matching stamp, stamps a folder it had to hash, and drops the stamp of an invalid one."""
        checked = self._check(stage, key, path, trust_stamp=True)
        if checked.manifest is None:
            self._drop_stamp(stage, key)
        elif not checked.trusted:
            self._write_stamp(stage, key, checked)
        return checked.manifest, checked.reason

    def _check(self, stage: str, key: str, path: Path, *, trust_stamp: bool) -> _Checked:
        """Check ``path`` against its manifest: the file list and sizes always; the sha256 of every
        file unless ``trust_stamp`` and the stamp matches the manifest and every file's stat."""
        try:
            raw = (path / MANIFEST_NAME).read_bytes()
            manifest = json.loads(raw)
        except FileNotFoundError:
            return _Checked(None, f"{MANIFEST_NAME} is missing (an interrupted or foreign write)")
        except (OSError, ValueError) as exc:
            return _Checked(None, f"{MANIFEST_NAME} is unreadable ({exc})")
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or manifest.get("stage") != stage or manifest.get("key") != key:
            return _Checked(None, f"{MANIFEST_NAME} does not describe {stage}/{key}")
        present, other = _list_files(path)
        unlisted = sorted(set(present) - set(files) - {MANIFEST_NAME}) + other
        if unlisted:
            return _Checked(None, f"files not in the manifest: {unlisted}")
        stats: dict[str, dict[str, int]] = {}
        for rel, entry in files.items():
            target = path / rel
            if not _safe_relpath(rel) or not isinstance(entry, dict):
                return _Checked(None, f"manifest entry {rel!r} is malformed")
            if not target.is_file():
                return _Checked(None, f"file {rel!r} is missing")
            stats[rel] = _file_stat(target)  # before hashing, so a write during the hash shows later
            size = stats[rel]["size"]
            if size != entry.get("size"):
                return _Checked(None, f"file {rel!r} has {size} bytes, manifest says {entry.get('size')} (truncated?)")
        if trust_stamp and self._stamp_matches(stage, key, raw, stats):
            return _Checked(manifest, raw=raw, stats=stats, trusted=True)
        hashed = 0
        for rel, entry in files.items():
            digest = file_sha256(path / rel)
            hashed += stats[rel]["size"]
            if digest != entry.get("sha256"):
                return _Checked(None, f"file {rel!r} does not match its sha256 (altered?)", bytes_hashed=hashed)
        return _Checked(manifest, raw=raw, stats=stats, bytes_hashed=hashed)

    def _stamp_path(self, stage: str, key: str) -> Path:
        return self.root / STAMPS_DIRNAME / stage / f"{key}.json"

    def _stamp_matches(self, stage: str, key: str, raw: bytes, stats: dict[str, dict[str, int]]) -> bool:
        try:
            stamp = json.loads(self._stamp_path(stage, key).read_bytes())
        except (OSError, ValueError):
            return False  # no stamp (or a torn one): verify in full
        return (
            isinstance(stamp, dict)
            and stamp.get("manifest_sha256") == hashlib.sha256(raw).hexdigest()
            and stamp.get("files") == stats
        )

    def _write_stamp(self, stage: str, key: str, checked: _Checked) -> None:
        """Record that ``stage``/``key`` was just fully verified. Written atomically (temp file +
        ``os.replace``) and never fatal: without a stamp the next open only costs a full re-hash."""
        target = self._stamp_path(stage, key)
        stamp = {
            "manifest_sha256": hashlib.sha256(checked.raw).hexdigest(),
            "files": checked.stats,
            "verified": datetime.now(timezone.utc).isoformat(),
        }
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True))
            os.replace(tmp, target)
        except OSError as exc:
            logger.warning(
                "could not write the verified stamp %s (%s); the next open of %s/%s re-hashes its files",
                target, exc, stage, key,
            )
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _drop_stamp(self, stage: str, key: str) -> None:
        try:
            self._stamp_path(stage, key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # harmless: a republished folder has a new manifest or new mtimes
            logger.warning("could not remove the verified stamp of %s/%s (%s)", stage, key, exc)
