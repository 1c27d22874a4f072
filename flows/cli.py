"""The ``stego`` command line: parse, build the config, call one function, exit with its status."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup


class GuardedGroup(TyperGroup):
    """The top-level command group: every command's failures go through :func:`flows.errors.report`
    (expected: one line, exit 2; a bug: one line + the log file holding the traceback, exit 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exit codes, Ctrl-C, usage errors
            raise
        except KeyboardInterrupt:
            typer.secho("interrupted", fg=typer.colors.RED, err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            from flows.errors import DEBUG_ENV, report

            debug = bool(ctx.params.get("debug")) or os.environ.get(DEBUG_ENV) == "1"
            code, text = report(exc, debug=debug)
            typer.secho(text, fg=typer.colors.RED, err=True)
            raise typer.Exit(code) from None


app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True,
                  help="STEGO unsupervised semantic segmentation.")


@app.callback()
def options(debug: bool = typer.Option(False, "--debug", help="on an error, print the full traceback too "
                                       "(also STEGO_DEBUG=1); by default it goes to a log file under $STEGO_HOME/logs")) -> None:
    """STEGO unsupervised semantic segmentation."""
    if debug:
        from flows.errors import DEBUG_ENV

        os.environ[DEBUG_ENV] = "1"  # so do the tracebacks that libraries log on the way


def metrics_table(metrics: dict) -> str:
    lines = [f"{'method':<20} {'accuracy':>9} {'mIoU':>7}", "-" * 38]
    for name, m in metrics.items():
        lines.append(f"{name:<20} {100 * m['accuracy']:>8.1f}% {100 * m['mIoU']:>6.1f}%")
    return "\n".join(lines)


def usage_table(result: dict) -> str:
    lines = [f"{'stage':<28} {'wall s':>8} {'peak RSS MB':>12}", "-" * 50]
    for name, cached in result["cached"].items():
        u = result["usage"].get(name)
        lines.append(f"{name:<28} {'cached':>8} {'':>12}" if cached or not u else
                     f"{name:<28} {u['wall_s']:>8.1f} {u['peak_rss_mb']:>12.0f}")
    return "\n".join(lines)


@app.command()
def run(
    preset: Optional[str] = typer.Option(None, help="named preset (see `stego presets`)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.steps=500 (repeatable)"),
    data_root: Optional[Path] = typer.Option(None, help="data root (default: $STEGO_DATA_ROOT)"),
    output: Path = typer.Option(Path("runs/latest"), help="run folder: metrics.json and the model files"),
    artifact_root: Optional[str] = typer.Option(None, help="artifact cache (default: $STEGO_HOME/artifacts)"),
    tracking: bool = typer.Option(True, "--tracking/--no-tracking", help="record the run in MLflow"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: the config's name)"),
    tracking_fallback: bool = typer.Option(False, "--tracking-fallback", help="if the tracking server cannot be "
                                           "reached, warn and track to $STEGO_HOME/mlflow.db (default: fail at once)"),
    shard_deployment: Optional[str] = typer.Option(None, help="queue the shards of a large split (embed.shard_size) "
                                                   "as runs of this deployment (embed_shard/embed-shard) on the server "
                                                   "at $PREFECT_API_URL, so the gpu pool's workers embed them"),
    register_as: Optional[str] = typer.Option(None, "--register", metavar="NAME", help="register the run's model in "
                                              "MLflow's Model Registry as a new version of NAME (as `stego register`)"),
) -> None:
    """Run the pipeline flow and print the metrics table."""
    from stego_core.presets import build_config

    if register_as and not tracking:
        raise ValueError("--register needs the run tracked in MLflow: drop --no-tracking")

    overrides = list(set_) + ([f"data.data_root={data_root.resolve()}"] if data_root else [])
    cfg = build_config(preset, config, overrides)
    from flows.errors import divert_logged_tracebacks
    from flows.pipeline import resolve_config, stego_pipeline
    from stego_core.validation import preflight

    divert_logged_tracebacks()  # Prefect logs a failing task's traceback: to the log file, not the terminal

    cfg = resolve_config(cfg)
    report = preflight(cfg, progress=True)  # bad files and values fail here, in seconds, before the flow starts
    cfg = report.config  # under data.bad_files=skip: the bad files left out (data.exclude)
    if report.bad_files:
        shown = ", ".join(b.file for b in report.bad_files[:3]) + (", ..." if len(report.bad_files) > 3 else "")
        typer.secho(f"warning: left out {len(report.bad_files)} bad files (data.bad_files=skip): {shown}; "
                    f"reasons in {output / 'bad_files.json'}", fg=typer.colors.YELLOW, err=True)
    if tracking and not tracking_fallback:  # so does a tracking server that does not answer
        from stego_core.home import stego_home
        from tasks.tracking import check_reachable, resolve_tracking_uri

        check_reachable(resolve_tracking_uri(tracking_uri, stego_home()))
    if shard_deployment:
        from flows.deploy import check_server

        check_server()
    result = stego_pipeline(config=cfg, artifact_root=artifact_root, output=str(output), check_inputs=False,
                            tracking=tracking, tracking_uri=tracking_uri, experiment=experiment,
                            tracking_fallback=tracking_fallback, shard_deployment=shard_deployment)
    typer.echo(metrics_table(result["metrics"]))
    typer.echo("\n" + usage_table(result))
    typer.echo(f"\nwrote {output / 'metrics.json'}")
    if result.get("mlflow_run_id"):
        typer.echo(f"MLflow run {result['mlflow_run_id']} ({result['tracking_uri']}); `stego compare` lists it")
    if register_as:
        registered(result["mlflow_run_id"], register_as, tracking_uri=tracking_uri)


def registered(run_id: str, name: str, *, tracking_uri: str | None, alias: str | None = None) -> None:
    """Register run ``run_id``'s model as a new version of ``name`` and say which."""
    from stego_core.home import stego_home
    from tasks.registry import register_run
    from tasks.tracking import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, stego_home())
    check_reachable(uri)
    version = register_run(run_id, name, tracking_uri=uri, alias=alias)
    typer.echo(f"registered model {name!r} version {version.version}{f' (alias {alias!r})' if alias else ''}: "
               f"`stego predict --run models:/{name}/{version.version}`")


@app.command()
def register(
    run_ref: str = typer.Argument(..., metavar="RUN", help="an MLflow run id (32 hex) or runs:/<id>"),
    name: str = typer.Option(..., "--name", help="registered model name; a new version when it exists"),
    alias: Optional[str] = typer.Option(None, help="also point this alias (e.g. champion) at the new version"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
) -> None:
    """Register a tracked run's model in MLflow's Model Registry (then `stego predict --run models:/NAME/VERSION`)."""
    from tasks.tracking import parse_run_ref

    run_id = parse_run_ref(run_ref)
    if run_id is None:
        hint = (" (a run folder has no MLflow model: run with tracking on, or `stego run --register NAME`)"
                if Path(run_ref).exists() else "")
        raise ValueError(f"RUN {run_ref!r} is not an MLflow run id (32 hex) or runs:/<id>{hint}; copy one from "
                         "`stego compare` or the MLflow UI")
    registered(run_id, name, tracking_uri=tracking_uri, alias=alias)


@app.command()
def evaluate(
    pred: Path = typer.Option(..., help="folder of predicted cluster-id PNGs"),
    labels: Path = typer.Option(..., help="folder of label PNGs (matched by file stem)"),
    num_classes: int = typer.Option(..., help="number of classes"),
    ignore_index: int = typer.Option(255, help="void label id"),
    linear: bool = typer.Option(False, help="predictions are class ids already (no Hungarian matching)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON"),
) -> None:
    """Hungarian evaluation of a folder of predictions against a folder of labels."""
    from stego_core.metrics import evaluate_folders

    scores = evaluate_folders(pred, labels, num_classes=num_classes, ignore_index=ignore_index, matched=not linear)
    typer.echo(metrics_table({"predictions": scores}))
    if json_out:
        json_out.write_text(json.dumps(scores, indent=1))


@app.command()
def predict(
    run_ref: str = typer.Option(..., "--run", help="a run folder (`stego run --output`), an MLflow run id / runs:/<id>, "
                                "or a registered model models:/NAME/VERSION / models:/NAME@ALIAS"),
    images: Path = typer.Option(..., help="folder of images to segment"),
    out: Path = typer.Option(..., help="output folder: class-map PNGs, overlays with a legend, class shares (JSON)"),
    crf: bool = typer.Option(False, help="refine with the dense CRF"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store holding the run (default: as `stego run`)"),
) -> None:
    """Segment new images, whole and at their own size, with a finished run (a folder, or a run tracked in MLflow)."""
    from flows.predict import resolve_run_dir
    from stego_core.inference import SUMMARY_FILE, predict_images

    written = predict_images(resolve_run_dir(run_ref, tracking_uri), images, out, use_crf=crf, device=device)
    typer.echo(f"wrote {len(written)} class maps (+ overlays, class shares) to {out}; summary {out / SUMMARY_FILE}")


@app.command()
def compare(
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: all)"),
    filter_: str = typer.Option("", "--filter", help="MLflow filter, e.g. \"params.train.lr = '0.001'\" (back-tick names holding '/')"),
    sort: Optional[str] = typer.Option(None, help="column to sort by, best first (default: the first *.mIoU)"),
    ascending: bool = typer.Option(False, help="sort smallest first"),
    all_metrics: bool = typer.Option(False, help="every metric (per-class IoU, usage, losses), not just accuracy / mIoU"),
    csv: Optional[Path] = typer.Option(None, help="also write the table as CSV"),
    plot: Optional[Path] = typer.Option(None, help="also write a bar chart of the runs' mIoU (PNG)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
) -> None:
    """Tracked runs side by side: the parameters that differ and the metrics."""
    import pandas as pd

    from flows.compare import compare_runs
    from stego_core.home import stego_home
    from tasks.tracking import resolve_tracking_uri

    table = compare_runs(tracking_uri=resolve_tracking_uri(tracking_uri, stego_home()), experiment=experiment,
                         filter_string=filter_, sort=sort, ascending=ascending, all_metrics=all_metrics, csv=csv, plot=plot)
    if table.empty:
        typer.echo("no runs found (run `stego run` first, or check --experiment / --filter / --tracking-uri)")
        return
    shown = table.assign(run_id=table["run_id"].str[:8])
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4f}".format):
        typer.echo(shown.to_string(index=False))
    for path in (csv, plot):
        if path:
            typer.echo(f"wrote {path}")


@app.command()
def ui(
    port: int = typer.Option(5000, help="port on 127.0.0.1"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else $STEGO_HOME/mlflow.db)"),
) -> None:
    """Serve the MLflow UI for the local store on 127.0.0.1 (one worker; Ctrl-C stops it)."""
    import subprocess

    from stego_core.home import stego_home
    from tasks.tracking import local_artifact_root, resolve_tracking_uri, server_command, server_env, sqlite_path

    uri = resolve_tracking_uri(tracking_uri, stego_home())
    if sqlite_path(uri) is None:
        typer.echo(f"runs are tracked on {uri}: open that address in a browser, or pass --tracking-uri sqlite:///FILE")
        return
    sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C stops it)")
    proc = subprocess.Popen(server_command(uri, local_artifact_root(uri), port), env=server_env())
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)


