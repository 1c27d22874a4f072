"""The plumbing every stage task shares: cache key, retries, and the artifact-or-compute body.

A concrete stage is a thin wrapper::

    @stage_task("embed")
    def embed_task(config: EmbedConfig, inputs: dict[str, str], store_root: str) -> dict:
        store = open_store(store_root)   # local path, file:// or any fsspec URL
        return run_stage(store, "embed", config, inputs,
                         lambda folder: stego_core.embed(..., out_dir=folder))

and returns a small JSON "artifact ref" ``{"stage", "key", "path", "cached"}``; the next task
passes ``ref["key"]`` in its own ``inputs``.

Two cache layers, and why a deleted artifact is still recomputed
----------------------------------------------------------------
1. The artifact store (:mod:`tasks.catalog`) is the source of truth. :func:`run_stage` computes
   ``key = artifact_key(stage, config, inputs)``, returns at once if ``store.get`` finds a valid
   folder (checksums re-read for files changed since they were last verified), and otherwise
   computes into a temp folder published atomically. Correctness never depends on Prefect.
2. Prefect's result cache only saves the task body from running at all. :func:`stage_cache_key`
   returns ``<stage>-<artifact key>-<h>`` with ``h`` a hash of the store URL and the store's
   ``fingerprint`` (local: manifest bytes + each file's size and mtime; remote: the remote
   manifest's bytes), or ``None`` (no Prefect caching for this run) when the artifact is absent or
   visibly broken.

So: first run: no folder -> key None -> body computes. Second run: folder present -> new Prefect
key -> body runs once more, finds the artifact (no compute) and its ref is cached under that key.
Later runs: Prefect cache hit, body skipped. Delete the folder: key None again -> body recomputes.
Rewrite or truncate a file: its mtime/size change the key -> body runs -> ``store.get`` re-checks
checksums and recomputes. Only ``config`` and ``inputs`` enter the key: other task parameters
(device, workers) must not change what is written. The body must pass ``run_stage`` the same
stage name as ``stage_task`` (the cache key looks for ``<root>/<task name>/<key>``; a mismatch is
safe but never hits Prefect's cache).

Remote stores: ``store_root`` may be any fsspec URL (:func:`tasks.remote_store.open_store`); a
task on another machine then finds the artifacts of an earlier run and downloads them into its
local mirror. A ref's ``path`` is a folder on the machine that ran the task: downstream code should
reopen artifacts by key (``open_store(store_root).open(stage, ref["key"]).path``).

Results: refs are persisted as JSON to Prefect's result storage, ``PREFECT_LOCAL_STORAGE_PATH``
unless a task is given ``result_storage``; :func:`results_folder` names a folder beside the
artifacts (Prefect reads a ``str`` as a block slug: pass ``Path(results_folder(root))`` for a local
root, a saved ``RemoteFileSystem(basepath=results_folder(url))`` block for a remote one).

Retries: only transient I/O failures (``OSError`` such as ``TimeoutError``/``ConnectionError``,
but not a missing file or a permission error) are retried; bad inputs (``ValueError``) and
failures of the maths (``RuntimeError``) fail at once.
"""

from __future__ import annotations

import hashlib
import inspect
import resource
import time
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from tasks.catalog import META_NAME, ArtifactStore, artifact_key, validate_name
from tasks.remote_store import RemoteArtifactStore, open_store

logger = logging.getLogger(__name__)

RESULTS_DIRNAME = ".prefect-results"
CHECKPOINTS_DIRNAME = ".checkpoints"
STAGE_PARAMETERS = ("config", "inputs", "store_root")
PERMANENT_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
)
_RESERVED_TASK_OPTIONS = frozenset({
    "name", "cache_key_fn", "cache_policy", "persist_result", "result_serializer",
    "retry_condition_fn", "refresh_cache",
})


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run (shown in the UI), the module logger outside."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


def results_folder(store_root: str) -> str:
    """``<artifact root>/.prefect-results`` (a local path, or ``<url>/.prefect-results`` for a remote
    store): a place for Prefect results that lives and dies with the artifacts."""
    store = open_store(store_root)
    if isinstance(store, RemoteArtifactStore):
        return f"{store.url}/{RESULTS_DIRNAME}"
    return str(store.root / RESULTS_DIRNAME)


def is_transient_error(exc: BaseException) -> bool:
    """True for I/O failures worth retrying: ``OSError`` (incl. ``TimeoutError``,
    ``ConnectionError``) except those a retry cannot fix (``PERMANENT_OS_ERRORS``)."""
    return isinstance(exc, OSError) and not isinstance(exc, PERMANENT_OS_ERRORS)


