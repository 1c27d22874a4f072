"""MLflow models of pipeline runs: the ``pyfunc`` each tracked run logs, the Model Registry, ``models:/`` references.

Each tracked run logs one MLflow model named ``stego`` (a *logged model* of the run, MLflow 3), built from
the run folder (``metrics.json`` + ``model/``, the files ``stego predict --run`` reads), holding:

* ``artifacts/run/``: that run folder (head, centroids, linear probe, the config, the metrics with the
  cluster -> class matching);
* ``mlflow_pyfunc.py``: :mod:`tasks.mlflow_pyfunc` (models from code), and ``code/stego_core/``: the
  library as it was when the run was made, so the model loads where this project is not installed;
* a signature (input an ``(H, W, 3)`` uint8 tensor, output ``(H, W)`` uint8, param ``output`` = ``classes`` |
  ``clusters``), ``requirements.txt`` pinned to the versions of this environment, and the config as
  model metadata (``metadata.stego``: backbone, dataset, preset, class names, the whole config).

The backbone's weights are NOT inside the model: it is rebuilt from the config (``embed.backbone``,
``embed.weights``, ``embed.pretrained``) where the model is loaded, as ``stego predict`` does. The model stays a
few MB instead of 85-350 MB per run (every run of a sweep shares the same frozen weights); the price is
that another machine needs the weights: the hub backbones download them on first use into the Hugging Face /
``$STEGO_HOME/weights`` cache (or find them there, offline), and a run trained with ``embed.weights=PATH``
needs that file at the same path (the load fails naming it).

``stego register RUN --name NAME`` adds the run's model to the Model Registry as a new version of ``NAME``;
``stego predict --run models:/NAME/VERSION`` (or ``models:/NAME@ALIAS``) fetches the model into
``$STEGO_HOME/mlflow-models/<model id>`` (once; a version never changes what it points to) and reads its
``artifacts/run`` folder.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODEL_NAME = "stego"  # the logged model's name within its run
RUN_ARTIFACT = "run"  # the pyfunc artifact holding the run folder
PYFUNC_FILE = Path(__file__).with_name("mlflow_pyfunc.py")
LIBRARY_DIR = Path(__file__).resolve().parents[1] / "stego_core"
# The distributions stego_core needs to segment an image (not the orchestration: Prefect, typer, matplotlib).
INFERENCE_DISTRIBUTIONS = ("mlflow", "torch", "torchvision", "timm", "numpy", "scipy", "pillow", "pydantic", "pyyaml",
                           "tqdm", "safetensors", "faiss-cpu", "pydensecrf2", "onnx", "onnxruntime", "fsspec", "psutil")
VERSION_TAGS = ("dataset", "eval_dataset", "backbone", "preset")  # run tags copied onto a registered version
LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
_MODEL_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))?/?$")


# ------------------------------------------------------------------------------------ the model
def pip_requirements() -> list[str]:
    """``<distribution>==<installed version>`` for :data:`INFERENCE_DISTRIBUTIONS` (those installed): written
    as given, so logging a model never runs MLflow's requirement inference (a subprocess that loads the model)."""
    pins = []
    for name in INFERENCE_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={dist_metadata.version(name)}")
        except dist_metadata.PackageNotFoundError:
            continue
    return pins


