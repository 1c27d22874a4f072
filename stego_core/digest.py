"""Content digests: of files (the artifact store's manifests and the dataset downloads check the same one), of
JSON-able records, and of a split's file listing (what MLflow's dataset inputs record)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def json_digest(parts: object, chars: int = 16) -> str:
    """The first ``chars`` hex characters of the sha256 of ``parts`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:chars]


def listing_digest(paths: Iterable[str | Path | None], root: str | Path) -> str:
    """A digest of a set of files by their names relative to ``root`` and their sizes (``None`` entries, e.g. a
    missing label, count as such).

    Cheap (one ``stat`` per file, no reads) and the same on every machine that holds the same files under
    another root: renaming, adding, removing or resizing a file changes it; mtimes do not. An edit that keeps
    a file's size is not seen (the files are not read).
    """
    rows = []
    for path in paths:
        if path is None:
            rows.append(None)
            continue
        p = Path(path)
        rows.append([os.path.relpath(p, root), p.stat().st_size if p.exists() else None])
    return json_digest(rows)