def retry_on_transient_errors(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed run only if it raised a transient error."""
    try:
        state.result()
    except Exception as exc:  # the failed run's exception, re-raised by Prefect
        return is_transient_error(exc)
    return False


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect ``cache_key_fn``: ``<stage>-<artifact key>-<hash(store root, folder fingerprint)>``.

    ``stage`` is the task name; ``parameters`` must hold ``config`` (pydantic model or mapping),
    ``inputs`` (input name -> artifact key) and ``store_root``. Returns ``None`` (Prefect then
    neither reads nor writes its cache) while the artifact is absent, so that deleting it forces
    the body to run. Only JSON-able values are hashed: stable across processes.
    """
    missing = [name for name in STAGE_PARAMETERS if name not in parameters]
    if missing:
        raise ValueError(f"stage_cache_key: task parameters lack {missing}; see stage_task")
    stage = context.task.name
    store = open_store(parameters["store_root"])
    key = artifact_key(stage, parameters["config"], parameters["inputs"])
    fingerprint = store.fingerprint(stage, key)
    if fingerprint is None:
        return None
    salt = hashlib.sha256(f"{store.url}\0{fingerprint}".encode()).hexdigest()[:12]
    return f"{stage}-{key}-{salt}"


def stage_task(
    stage: str,
    *,
    retries: int = 2,
    retry_delay_seconds: float = 2.0,
    **task_kwargs: Any,
) -> Callable[[Callable[..., dict]], Any]:
    """Decorator factory: turn ``fn(config, inputs, store_root, ...) -> dict`` into a stage task.

    The Prefect task gets ``name=stage``, ``cache_key_fn=stage_cache_key``, ``persist_result=True``,
    the ``"json"`` result serializer, ``refresh_cache=False`` and ``retries`` with
    ``retry_on_transient_errors``. ``task_kwargs`` go to ``prefect.task`` (tags, timeout_seconds,
    result_storage, ...).

    Raises:
        ValueError: a bad stage name, negative retries/delay, or an option this factory sets.
        TypeError: (when decorating) ``fn`` lacks a ``config``, ``inputs`` or ``store_root`` parameter.
    """
    validate_name(stage, "stage", "stage_task")
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"stage_task({stage!r}): retries must be an int >= 0, got {retries!r}")
    if not isinstance(retry_delay_seconds, (int, float)) or retry_delay_seconds < 0:
        raise ValueError(
            f"stage_task({stage!r}): retry_delay_seconds must be a number >= 0, got {retry_delay_seconds!r}"
        )
    reserved = sorted(_RESERVED_TASK_OPTIONS & task_kwargs.keys())
    if reserved:
        raise ValueError(f"stage_task({stage!r}): {reserved} are set by stage_task; leave them out")

    def decorate(fn: Callable[..., dict]) -> Any:
        params = inspect.signature(fn).parameters
        lacking = [name for name in STAGE_PARAMETERS if name not in params]
        if lacking:
            raise TypeError(
                f"stage_task({stage!r}): {fn.__qualname__} lacks parameters {lacking}; a stage task is"
                " fn(config, inputs: dict[str, str], store_root: str, ...) -> dict"
            )
        return task(
            fn,
            name=stage,
            cache_key_fn=stage_cache_key,
            persist_result=True,
            result_serializer="json",
            refresh_cache=False,
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            retry_condition_fn=retry_on_transient_errors,
            **task_kwargs,
        )

    return decorate


def checkpoint_dir(store: ArtifactStore | RemoteArtifactStore, stage: str, key: str) -> Path:
    """``<store root>/.checkpoints/<stage>/<key>``: where a long stage keeps resumable state. It lies
    outside the temp folder (deleted when an attempt fails), on this machine (a remote store's local
    mirror), and cannot clash with an artifact (stage names never start with ``.``)."""
    validate_name(stage, "stage", "checkpoint_dir")
    validate_name(key, "key", "checkpoint_dir")
    return store.root / CHECKPOINTS_DIRNAME / stage / key


def run_stage(
    store: ArtifactStore | RemoteArtifactStore,
    stage: str,
    config: Any,
    inputs: Mapping[str, str],
    compute: Callable[[Path], Mapping[str, Any] | None],
) -> dict[str, Any]:
    """Return the ref of ``stage``'s artifact, computing it only if the store lacks a valid one.

    ``compute(folder)`` writes the stage's files into an empty temp folder and may return a
    JSON-able mapping of extra metadata, merged into ``meta.json`` (and so into the manifest's
    ``metadata``). Returns ``{"stage", "key", "path", "cached"}`` with ``cached`` true when the
    artifact already existed.

    Raises:
        ValueError: from :func:`artifact_key` for a bad config/inputs, or when ``compute``
            returns something other than a mapping or None.
    """
    key = artifact_key(stage, config, inputs)
    found = store.get(stage, key)
    if found is not None:
        run_logger().info("stage %s: cache hit %s at %s", stage, key, found.path)
        return {"stage": stage, "key": key, "path": str(found.path), "cached": True}
    run_logger().info("stage %s: computing %s", stage, key)
    with store.create(stage, key, config=config, inputs=inputs) as folder:
        started = time.perf_counter()
        extra = compute(folder)
        usage = {"wall_s": round(time.perf_counter() - started, 3), "peak_rss_mb": peak_rss_mb()}
        run_logger().info("stage %s: done in %.1f s (process peak RSS %.0f MB)", stage, usage["wall_s"], usage["peak_rss_mb"])
        if extra is not None and not isinstance(extra, Mapping):
            raise ValueError(
                f"run_stage({stage!r}): compute returned {type(extra).__name__}; return a mapping"
                " of JSON-able metadata or None"
            )
        meta_path = folder / META_NAME
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if not isinstance(meta, dict):
            raise ValueError(f"run_stage({stage!r}): {META_NAME} written by compute is not a JSON object")
        meta.update({**(extra or {}), "usage": usage})
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return {"stage": stage, "key": key, "path": str(store.location(stage, key)), "cached": False, "usage": usage}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