def model_signature() -> Any:
    """Input one ``(H, W, 3)`` uint8 image, output its ``(H, W)`` uint8 map; param ``output``."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    # Unnamed tensors: MLflow hands a named input to predict as a dict, an unnamed one as the array itself.
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1))]),
                          params=ParamSchema([ParamSpec("output", "string", "classes")]))


def model_metadata(config: Mapping[str, Any], class_names: list[str] | None) -> dict:
    """``{"stego": {...}}``: what the model is (backbone, datasets, preset, classes) and the whole config."""
    data = config["data"]
    return {"stego": {"backbone": config["embed"]["backbone"], "weights": config["embed"].get("weights"),
                      "pretrained": config["embed"].get("pretrained", True), "dataset": data["dataset"],
                      "eval_dataset": data.get("eval_dataset") or data["dataset"], "preset": config.get("preset"),
                      "class_names": class_names, "config": dict(config)}}


def save_model(run_folder: str | Path, path: str | Path, mlflow_model: Any = None) -> None:
    """Write the ``pyfunc`` of ``run_folder`` (``metrics.json`` + ``model/``) to the new folder ``path``."""
    import mlflow.pyfunc

    from stego_core.inference import matching_of

    record = json.loads((Path(run_folder) / "metrics.json").read_text())
    _, names = matching_of(record.get("metrics") or {}, use_crf=False)
    with warnings.catch_warnings():  # the signature is given; an input example would need the backbone to run
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        mlflow.pyfunc.save_model(
            path=str(path), python_model=str(PYFUNC_FILE), artifacts={RUN_ARTIFACT: str(run_folder)},
            code_paths=[str(LIBRARY_DIR)], signature=model_signature(), pip_requirements=pip_requirements(),
            metadata=model_metadata(record["config"], names), model_config={"device": "auto", "crf": False},
            mlflow_model=mlflow_model)
    for cache in Path(path).rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def log_model(client: Any, run_id: str, run_folder: str | Path) -> str:
    """Log the ``pyfunc`` of ``run_folder`` as the logged model ``stego`` of run ``run_id``; its model id.

    Written with ``client`` (no global active run, as :class:`tasks.tracking.RunTracker`): the logged model is
    created, filled, marked READY (FAILED, and re-raised, if filling it fails) and linked as the run's output.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type="segmentation")
    try:
        with tempfile.TemporaryDirectory(prefix="stego-pyfunc-") as tmp:
            local = Path(tmp) / "model"
            save_model(run_folder, local, Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                                run_id=run_id, model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        try:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        except Exception:  # the server may be what failed; the first error is the one that matters
            pass
        raise
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged.model_id


# ------------------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/`` reference: a registered ``name`` with a ``version`` or an ``alias``, or a
    logged model id (``models:/m-<32 hex>``, ``name`` holds it)."""

    text: str
    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def logged_model_id(self) -> str | None:
        return self.name if self.version is None and self.alias is None and LOGGED_MODEL_ID.match(self.name) else None


def parse_model_ref(ref: str) -> ModelRef | None:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/m-<id>``; ``None`` for other references.

    Raises:
        ValueError: a ``models:/`` reference of another shape (no version or alias, a version that is not a number).
    """
    text = ref.strip()
    if not text.startswith("models:/"):
        return None
    m = _MODEL_REF.match(text)
    form = "expected models:/NAME/VERSION (a number) or models:/NAME@ALIAS"
    if m is None:
        raise ValueError(f"--run {ref!r}: {form}")
    parsed = ModelRef(text, m["name"], m["version"], m["alias"])
    if parsed.version is not None and not parsed.version.isdigit():
        raise ValueError(f"--run {ref!r}: version {parsed.version!r} is not a number; {form}")
    if parsed.version is None and parsed.alias is None and parsed.logged_model_id is None:
        raise ValueError(f"--run {ref!r}: no version or alias; {form}")
    return parsed


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def resolve_model(client: Any, ref: ModelRef, where: str) -> tuple[str, str | None]:
    """``(logged model id, registered version or None)`` of ``ref`` in the registry ``where`` (for messages).

    Raises:
        FileNotFoundError: an unknown model name, version, alias or logged model id (the message lists the known ones).
    """
    from mlflow.exceptions import MlflowException

    if ref.logged_model_id:
        try:
            return client.get_logged_model(ref.logged_model_id).model_id, None
        except MlflowException as exc:
            if _missing(exc):
                raise FileNotFoundError(f"{ref.text}: no logged model {ref.name} at {where}") from None
            raise
    try:
        model = client.get_registered_model(ref.name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise FileNotFoundError(f"{ref.text}: no registered model {ref.name!r} at {where}; registered: "
                                f"{', '.join(known) or 'none'} (add one with `stego register RUN --name {ref.name}`)") from None
    try:
        version = (client.get_model_version(ref.name, ref.version) if ref.version is not None
                   else client.get_model_version_by_alias(ref.name, ref.alias))
    except MlflowException as exc:
        if not _missing(exc) and "alias" not in str(exc).lower():
            raise
        if ref.version is not None:
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{ref.name}'"))
            raise FileNotFoundError(f"{ref.text}: model {ref.name!r} has no version {ref.version}; its versions: "
                                    f"{', '.join(map(str, versions)) or 'none'}") from None
        aliases = sorted(getattr(model, "aliases", {}) or {})
        raise FileNotFoundError(f"{ref.text}: model {ref.name!r} has no alias {ref.alias!r}; its aliases: "
                                f"{', '.join(aliases) or 'none'} (set one with `stego register RUN --name "
                                f"{ref.name} --alias {ref.alias}`)") from None
    model_id = version.model_id or _logged_model_in(version.source)
    if model_id is None:
        raise FileNotFoundError(f"{ref.text}: version {version.version} of {ref.name!r} points at {version.source}, "
                                "not at a model logged by `stego run`; register a stego run instead")
    return model_id, version.version


def _logged_model_in(source: str | None) -> str | None:
    text = (source or "").removeprefix("models:/").strip("/")
    return text if LOGGED_MODEL_ID.match(text) else None


def run_model_id(client: Any, run_id: str, where: str) -> str:
    """The id of the ``stego`` model that run ``run_id`` logged.

    Raises:
        FileNotFoundError: no such run, or a run without a logged model (tracked before models were logged, or
            logging it failed: the run's ``mlflow_model.error`` tag says why).
    """
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if _missing(exc):
            raise FileNotFoundError(f"no MLflow run {run_id} at {where}; copy a run id from `stego compare`") from None
        raise
    outputs = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
    models = [m for m in (client.get_logged_model(i) for i in outputs) if m.name == MODEL_NAME]
    if not models:
        why = run.data.tags.get("mlflow_model.error")
        raise FileNotFoundError(f"MLflow run {run_id} has no {MODEL_NAME} model to register"
                                + (f" (logging it failed: {why})" if why else " (a run tracked before runs logged "
                                   "their models, or still running): rerun it with `stego run`"))
    return models[-1].model_id


def register_run(run_id: str, name: str, *, tracking_uri: str, alias: str | None = None) -> Any:
    """Register the model of run ``run_id`` as a new version of ``name`` (created if new); the ``ModelVersion``.
    ``alias`` (e.g. ``champion``) is then pointed at that version.

    Raises:
        FileNotFoundError: see :func:`run_model_id`. ValueError: a name or alias MLflow refuses.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tasks.tracking import redact

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    model_id = run_model_id(client, run_id, redact(tracking_uri))
    tags = {k: v for k, v in client.get_run(run_id).data.tags.items() if k in VERSION_TAGS}
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              tags=tags)
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ValueError(f"--name {name!r}{f' --alias {alias!r}' if alias else ''}: MLflow refused it ({first})") from None
        raise
    return version


def download_model(ref: ModelRef, *, tracking_uri: str, cache_root: str | Path) -> Path:
    """Fetch the model ``ref`` points at into ``<cache_root>/<model id>`` (reused when complete) and return its
    run folder (``artifacts/run``: ``metrics.json`` + ``model/``), which ``stego predict`` reads.

    Raises:
        FileNotFoundError: see :func:`resolve_model`; a model without a run folder.
    """
    import mlflow
    from mlflow import MlflowClient

    from tasks.tracking import redact

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    model_id, _ = resolve_model(client, ref, redact(tracking_uri))
    folder = Path(cache_root) / model_id
    if not (folder / "MLmodel").exists():
        Path(cache_root).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=cache_root))  # filled, then renamed: no half models
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=str(tmp),
                                                tracking_uri=tracking_uri)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return model_run_folder(folder, ref.text)


def model_run_folder(model_dir: Path, what: str) -> Path:
    """The run folder inside a downloaded model (from its ``MLmodel`` file's pyfunc artifacts)."""
    from mlflow.models import Model

    artifacts = Model.load(str(model_dir)).flavors.get("python_function", {}).get("artifacts", {})
    path = (artifacts.get(RUN_ARTIFACT) or {}).get("path")
    if not path or not (model_dir / path / "metrics.json").exists():
        raise FileNotFoundError(f"{what}: the model at {model_dir} holds no run folder (artifacts/{RUN_ARTIFACT}); "
                                "register a model logged by `stego run`")
    return model_dir / path
