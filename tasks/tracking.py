"""MLflow tracking of pipeline runs: the only module (besides ``flows/``) that talks to MLflow.

One MLflow run per pipeline run (a sweep passes ``parent_run_id`` to nest its members). What a run
holds, and under which names:

* params: the resolved config flattened to dotted names (``train.lr``, ``loss.b_self``, ...);
* tags: ``dataset``, ``eval_dataset``, ``backbone``, ``preset`` (+ ``data_subset``), ``mlflow.source.git.commit`` (+ ``git_dirty``),
  ``prefect.flow_run_id`` / ``prefect.flow_run_url`` when Prefect knows them, ``artifact_root`` and
  ``artifact.<stage>`` = the stage's artifact key (a run can be traced to its cached artifacts);
* metrics: ``train/loss``, ``train/loss_self``, ``train/loss_knn``, ``train/loss_rand`` per step
  (from the head's ``history.json``, sent with ``log_batch``: at most 1000 points per request),
  ``train/shift_<pair>`` (the shifts used), ``usage/<stage>/wall_s`` and ``usage/<stage>/peak_rss_mb``
  for the stages computed in this run, and per method ``<method>.accuracy``, ``<method>.mIoU``,
  ``<method>.iou.<class>``;
* artifacts: ``metrics.json`` + ``model/`` (head, centroids, linear probe, loss/history,
  ``config.json``) laid out like a run folder, so ``stego predict --run <run id>`` can use it
  (:func:`download_run`), ``run.json`` (artifact keys, cache hits, usage) and ``figures/*.png``;
* an MLflow model (a ``pyfunc`` named ``stego``: image in, class map out) built from the same run
  folder, which ``stego register`` puts in the Model Registry (:mod:`tasks.registry`);
* dataset inputs: the training split (context ``training``) and the evaluation split (``evaluation``),
  each with its name, root, number of images and a digest of its file listing (:func:`split_input`).

The store: ``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else the SQLite database
``<home>/mlflow.db`` (:func:`resolve_tracking_uri`); a SQLite store keeps its artifacts beside the
database, in ``mlflow-artifacts/<experiment>``.
A run that raises is ended FAILED with an ``error`` tag (and ``error.txt``); what was logged stays.

A tracking server is probed first (:func:`check_reachable`, a TCP connect with a short timeout), so a
wrong or stopped server fails the run in seconds, before any stage, with :class:`TrackingUnavailable`.
Secrets never reach MLflow: passwords in URLs (``user:***@host``) and token-like query values
(``?token=***``) are masked in every param, tag and error record (:func:`redact`).
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's LogBatch request limits
VALUE_LIMIT = 6000  # MLflow 3 param value limit (tags allow more); longer values are cut
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")
CODE_DIR = Path(__file__).resolve().parents[1]
PROBE_TIMEOUT_S = 5.0  # how long a tracking server may take to accept a connection
MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@?#]*)(?::[^/\s@?#]*)?@")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;][^=&;#\s]*(?:token|secret|passw|pwd|key|sig|credential|auth)[^=&;#\s]*=)[^&;#\s]+", re.IGNORECASE)


class TrackingUnavailable(ConnectionError):
    """The MLflow tracking server cannot be reached."""


def redact(text: str) -> str:
    """``text`` with URL passwords and token-like query values masked.

    ``https://bob:pw@host/x?token=t&n=1`` -> ``https://bob:***@host/x?token=***&n=1``; a userinfo
    without a password (``https://TOKEN@github.com``) is masked whole.
    """
    def userinfo(m: re.Match) -> str:
        has_password = ":" in m.group(0)[len(m.group("scheme")):]
        return f"{m.group('scheme')}{m.group('user') + ':' + MASK if has_password else MASK}@"

    return _SECRET_QUERY.sub(lambda m: m.group("name") + MASK, _URL_USERINFO.sub(userinfo, text))


def check_reachable(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnavailable` when an ``http(s)://`` tracking server accepts no TCP
    connection within ``timeout_s`` (MLflow's own client would retry for minutes). Other stores
    (SQLite, files, ``databricks``) are not probed."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        with socket.create_connection(address, timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise TrackingUnavailable(
            f"the MLflow tracking server {redact(uri)} cannot be reached ({type(exc).__name__}: {exc}); start it, fix "
            "--tracking-uri / $MLFLOW_TRACKING_URI, run with --no-tracking, or pass --tracking-fallback "
            "(flow parameter tracking_fallback=true) to record the run in the local store instead"
        ) from None


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on the store ``uri``, checked to answer.

    Raises:
        TrackingUnavailable: an ``http(s)://`` server accepts no connection (see :func:`check_reachable`).
        ValueError: ``uri`` is not a store MLflow can open (an unknown scheme, a file store).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    check_reachable(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"--tracking-uri {redact(uri)} is not an MLflow store that can be opened ({first}); "
                         "pass sqlite:///FILE.db or the http://HOST:PORT of an `mlflow server`") from None
    return client


# ------------------------------------------------------------------------------- store and names
def local_tracking_uri(home: str | Path) -> str:
    """``sqlite:///<home>/mlflow.db`` (absolute): the embedded default store."""
    return f"sqlite:///{(Path(home).expanduser().resolve() / 'mlflow.db')}"


def resolve_tracking_uri(tracking_uri: str | None, home: str | Path) -> str:
    """``tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > :func:`local_tracking_uri` of ``home``."""
    import os

    return tracking_uri or os.environ.get(TRACKING_URI_ENV) or local_tracking_uri(home)


def is_local_store(uri: str) -> bool:
    """True for a database or folder on this machine (no server to ask)."""
    return uri.startswith(("sqlite:", "file:", "/"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI, else ``None``."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def local_artifact_root(uri: str) -> Path | None:
    """``<database folder>/mlflow-artifacts`` for a SQLite store (MLflow's own default would be
    ``./mlruns`` in whatever the working directory is); ``None`` for a server or a file store."""
    db = sqlite_path(uri)
    return db.expanduser().resolve().parent / "mlflow-artifacts" if db is not None else None


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}``; lists become JSON, ``None`` ``"None"``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            text = redact(text)
            if len(text) > VALUE_LIMIT:
                logger.warning("param %s is %d characters; logging its first %d", name, len(text), VALUE_LIMIT)
                text = text[:VALUE_LIMIT]
            out[name] = text
    return out


def metric_key(*parts: str) -> str:
    """Join ``parts`` with ``.``; characters MLflow rejects in metric names become ``_``."""
    return _METRIC_UNSAFE.sub("_", ".".join(parts))


def history_metrics(history: Sequence[Mapping[str, float]], prefix: str, timestamp_ms: int) -> list:
    """One MLflow ``Metric`` per (row, term) of ``history.json`` rows ``{"step", "loss", ...}``:
    key ``<prefix>/<term>``, ``step`` from the row. Non-finite values are skipped (MLflow rejects NaN
    only in some stores; a gap is clearer than a fake number)."""
    from mlflow.entities import Metric

    out = []
    for row in history:
        for term, value in row.items():
            if term != "step" and value is not None and value == value and abs(value) != float("inf"):
                out.append(Metric(f"{prefix}/{term}", float(value), timestamp_ms, int(row["step"])))
    return out


def result_metrics(result: Mapping[str, Any], timestamp_ms: int) -> list:
    """Final metrics per method (accuracy, mIoU, per-class IoU) and stage usage, as ``Metric`` objects."""
    from mlflow.entities import Metric

    values: dict[str, float] = {}
    for method, m in result["metrics"].items():
        values[metric_key(method, "accuracy")] = m["accuracy"]
        values[metric_key(method, "mIoU")] = m["mIoU"]
        for cls, iou in (m.get("per_class_iou") or {}).items():
            if iou is not None:
                values[metric_key(method, "iou", str(cls))] = iou
    for stage, usage in result.get("usage", {}).items():
        for name, value in usage.items():
            values[f"usage/{stage}/{name}"] = value
    if result.get("usage"):
        values["usage/total_wall_s"] = sum(u.get("wall_s", 0.0) for u in result["usage"].values())
    return [Metric(k, float(v), timestamp_ms, 0) for k, v in values.items()]


def git_tags(code_dir: Path = CODE_DIR) -> dict[str, str]:
    """``mlflow.source.git.commit`` (and ``git_dirty`` when tracked files changed); empty without git."""
    try:
        commit = subprocess.run(["git", "-C", str(code_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(code_dir), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, **({"git_dirty": "true"} if dirty else {})}


def prefect_tags() -> dict[str, str]:
    """The current Prefect flow run's id, name and UI URL (those Prefect knows)."""
    from prefect.runtime import flow_run

    url = flow_run.ui_url  # "None/flow-runs/..." when no UI URL is configured
    found = {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
             "prefect.flow_run_url": url if url and str(url).startswith("http") else None}
    return {k: str(v) for k, v in found.items() if v}


def config_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """``dataset`` (the training one), ``eval_dataset`` (the one scored: itself unless a transfer), ``backbone``,
    ``preset``; ``data_subset`` (``curated`` / ``full``) for a dataset with subsets, so a run on COCO-Stuff's
    full 2017 split is never mistaken for one on the paper's lists."""
    data = config["data"]
    tags = {"dataset": str(data["dataset"]), "eval_dataset": str(data.get("eval_dataset") or data["dataset"]),
            "backbone": str(config["embed"]["backbone"]), "preset": str(config.get("preset") or "none")}
    if data.get("subset") is not None:
        tags["data_subset"] = str(data["subset"])
    return tags


# ------------------------------------------------------------------------------------ the run
class RunTracker:
    """One MLflow run, written through ``MlflowClient`` (no global active run: safe beside Prefect).

    Use as a context manager: a clean exit ends the run FINISHED, an exception FAILED (``error``
    tag + ``error.txt``) and re-raises; Ctrl-C ends it KILLED.
    """

    def __init__(self, client: Any, run_id: str, tracking_uri: str) -> None:
        self.client, self.run_id, self.tracking_uri = _ServerGuard(client, tracking_uri), run_id, tracking_uri

    @classmethod
    def start(cls, *, config: Mapping[str, Any], tracking_uri: str, experiment: str, run_name: str | None = None, parent_run_id: str | None = None,
              tags: Mapping[str, str] | None = None) -> RunTracker:
        """Create the experiment if needed, start a run and log the params and the static tags.

        Raises:
            ValueError: an empty experiment name.
            TrackingUnavailable: a tracking server that accepts no connection (see :func:`check_reachable`).
        """
        from mlflow import MlflowClient

        if not experiment or not experiment.strip():
            raise ValueError("tracking: the experiment name is empty; set config `name` or pass --experiment NAME")
        check_reachable(tracking_uri)
        if sqlite_path(tracking_uri) is not None:
            sqlite_path(tracking_uri).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            root = local_artifact_root(tracking_uri)
            location = (root / experiment).as_uri() if root is not None else None
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        all_tags = {**config_tags(config), **git_tags(), **prefect_tags(), **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name or all_tags.get("prefect.flow_run_name"))
        tracker = cls(client, run.info.run_id, tracking_uri)
        tracker.log_batch(params=flatten_params(config), tags=all_tags)
        logger.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, redact(tracking_uri))
        return tracker

    # -- logging
    def log_datasets(self, inputs: Sequence[Any]) -> None:
        """The run's dataset inputs (:func:`split_input`), shown on the run page and searchable by digest."""
        self.client.log_inputs(self.run_id, datasets=list(inputs))

    def log_batch(self, metrics: Sequence[Any] = (), params: Mapping[str, str] | None = None,
                  tags: Mapping[str, str] | None = None) -> None:
        """``MlflowClient.log_batch`` in chunks within MLflow's per-request limits."""
        from mlflow.entities import Param, RunTag

        parts = {"metrics": list(metrics), "params": [Param(k, v) for k, v in (params or {}).items()],
                 "tags": [RunTag(k, redact(str(v))[:VALUE_LIMIT]) for k, v in (tags or {}).items()]}
        for kind, items in parts.items():
            size = BATCH_LIMITS[kind]
            for i in range(0, len(items), size):
                self.client.log_batch(self.run_id, **{kind: items[i:i + size]})

    def log_training(self, head_dir: Path) -> None:
        """Loss curves of the head (``train/<term>`` per step) and the calibrated shifts."""
        now = int(time.time() * 1000)
        history = json.loads((head_dir / "history.json").read_text())
        metrics = history_metrics(history, "train", now)
        loss_info = json.loads((head_dir / "loss.json").read_text()) if (head_dir / "loss.json").exists() else {}
        from mlflow.entities import Metric

        metrics += [Metric(f"train/shift_{pair}", float(v), now, 0) for pair, v in loss_info.get("shifts", {}).items()]
        self.log_batch(metrics)

    def log_probes(self, probe_dirs: Mapping[str, Path]) -> None:
        """Loss curves ``probe/<name>/loss`` of the probes whose folder holds a ``history.json``
        (SGD cluster probes and linear probes; k-means has none)."""
        now = int(time.time() * 1000)
        metrics = []
        for name, folder in probe_dirs.items():
            if (folder / "history.json").exists():
                metrics += history_metrics(json.loads((folder / "history.json").read_text()), f"probe/{name}", now)
        if metrics:
            self.log_batch(metrics)

    def log_result(self, result: Mapping[str, Any], model_files: Iterable[Path],
                   figures: Mapping[str, Any] | None = None) -> None:
        """Final metrics, usage, artifact-key tags and the artifacts (run folder layout + figures)."""
        from tasks.figures import save_png
        from tasks.run_folder import write_model_folder, write_run_info

        self.log_batch(result_metrics(result, int(time.time() * 1000)),
                       tags={**{f"artifact.{name}": key for name, key in result["artifacts"].items()},
                             **({"cluster_code": result["cluster_code"]["chosen"]} if result.get("cluster_code") else {})})
        with tempfile.TemporaryDirectory(prefix="stego-mlflow-") as tmp:
            folder, extra = Path(tmp) / "run", Path(tmp) / "extra"  # the run folder (also the model's), the rest
            write_model_folder(folder, result, model_files)
            write_run_info(extra, result)
            for name, fig in (figures or {}).items():
                save_png(fig, extra / "figures" / f"{name}.png")
            for part in (folder, extra):
                self.client.log_artifacts(self.run_id, str(part))
            self.log_model(folder)

    def log_model(self, run_folder: Path) -> str | None:
        """The run's MLflow model (:func:`tasks.registry.log_model`) from ``run_folder``; its id, tag
        ``mlflow_model.id`` and metric ``usage/mlflow_model/wall_s``. A failure is a warning and the tag
        ``mlflow_model.error``, never a failed run (the run's files are logged already); ``None`` then."""
        from tasks.registry import log_model

        started = time.perf_counter()
        try:
            model_id = log_model(self.client, self.run_id, run_folder)
        except TrackingUnavailable:
            raise
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}")[:VALUE_LIMIT]
            logger.warning("MLflow run %s: could not log its MLflow model (%s); the run's files are logged, "
                           "`stego predict --run %s` still works, `stego register` will not", self.run_id, message,
                           self.run_id, exc_info=logger.isEnabledFor(logging.DEBUG))
            try:
                self.client.set_tag(self.run_id, "mlflow_model.error", message)
            except TrackingUnavailable:
                raise
            except Exception:
                pass
            return None
        from mlflow.entities import Metric

        seconds = time.perf_counter() - started
        self.log_batch([Metric("usage/mlflow_model/wall_s", seconds, int(time.time() * 1000), 0)],
                       tags={"mlflow_model.id": model_id})
        return model_id

    def log_bad_files(self, bad_files: Sequence[Mapping[str, str]]) -> None:
        """Files left out under ``data.bad_files=skip``: tag ``bad_files=<count>`` and the artifact
        ``bad_files.json`` (``[{"file", "reason", "split"}, ...]``)."""
        self.client.set_tag(self.run_id, "bad_files", str(len(bad_files)))
        self.client.log_text(self.run_id, json.dumps(list(bad_files), indent=1, ensure_ascii=False), "bad_files.json")

    def log_sweep(self, summary: Mapping[str, Any]) -> None:
        """A sweep's parent run: ``<child label>.<method>.{accuracy,mIoU}`` per finished child, the
        ``sweep.json`` summary, and tags ``sweep.completed`` / ``sweep.failed`` (counts)."""
        now = int(time.time() * 1000)
        from mlflow.entities import Metric

        metrics = [Metric(metric_key(child["label"], method, name), float(m[name]), now, 0)
                   for child in summary["children"] for method, m in (child.get("metrics") or {}).items()
                   for name in ("accuracy", "mIoU") if m.get(name) is not None]
        states = [child["state"] for child in summary["children"]]
        self.log_batch(metrics, tags={"sweep.completed": states.count("Completed"),
                                      "sweep.failed": len(states) - states.count("Completed")})
        self.client.log_text(self.run_id, redact(json.dumps(summary, indent=1)), "sweep.json")

    def log_report(self, texts: Mapping[str, str], figures: Mapping[str, Any] | None = None) -> None:
        """Text artifacts (``{file name: content}``, e.g. a table) and figures (``figures/<name>.png``)."""
        from tasks.figures import save_png

        for name, text in texts.items():
            self.client.log_text(self.run_id, text, name)
        with tempfile.TemporaryDirectory(prefix="stego-mlflow-") as tmp:
            for name, fig in (figures or {}).items():
                save_png(fig, Path(tmp) / "figures" / f"{name}.png")
            if figures:
                self.client.log_artifacts(self.run_id, tmp)

    # -- ending
    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.client.set_terminated(self.run_id, "FINISHED")
        elif isinstance(exc, KeyboardInterrupt):
            self.client.set_terminated(self.run_id, "KILLED")
        else:
            self.fail(exc)
        return False

    def fail(self, exc: BaseException) -> None:
        """Tag the error, attach the traceback, end the run FAILED (never masks ``exc``)."""
        try:
            self.client.set_tag(self.run_id, "error", redact(f"{type(exc).__name__}: {exc}")[:VALUE_LIMIT])
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text(redact("".join(traceback.format_exception(exc))))
                self.client.log_artifact(self.run_id, str(path))
        except Exception:  # the original failure matters more than its record
            logger.warning("could not record the failure of MLflow run %s", self.run_id, exc_info=True)
        try:
            self.client.set_terminated(self.run_id, "FAILED")
        except Exception as err:  # e.g. the server is gone: the run stays RUNNING there; exc is what matters
            logger.warning("could not end MLflow run %s as FAILED: %s", self.run_id, err)


class _ServerGuard:
    """An ``MlflowClient`` whose calls, once the tracking server stops answering, raise
    :class:`TrackingUnavailable` (at once, without MLflow's minutes of retries, for every later call)
    with what to do, instead of MLflow's exception; other errors pass unchanged."""

    def __init__(self, client: Any, tracking_uri: str) -> None:
        self._client, self._uri, self._down = client, tracking_uri, None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._down is not None:
                raise self._down
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                try:
                    check_reachable(self._uri)
                except TrackingUnavailable:
                    self._down = TrackingUnavailable(
                        f"the MLflow tracking server {redact(self._uri)} stopped answering during the run "
                        f"({type(exc).__name__} in {name}); start it again and rerun: the finished stages are "
                        "reused from the artifact cache (or rerun with --no-tracking)")
                    raise self._down from None
                raise
        return call


class NullTracker:
    """Tracking switched off: the same calls, doing nothing."""

    run_id = None
    tracking_uri = None

    def log_training(self, *args: Any, **kwargs: Any) -> None: ...
    def log_datasets(self, *args: Any, **kwargs: Any) -> None: ...
    def log_probes(self, *args: Any, **kwargs: Any) -> None: ...
    def log_result(self, *args: Any, **kwargs: Any) -> None: ...
    def log_sweep(self, *args: Any, **kwargs: Any) -> None: ...
    def log_bad_files(self, *args: Any, **kwargs: Any) -> None: ...
    def log_report(self, *args: Any, **kwargs: Any) -> None: ...

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


def split_input(context: str, name: str, samples: Sequence[Any], profile: Mapping[str, Any] | None = None) -> Any:
    """An MLflow ``DatasetInput`` for a split: ``name`` (``camvid/train``), source = the folder holding its
    images (a ``local`` source), digest = :func:`~stego_core.digest.listing_digest` of its images and labels,
    profile = ``num_images``, ``num_labelled`` and ``profile``; tag ``mlflow.data.context`` = ``context``
    (``training`` / ``evaluation``)."""
    import os

    from mlflow.entities import Dataset, DatasetInput, InputTag

    from stego_core.digest import listing_digest

    images = [str(s.image) for s in samples]
    root = os.path.commonpath(images) if len(images) > 1 else str(Path(images[0]).parent) if images else ""
    files = [p for s in samples for p in (s.image, s.label)]
    digest = listing_digest(files, root) if images else "empty"
    stats = {"num_images": len(samples), "num_labelled": sum(s.label is not None for s in samples), **(profile or {})}
    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": root}),
                      profile=json.dumps(stats))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])


