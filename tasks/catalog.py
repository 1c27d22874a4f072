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
Readers go through :meth:`ArtifactStore.get` / :meth:`ArtifactStore.open`, which re-check every
checksum: a truncated or edited artifact is reported and recomputed, never used.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger(__name__)

CODE_VERSION: str = "stego-0.1"
"""Part of every artifact key: bump it when a change to the code changes what a stage writes."""

MANIFEST_NAME = "manifest.json"
META_NAME = "meta.json"
KEY_HEX_CHARS = 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CHUNK_BYTES = 1 << 20
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


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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
        """The verified artifact, or None when it is absent or fails its manifest checks."""
        path = self.location(stage, key)
        if not path.exists():
            logger.debug("artifact %s/%s not found under %s", stage, key, self.root)
            return None
        manifest, reason = self._verify(stage, key, path)
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
        manifest, reason = self._verify(stage, key, path)
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
        without reading the files (:meth:`get` does the full checksum).
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
            self._write_manifest(tmp, stage, key, config_json, inputs_json)
            self._publish(tmp, final, stage, key)

    def receive(self, stage: str, key: str, fill: Callable[[Path], None]) -> Artifact:
        """Publish a copy of an artifact written elsewhere (e.g. downloaded from a remote store).

        ``fill(folder)`` puts the artifact's files and its ``manifest.json`` into an empty temp
        folder beside ``root/stage/key``; the copy is then checked against that manifest exactly as
        :meth:`get` checks, and published as :meth:`create` publishes. Nothing is published when
        ``fill`` raises or the copy fails its checks.

        Raises:
            ValueError: the copy does not match its manifest (the reason says which file).
        """
        final = self.location(stage, key)
        with self._temp_folder(final) as tmp:
            fill(tmp)
            manifest, reason = self._verify(stage, key, tmp)
            if manifest is None:
                raise ValueError(f"copy of artifact {stage}/{key} is invalid ({reason})")
            self._publish(tmp, final, stage, key)
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

    def _write_manifest(
        self, tmp: Path, stage: str, key: str, config: dict | None, inputs: dict[str, str]
    ) -> None:
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
        manifest = {
            "stage": stage,
            "key": key,
            "config": config,
            "inputs": inputs,
            "code_version": CODE_VERSION,
            "created": datetime.now(timezone.utc).isoformat(),
            "files": {
                rel: {"size": (tmp / rel).stat().st_size, "sha256": file_sha256(tmp / rel)}
                for rel in files
            },
            "metadata": metadata,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))

    def _publish(self, tmp: Path, final: Path, stage: str, key: str) -> None:
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                os.rename(tmp, final)  # atomic; fails if a non-empty folder is already there
                logger.debug("published artifact %s/%s at %s", stage, key, final)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            manifest, reason = self._verify(stage, key, final)
            if manifest is not None:
                logger.info("artifact %s/%s was published by another writer; keeping theirs", stage, key)
                return
            logger.warning("replacing invalid artifact at %s (%s)", final, reason)
            trash = final.parent / f".trash-{key}-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        raise OSError(
            f"could not publish artifact {stage}/{key} at {final} after {_PUBLISH_ATTEMPTS} attempts"
        )

    def _verify(self, stage: str, key: str, path: Path) -> tuple[dict[str, Any] | None, str]:
        """(manifest, "") when every listed file matches, else (None, why not)."""
        try:
            manifest = json.loads((path / MANIFEST_NAME).read_text())
        except FileNotFoundError:
            return None, f"{MANIFEST_NAME} is missing (an interrupted or foreign write)"
        except (OSError, ValueError) as exc:
            return None, f"{MANIFEST_NAME} is unreadable ({exc})"
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or manifest.get("stage") != stage or manifest.get("key") != key:
            return None, f"{MANIFEST_NAME} does not describe {stage}/{key}"
        present, other = _list_files(path)
        unlisted = sorted(set(present) - set(files) - {MANIFEST_NAME}) + other
        if unlisted:
            return None, f"files not in the manifest: {unlisted}"
        for rel, entry in files.items():
            target = path / rel
            if not _safe_relpath(rel) or not isinstance(entry, dict):
                return None, f"manifest entry {rel!r} is malformed"
            if not target.is_file():
                return None, f"file {rel!r} is missing"
            size = target.stat().st_size
            if size != entry.get("size"):
                return None, f"file {rel!r} has {size} bytes, manifest says {entry.get('size')} (truncated?)"
            if file_sha256(target) != entry.get("sha256"):
                return None, f"file {rel!r} does not match its sha256 (altered?)"
        return manifest, ""
