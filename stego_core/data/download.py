"""Fetch a dataset archive (resumable, checksummed) and unpack it into the registry's layout.

`fetch` downloads ``url`` to ``dest`` through ``dest.part``: an interrupted transfer (a dropped
connection, a killed process) continues from the bytes already there with an HTTP ``Range``
request, within the call (``retries``) or on the next call. When ``sha256`` is given, the finished
file is hashed before anything trusts it; a mismatch removes it and raises, naming the file and
both digests. `install_dataset` fetches a registered dataset's archive and moves its contents
into ``<root>/<spec.folder>`` as the dataset's layout reads them.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..digest import file_sha256
from .errors import DataError
from .registry import get_dataset
from .sources import Source, get_source

__all__ = ["InstallResult", "fetch", "install_dataset"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
Progress = Callable[[int | None, int], Callable[[int], None]]  # (total, start) -> update(nbytes)


def _check_sum(path: Path, sha256: str | None) -> str:
    actual = file_sha256(path)
    if sha256 and actual != sha256.lower():
        path.unlink()
        raise DataError(f"{path} is corrupt: its sha256 is {actual}, expected {sha256.lower()}; removed it: "
                        "run the command again to download it afresh (or check the source and --sha256)")
    return actual


def _transfer(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """One request: append to ``part`` from its current size (restart if the server ignores Range)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) URLs of the sources table)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing past what we have: the file is complete
            return
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server sent the whole file again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        update = progress(total, have) if progress else None
        with open(part, "ab" if have else "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                if update:
                    update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def fetch(url: str, dest: str | Path, *, sha256: str | None = None, retries: int = 3, timeout: float = 60.0,
          progress: Progress | None = None) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); return the file's sha256.

    An existing ``dest`` is not fetched again (only its checksum is checked).

    Raises:
        DataError: the transfer failed ``retries + 1`` times in a row (what was received stays in
            ``dest.part`` for the next call to resume), the server refused it, or the checksum differs.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        return _check_sum(dest, sha256)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as exc:
            raise DataError(f"cannot download {url}: the server answered {exc.code} {exc.reason}; check the URL") from exc
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            got = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DataError(f"downloading {url} to {dest} was interrupted ({exc or type(exc).__name__}) after "
                                f"{got:,} bytes; run the command again to resume from there") from exc
            logger.warning("download of %s interrupted at %d bytes (%s); resuming", url, got, exc)
    part.rename(dest)
    return _check_sum(dest, sha256)


def _safe_extract(archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (into / member.filename).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DataError(f"{archive} holds {member.filename!r}, outside its folder; refusing to extract it")
            broken = zf.testzip()
            if broken is None:
                zf.extractall(into)
                return
        reason = f"its member {broken!r} fails its CRC check"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        reason = f"not a readable zip archive ({exc})"
    archive.unlink()
    raise DataError(f"{archive} is corrupt: {reason}; removed it: run the command again to download it afresh")


def _dataset_dir(extracted: Path, name: str) -> Path | None:
    """The folder under ``extracted`` (depth <= 3) that holds the layout of ``name``'s first split."""
    spec = get_dataset(name)
    split = spec.splits[0]
    subset = spec.layout.subsets[-1] if spec.layout.subsets else None  # the least demanding selection
    markers = spec.layout.markers(split, subset)
    candidates = [extracted] + sorted(p for depth in ("*", "*/*", "*/*/*") for p in extracted.glob(depth) if p.is_dir())
    return next((c for c in candidates if all((c / m).exists() for m in markers)), None)


def _top(extracted: Path) -> Path:
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted


def _place(extracted: Path, source: Source, name: str, target: Path) -> None:
    if source.moves:
        top = _top(extracted)
        missing = [src for src in source.moves if not (top / src).is_dir()]
        if missing:
            raise DataError(f"the {name} archive has no {', '.join(missing)}; is --url the right archive?")
        for src, dst in source.moves.items():
            (target / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(top / src), str(target / dst))
        return
    found = _dataset_dir(extracted, name)
    if found is None:
        raise DataError(f"the {name} archive does not hold the layout the registry reads "
                        f"({', '.join(get_dataset(name).layout.markers(get_dataset(name).splits[0], None) or [])}); "
                        "is --url the right archive?")
    shutil.move(str(found), str(target))


@dataclass(frozen=True)
class InstallResult:
    folder: Path
    downloaded: bool  # False: the dataset was already there
    sha256: str | None = None


def layout_present(name: str, folder: Path) -> bool:
    """Whether ``folder`` holds every split of ``name`` (markers of the default subset)."""
    spec = get_dataset(name)
    subset = spec.layout.resolve_subset(None, name)
    return all((folder / m).exists() for s in spec.splits for m in spec.layout.markers(s, subset))


def install_dataset(name: str, root: str | Path, *, url: str | None = None, sha256: str | None = None,
                    keep_archive: bool = False, retries: int = 3, progress: Progress | None = None) -> InstallResult:
    """Fetch ``name``'s archive into ``root`` and unpack it to ``root/<spec.folder>``.

    Nothing is fetched when the folder already holds the layout. ``url`` / ``sha256`` override the
    source's (a mirror; a pinned digest).

    Raises:
        DataError: no public source and no ``url`` (the message is the source's instructions), the
            folder exists without the layout, or as `fetch` and the extraction (a corrupt archive,
            one without the layout).
    """
    spec, source = get_dataset(name), get_source(name)
    root = Path(root).expanduser()
    target = root / spec.folder
    if layout_present(name, target):
        return InstallResult(target, downloaded=False)
    url = url or source.url
    if url is None:
        raise DataError(f"{name} cannot be downloaded automatically: {source.instructions.replace('ROOT', str(root))}")
    if target.exists() and any(target.iterdir()):
        raise DataError(f"{target} exists but does not hold the {name} layout; move it aside (or complete it by hand "
                        "and run `stego data check`), then run the download again")
    root.mkdir(parents=True, exist_ok=True)
    archive = root / source.filename
    digest = fetch(url, archive, sha256=sha256 or source.sha256, retries=retries, progress=progress)
    tmp = root / f".{spec.folder}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _safe_extract(archive, tmp)
        if target.exists():
            target.rmdir()  # empty (checked above)
        _place(tmp, source, name, target)
    except DataError as exc:
        if archive.exists():  # not this dataset's archive: a retry must not reuse it
            archive.unlink()
            raise DataError(f"{exc} (removed {archive})") from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    return InstallResult(target, downloaded=True, sha256=digest)