@app.command()
def server(
    port: int = typer.Option(4200, help="port"),
    host: str = typer.Option("127.0.0.1", help="address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it)"),
) -> None:
    """Start a Prefect server (API + UI) with its SQLite database under $PREFECT_HOME; Ctrl-C stops it."""
    from flows.deploy import start_server, stop_process
    from stego_core.home import stego_home

    log = stego_home() / "prefect-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = start_server(port, env=dict(os.environ), log=log, host=host)
    typer.echo(f"Prefect server and UI at http://{host}:{port} (log: {log})\n"
               f"in other shells: export PREFECT_API_URL=http://{host}:{port}/api; stego deploy; stego worker --pool gpu")
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        stop_process(proc)


@app.command()
def deploy(
    prefect_file: Path = typer.Option(None, help="deployments file (default: deployments/prefect.yaml of this project)"),
    name: List[str] = typer.Option([], "--name", help="only this deployment (repeatable; default: all)"),
    result_storage: Optional[str] = typer.Option(None, help="make this path or fsspec URL (s3://bucket/results) the "
                                                 "server's default result storage, shared by all workers"),
) -> None:
    """Register the deployments (and create their work pools) on the server at $PREFECT_API_URL."""
    from flows.deploy import PREFECT_FILE, register

    names = register(prefect_file or PREFECT_FILE, names=list(name), result_storage=result_storage)
    for n in names:
        typer.echo(f"deployed {n}")
    typer.echo("start workers with `stego worker --pool gpu --gpu 0` (one per GPU) and `stego worker --pool cpu`")


