"""The artifact store at any fsspec URL (``s3://bucket/prefix``, ``memory://x``, ``file:///abs``).

:func:`open_store` is what callers use: a local path or ``file://`` URL gives the local
:class:`~tasks.catalog.ArtifactStore`, any other protocol a :class:`RemoteArtifactStore`. Both have
the same interface, and ``Artifact.path`` is always a local folder (numpy memmaps need one).

A remote artifact is ``<url>/<stage>/<key>/`` holding the same files and ``manifest.json`` as a
local one. The manifest is uploaded last and is the commit marker: a folder without it is absent,
so a reader never sees a half-uploaded artifact. Every remote artifact read or written goes
through a local mirror (an :class:`ArtifactStore` under ``$STEGO_HOME/remote-cache/<hash of the
URL>``): a download fills a temp folder there and is published only after every checksum matched
(:meth:`ArtifactStore.receive`), so a corrupt remote copy is reported and recomputed, never used.
Keys are content addresses, so a valid mirror copy is as good as the remote one; later opens of a
mirror copy trust its verified stamp as a local store does (:mod:`tasks.catalog`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec.core
from pydantic import BaseModel

from stego_core.home import stego_home
from tasks.catalog import MANIFEST_NAME, Artifact, ArtifactCheck, ArtifactEntry, ArtifactStore, _safe_relpath

logger = logging.getLogger(__name__)

MIRROR_DIRNAME = "remote-cache"


def open_store(root: str | os.PathLike[str]) -> ArtifactStore | RemoteArtifactStore:
    """The store at ``root``: an :class:`ArtifactStore` for a local path or ``file://`` URL, a
    :class:`RemoteArtifactStore` for any other fsspec URL."""
    text = os.fspath(root)
    if isinstance(text, str) and "://" in text and not text.lower().startswith("file://"):
        return RemoteArtifactStore(text)
    return ArtifactStore(text)


class RemoteArtifactStore:
    """Artifacts at an fsspec URL, read and written through a verified local mirror.

    Example:
        >>> store = RemoteArtifactStore("s3://bucket/stego")   # needs s3fs
        >>> with store.create("embed", key, config=cfg) as folder:   # uploaded on a clean exit
        ...     (folder / "feats.npy").write_bytes(data)
        >>> store.open("embed", key).path   # a local folder, downloaded once per machine
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"RemoteArtifactStore: url must be an fsspec URL such as s3://bucket/prefix, got {url!r}")
        try:
            self.fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ValueError(
                f"RemoteArtifactStore: cannot open {url!r} ({exc}); check the protocol and install"
                " its fsspec package (s3fs for s3://, gcsfs for gs://, adlfs for az://)"
            ) from exc
        self._base = path.rstrip("/")
        if not self._base.strip("/"):
            raise ValueError(f"RemoteArtifactStore: url {url!r} names no folder; use e.g. s3://bucket/prefix")
        self.url: str = self.fs.unstrip_protocol(self._base).rstrip("/")
        """The normalised URL (no trailing slash); artifacts live at ``<url>/<stage>/<key>``."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.mirror = ArtifactStore(cache_dir if cache_dir is not None else stego_home() / MIRROR_DIRNAME / digest)
        self._rejected: dict[tuple[str, str], str] = {}  # (stage, key) -> hash of a manifest found corrupt

    def __repr__(self) -> str:
        return f"RemoteArtifactStore({self.url!r}, cache_dir={str(self.root)!r})"

    @property
    def root(self) -> Path:
        """The local mirror's root folder."""
        return self.mirror.root

    def location(self, stage: str, key: str) -> Path:
        """The local mirror folder of ``stage``/``key`` (checks both are valid folder names)."""
        return self.mirror.location(stage, key)

    def get(self, stage: str, key: str) -> Artifact | None:
        """The verified artifact in the local mirror (downloaded if need be), or None when the
        remote has no valid copy. A mirror copy the remote has lost is uploaded again."""
        found = self.mirror.get(stage, key)
        if found is not None:
            if not self.fs.exists(self._remote(stage, key, MANIFEST_NAME)):
                logger.warning("artifact %s/%s is missing at %s; uploading the local mirror copy again",
                               stage, key, self.url)
                self._upload(stage, key, found)
            return found
        return self._download(stage, key)

    def open(self, stage: str, key: str) -> Artifact:
        """Like :meth:`get`, but a missing or invalid artifact raises ``FileNotFoundError``."""
        found = self.get(stage, key)
        if found is None:
            raise FileNotFoundError(
                f"no valid artifact {stage}/{key} at {self.url}/{stage}/{key} (nor in the local mirror"
                f" {self.root}): run the '{stage}' stage first with this store_root, or check the URL"
                " and the key (a copy that failed its checksums is logged as a warning)"
            )
        return found

    def fingerprint(self, stage: str, key: str) -> str | None:
        """sha256 of the remote manifest's bytes (16 hex), or None when it is absent or unreadable.

        One small read: it changes when the artifact is rewritten, not when a file behind an
        unchanged manifest is damaged (a download checks every file)."""
        self.location(stage, key)  # validates the names
        try:
            raw = self.fs.cat_file(self._remote(stage, key, MANIFEST_NAME))
            if not isinstance(json.loads(raw).get("files"), dict):
                return None
        except (OSError, ValueError, AttributeError):
            return None
        return hashlib.sha256(raw).hexdigest()[:16]

    def artifacts(self, stage: str | None = None) -> list[ArtifactEntry]:
        """The artifacts in the local mirror (see :meth:`ArtifactStore.artifacts`), not the remote's."""
        return self.mirror.artifacts(stage)

    def verify_all(
        self,
        stage: str | None = None,
        *,
        fix: bool = False,
        progress: Callable[[Iterable[ArtifactEntry]], Iterable[ArtifactEntry]] | None = None,
    ) -> list[ArtifactCheck]:
        """Re-hash the local mirror (see :meth:`ArtifactStore.verify_all`); the remote copies are not read.

        That is enough for what this machine uses: every download was hashed before it entered the
        mirror, and a remote copy that is damaged later is caught by the next machine's download
        (and replaced). With ``fix`` a corrupt mirror copy is deleted and downloaded again on use.
        """
        return self.mirror.verify_all(stage, fix=fix, progress=progress)

    @contextlib.contextmanager
    def create(
        self,
        stage: str,
        key: str,
        *,
        config: Mapping[str, Any] | BaseModel | None = None,
        inputs: Mapping[str, str] | None = None,
    ) -> Iterator[Path]:
        """Yield an empty local temp folder to fill; publish it in the mirror, then upload it.

        See :meth:`ArtifactStore.create`. A valid remote copy already there is kept (same key, same
        content); otherwise any stale remote manifest is deleted, every file uploaded, and the
        manifest last.
        """
        with self.mirror.create(stage, key, config=config, inputs=inputs) as folder:
            yield folder
        if self._remote_copy_usable(stage, key):
            logger.info("artifact %s/%s is already at %s; keeping that copy", stage, key, self.url)
            return
        path = self.mirror.location(stage, key)
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        self._upload(stage, key, Artifact(stage=stage, key=key, path=path, manifest=manifest))

    def _remote(self, stage: str, key: str, rel: str = "") -> str:
        return posixpath.join(self._base, stage, key, rel) if rel else posixpath.join(self._base, stage, key)

    def _upload(self, stage: str, key: str, artifact: Artifact) -> None:
        """Upload a published mirror folder: stale manifest out, files, then the manifest."""
        marker = self._remote(stage, key, MANIFEST_NAME)
        if self.fs.exists(marker):
            self.fs.rm_file(marker)
        for rel in sorted(artifact.manifest["files"]):
            target = self._remote(stage, key, rel)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self.fs.put_file(str(artifact.path / rel), target)
        self.fs.makedirs(self._remote(stage, key), exist_ok=True)
        self.fs.put_file(str(artifact.path / MANIFEST_NAME), marker)
        self._rejected.pop((stage, key), None)
        logger.debug("uploaded artifact %s/%s to %s", stage, key, self.url)

    def _read_manifest(self, stage: str, key: str) -> tuple[bytes | None, dict | None, str]:
        """(raw bytes, manifest, "") of the remote manifest; (raw or None, None, why) when absent,
        unreadable, or naming files outside its folder (checked before anything is downloaded)."""
        try:
            raw = self.fs.cat_file(self._remote(stage, key, MANIFEST_NAME))
        except FileNotFoundError:
            return None, None, "no manifest"
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            return raw, None, f"{MANIFEST_NAME} is not valid JSON ({exc})"
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not all(_safe_relpath(rel) for rel in files):
            return raw, None, f"{MANIFEST_NAME} has no valid file list"
        return raw, manifest, ""

    def _reject(self, stage: str, key: str, raw: bytes, reason: str) -> None:
        logger.warning("artifact %s/%s at %s is invalid (%s); ignoring it so it is recomputed and replaced",
                       stage, key, self.url, reason)
        self._rejected[(stage, key)] = hashlib.sha256(raw).hexdigest()

    def _download(self, stage: str, key: str) -> Artifact | None:
        raw, manifest, reason = self._read_manifest(stage, key)
        if raw is None:
            logger.debug("artifact %s/%s not found at %s", stage, key, self.url)
            return None
        if manifest is None:
            self._reject(stage, key, raw, reason)
            return None

        def fill(folder: Path) -> None:
            for rel in manifest["files"]:
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._remote(stage, key, rel), str(folder / rel))
            (folder / MANIFEST_NAME).write_bytes(raw)

        try:
            found = self.mirror.receive(stage, key, fill)
        except FileNotFoundError as exc:
            self._reject(stage, key, raw, f"a listed file is missing: {exc}")
            return None
        except ValueError as exc:
            self._reject(stage, key, raw, str(exc))
            return None
        logger.info("downloaded artifact %s/%s from %s to %s", stage, key, self.url, found.path)
        return found

    def _remote_copy_usable(self, stage: str, key: str) -> bool:
        """A remote manifest for ``stage``/``key`` that this store has not found corrupt, whose
        files are all present with their listed sizes (one listing, no file reads)."""
        raw, manifest, _ = self._read_manifest(stage, key)
        if manifest is None or self._rejected.get((stage, key)) == hashlib.sha256(raw).hexdigest():
            return False
        if manifest.get("stage") != stage or manifest.get("key") != key:
            return False
        folder = self._remote(stage, key)
        sizes = {posixpath.relpath(path, folder): info.get("size")
                 for path, info in self.fs.find(folder, detail=True).items()}
        return all(isinstance(entry, dict) and sizes.get(rel) == entry.get("size")
                   for rel, entry in manifest["files"].items())