def dataset_inputs(config: Mapping[str, Any], train_samples: Sequence[Any], eval_samples: Sequence[Any]) -> list:
    """The training and evaluation splits of ``config`` (a resolved experiment config as JSON) as
    :func:`split_input` records: ``<dataset>/<split>`` (a folder dataset: ``folder/train``, ``folder/eval``)."""
    data = config["data"]
    out = []
    for context, role, samples in (("training", "train", train_samples), ("evaluation", "eval", eval_samples)):
        dataset = data["dataset"] if role == "train" else (data.get("eval_dataset") or data["dataset"])
        split = role if dataset == "folder" else data[f"{role}_split"]
        subset = data.get("subset") if dataset == data["dataset"] else None
        profile = {"dataset": dataset, "split": split, "limit": data[f"{role}_limit"],
                   **({"subset": subset} if subset else {})}
        out.append(split_input(context, f"{dataset}/{split}", samples, profile))
    return out


# ------------------------------------------------------------------------ reading a run back
def parse_run_ref(ref: str) -> str | None:
    """The run id in ``runs:/<id>[/...]`` or a bare 32-hex id; ``None`` for anything else (a folder)."""
    text = ref.strip()
    if text.startswith("runs:/"):
        text = text.removeprefix("runs:/").strip("/").split("/")[0]
        if not RUN_ID.match(text):
            raise ValueError(f"--run {ref!r}: expected runs:/<32-hex run id>; copy the id from `stego compare` or the MLflow UI")
        return text
    return text if RUN_ID.match(text) else None