@app.command()
def worker(
    pool: str = typer.Option("gpu", help="work pool to serve (created as a process pool if missing)"),
    gpu: Optional[str] = typer.Option(None, help="pin this worker's flow runs to one GPU (sets CUDA_VISIBLE_DEVICES)"),
    limit: int = typer.Option(1, min=1, help="flow runs at once (1 per GPU)"),
    name: Optional[str] = typer.Option(None, help="worker name shown in the UI (default: <pool>-<host>[-gpuN])"),
) -> None:
    """Start a Prefect process worker; it runs the flow runs queued on its pool until Ctrl-C."""
    import socket
    import subprocess

    from flows.deploy import check_server, worker_command, worker_env

    check_server()  # a worker would retry a missing server forever
    worker_name = name or "-".join([pool, socket.gethostname()] + ([f"gpu{gpu}"] if gpu is not None else []))
    typer.echo(f"worker {worker_name} on pool {pool!r} (limit {limit}{', CUDA_VISIBLE_DEVICES=' + gpu if gpu is not None else ''})")
    import signal

    proc = subprocess.Popen(worker_command(pool, limit=limit, name=worker_name), env=worker_env(gpu))
    # `docker stop` / systemd send SIGTERM: pass it on so the worker shuts down cleanly, as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        raise typer.Exit(proc.wait(timeout=60))