def download_run(run_id: str, *, tracking_uri: str, cache_root: str | Path) -> Path:
    """Fetch a run's ``metrics.json`` and ``model/`` into ``<cache_root>/<run_id>`` (a run folder,
    reused when complete) and return that folder.

    Raises:
        FileNotFoundError: the run has no model artifacts (it failed, or ran with tracking off).
    """
    import mlflow

    folder = Path(cache_root) / run_id
    if (folder / "metrics.json").exists() and (folder / "model" / "head.safetensors").exists():
        return folder
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=cache_root))  # filled, then renamed: no half runs
    try:
        for path in ("metrics.json", "model"):
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(tmp), tracking_uri=tracking_uri)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileNotFoundError(f"MLflow run {run_id} at {tracking_uri} has no metrics.json + model/ artifacts ({exc}); "
                                "pick a FINISHED run from `stego compare`") from exc
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


# ------------------------------------------------------------------------------ local server
def server_command(backend_uri: str, artifacts_dir: str | Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """``mlflow server`` with one worker on ``host:port`` (lean: ~2 processes, ~0.5 GB)."""
    import sys

    mlflow_bin = Path(sys.executable).with_name("mlflow")
    return [str(mlflow_bin), "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
            str(artifacts_dir), "--host", host, "--port", str(port), "--workers", "1"]


def server_env() -> dict[str, str]:
    """The environment for :func:`server_command`: job execution off (no extra worker processes)."""
    import os

    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