@app.command()
def sweep(
    preset: Optional[str] = typer.Option(None, help="named preset the children start from"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file"),
    set_: List[str] = typer.Option([], "--set", help="override of the base config (repeatable)"),
    backbone: List[str] = typer.Option([], "--backbone", help="backbone sweep: one child per backbone (repeatable)"),
    grid: List[str] = typer.Option([], "--grid", help="param sweep: field=v1,v2,... (repeatable; every combination)"),
    dims: Optional[str] = typer.Option(None, "--dims", help="dimension sweep: code dimensions 3,9,27,... each scored "
                                       "beside PCA and a random projection to it"),
    seeds: str = typer.Option("0", "--seeds", help="dimension sweep: seeds, e.g. 0,1,2 (error bars)"),
    artifact_root: Optional[str] = typer.Option(None, help="shared artifact cache (path or fsspec URL)"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: the config's name)"),
    local: bool = typer.Option(False, "--local", help="run the sweep and its children in this process (no server needed)"),
    wait: bool = typer.Option(False, help="wait for the sweep to finish and print its table"),
) -> None:
    """Trigger a backbone or parameter sweep, as the UI's Run button does (or run it here with --local)."""
    import yaml

    from stego_core.presets import ConfigError, build_config

    base = build_config(preset, config, set_)
    if bool(backbone) + bool(grid) + bool(dims) != 1:
        raise ConfigError("give either --backbone NAME (repeatable), --grid field=v1,v2 (repeatable) or --dims 3,9,27")
    kind = "backbone_sweep" if backbone else "dim_sweep" if dims else "param_sweep"
    params: dict = {"config": base.model_dump(mode="json"), "artifact_root": artifact_root, "experiment": experiment}
    if dims:
        from flows.dim_sweep import dim_points

        try:
            params["dims"], params["seeds"] = (yaml.safe_load(f"[{v}]") for v in (dims, seeds))
        except yaml.YAMLError:
            raise ConfigError(f"--dims {dims!r} / --seeds {seeds!r} must be comma-separated numbers, e.g. --dims 3,9,27") from None
        points = dim_points(params["dims"], params["seeds"])
        base = base.model_copy(update={"reduce": base.reduce.model_copy(update={"methods": ("pca", "randproj")})})
    elif backbone:
        params["backbones"] = list(backbone)
    else:
        params["grid"] = {}
        for item in grid:
            key, sep, values = item.partition("=")
            if not sep or not values.strip():
                raise ConfigError(f"--grid {item!r} must look like field=v1,v2, e.g. loss.b_self=0.05,0.1")
            try:
                params["grid"][key.strip()] = yaml.safe_load(f"[{values}]")
            except yaml.YAMLError as exc:
                raise ConfigError(f"--grid {item!r}: the values are not a comma-separated list "
                                  f"({str(exc).splitlines()[0]}); quote them, e.g. --grid 'data.dataset=a,b'") from None
    from flows.errors import divert_logged_tracebacks
    from flows.run_form import backbone_point
    from flows.sweeps import grid_points, sweep_children

    if not dims:
        points = [backbone_point(base, b) for b in backbone] if backbone else grid_points(params["grid"])
    sweep_children(base, points)  # every point checked here, before a server is started or contacted
    divert_logged_tracebacks()
    summary = run_sweep_command(kind, params, local=local, wait=wait)
    if summary is not None:
        typer.echo(sweep_table(summary))
        if summary.get("table"):  # a dimension sweep: mean ± std over seeds per dimension
            from flows.dim_sweep import markdown_table

            typer.echo("\n" + markdown_table(summary["table"]))


def run_sweep_command(kind: str, params: dict, *, local: bool, wait: bool) -> dict | None:
    """Run the sweep flow here (``local``) or trigger its deployment; the summary when it is known."""
    from flows import sweeps
    from flows.deploy import trigger

    from flows.dim_sweep import dim_sweep

    if local:
        flow = {"backbone_sweep": sweeps.backbone_sweep, "dim_sweep": dim_sweep}.get(kind, sweeps.param_sweep)
        return flow(**params, deployment=None)
    deployment = {"backbone_sweep": "backbone_sweep/backbone-sweep", "dim_sweep": "dim_sweep/dim-sweep"}.get(
        kind, "param_sweep/param-sweep")
    run = trigger(deployment, params, wait=wait)
    typer.echo(f"flow run {run.name} ({run.id}) of {deployment}: {run.state.name if run.state else 'scheduled'}")
    if not wait:
        typer.echo("follow it in the Prefect UI (Flow Runs), or rerun with --wait")
        return None
    if not run.state.is_completed():
        raise ValueError(f"the sweep ended {run.state.name}: {run.state.message}")
    return run.state.result()


def sweep_table(summary: dict) -> str:
    """One row per child: its state and the mIoU of each method."""
    methods = sorted({m for c in summary["children"] for m in (c.get("metrics") or {})})
    lines = [f"{'child':<36} {'state':<10} " + " ".join(f"{m:>18}" for m in methods)]
    for c in summary["children"]:
        scores = " ".join(f"{100 * c['metrics'][m]['mIoU']:>17.1f}%" if m in (c.get("metrics") or {}) else f"{'-':>18}"
                          for m in methods)
        lines.append(f"{c['label'][:36]:<36} {c['state']:<10} {scores}")
    return "\n".join(lines)


@app.command()
def presets() -> None:
    """List the shipped presets."""
    from stego_core.presets import list_presets

    for name, desc in list_presets().items():
        typer.echo(f"{name:<22} {desc}")


@app.command()
def backbones() -> None:
    """List the registered backbones."""
    from stego_core.backbones import BACKBONES

    for name, spec in sorted(BACKBONES.items()):
        typer.echo(f"{name:<16} C={spec.embed_dim:<5} patch={spec.patch_size:<3} {spec.weights}")


from flows.data_cli import data_app  # noqa: E402 (the `stego data` commands live in their own module)

app.add_typer(data_app, name="data")

cache_app = typer.Typer(no_args_is_help=True, help="Check and list the artifact cache.")
app.add_typer(cache_app, name="cache")


def cache_store(artifact_root: Optional[str]):
    """The store at ``artifact_root`` (default: $STEGO_HOME/artifacts, as `stego run`); it must exist.

    The default is spelled here rather than imported from flows.pipeline, whose import takes seconds
    (tests/flows/test_cache_cli.py checks the two agree)."""
    from stego_core.home import stego_home
    from tasks.remote_store import RemoteArtifactStore, open_store

    store = open_store(artifact_root or str(stego_home() / "artifacts"))
    if not store.root.is_dir():
        if isinstance(store, RemoteArtifactStore):
            raise FileNotFoundError(f"no local mirror of {store.url} at {store.root}: this machine has"
                                    " not read or written an artifact there yet")
        raise FileNotFoundError(f"no artifact cache at {store.root}: run `stego run` first, or pass"
                                " --artifact-root (the --artifact-root of `stego run`)")
    return store


@cache_app.command("verify")
def cache_verify(
    stage: Optional[str] = typer.Option(None, help="only this stage's artifacts (default: all)"),
    fix: bool = typer.Option(False, "--fix", help="delete the corrupt artifacts, so the next run recomputes them"),
    artifact_root: Optional[str] = typer.Option(None, help="artifact cache (default: $STEGO_HOME/artifacts); "
                                                "for a remote URL, its local mirror is checked"),
) -> None:
    """Re-hash every file of every artifact, ignoring the verified stamps; exit 1 if any is corrupt.

    Opening an artifact re-hashes its files only when their size, mtime or inode changed since they
    were last verified; this catches what that cannot see (bit rot, an edit that kept the mtime).
    """
    import functools
    import time

    from tqdm import tqdm

    from stego_core.budget import human_bytes

    started = time.perf_counter()
    store = cache_store(artifact_root)
    bar = functools.partial(tqdm, desc="verifying", unit="artifact", file=sys.stderr, leave=False,
                            disable=not sys.stderr.isatty())
    report = store.verify_all(stage, fix=fix, progress=bar)
    seconds = time.perf_counter() - started
    bad = [check for check in report if not check.ok]
    for check in bad:
        typer.secho(f"{'removed' if check.removed else 'corrupt'} {check.stage}/{check.key} at {check.path}: "
                    f"{check.reason}", fg=typer.colors.RED)
    hashed = human_bytes(sum(check.bytes_hashed for check in report))
    typer.echo(f"{len(report)} artifact{'' if len(report) == 1 else 's'} checked, {len(bad)} corrupt"
               f"{' (removed: the next run recomputes them)' if fix and bad else ''}; {hashed} hashed in {seconds:.1f} s")
    if bad and not fix:
        typer.echo("run `stego cache verify --fix` to delete them (the next run recomputes them)")
        raise typer.Exit(1)


@cache_app.command("list")
def cache_list(
    stage: Optional[str] = typer.Option(None, help="only this stage's artifacts (default: all)"),
    artifact_root: Optional[str] = typer.Option(None, help="artifact cache (default: $STEGO_HOME/artifacts)"),
) -> None:
    """The artifacts in the cache: stage, key, size and when it was created (from the manifests, not verified)."""
    from stego_core.budget import human_bytes

    entries = cache_store(artifact_root).artifacts(stage)
    width = max([len("stage")] + [len(e.stage) for e in entries])
    typer.echo(f"{'stage':<{width}} {'key':<20} {'size':>10}  created")
    for e in entries:
        size = "?" if e.size is None else human_bytes(e.size)
        typer.echo(f"{e.stage:<{width}} {e.key:<20} {size:>10}  {e.created or '(no valid manifest)'}")
    typer.echo(f"{len(entries)} artifact{'' if len(entries) == 1 else 's'}, {human_bytes(sum(e.size or 0 for e in entries))}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("STEGO_LOG_LEVEL", "WARNING"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # With no server configured Prefect starts a temporary one; its 20 s default is tight on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    app()


if __name__ == "__main__":
    sys.exit(main())
