"""Register the deployments, start workers, trigger runs: the server side of ``stego deploy``,
``stego worker`` and ``stego sweep``.

Everything here talks to the Prefect server named by ``PREFECT_API_URL`` (or the active profile).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
RESULTS_BLOCK = "stego-results"


def prefect_bin() -> str:
    """The ``prefect`` executable of this interpreter's environment."""
    return str(Path(sys.executable).with_name("prefect"))


def api_url() -> str:
    """The configured server's API URL; a clear error when there is none (deployments need one)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ValueError("no Prefect server is configured: start one (`prefect server start`, or the compose file in "
                         "docker/) and set PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api")
    return url


def check_server() -> str:
    """``api_url()`` after a health check, so a wrong URL fails here and not inside ``prefect deploy``."""
    from prefect.client.orchestration import get_client

    url = api_url()
    with get_client(sync_client=True) as client:
        try:
            failed = client.api_healthcheck()
        except Exception as exc:  # connection refused, DNS, TLS...
            failed = exc
    if failed is not None:
        raise ConnectionError(f"the Prefect server at {url} does not answer ({failed}); is it running?")
    return url


def read_deployments(prefect_file: Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments:`` entries of a prefect.yaml."""
    try:
        data = yaml.safe_load(Path(prefect_file).read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{prefect_file} does not exist; pass --prefect-file PATH") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{prefect_file} is not valid YAML: {exc}") from None
    entries = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{prefect_file} declares no deployments (expected a `deployments:` list)")
    return entries


def ensure_work_pools(names: list[str]) -> list[str]:
    """Create each named work pool as a process pool when missing; returns the ones created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in dict.fromkeys(names):
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                created.append(name)
    return created


def set_result_storage(url: str) -> str:
    """Save ``url`` (a path or any fsspec URL) as the ``stego-results`` storage block and make it the
    server's default result storage, so every worker persists flow and task results there (a sweep
    then reads its children's results wherever they ran). Returns the block's slug."""
    from prefect.client.orchestration import get_client
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    if "://" in url and not url.startswith("file://"):
        block = RemoteFileSystem(basepath=url.rstrip("/"))
    else:
        path = Path(url.removeprefix("file://")).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        block = LocalFileSystem(basepath=str(path))
    block_id = block.save(RESULTS_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        client.update_server_default_result_storage(block_id)
    return f"{block.get_block_type_slug()}/{RESULTS_BLOCK}"


def register(prefect_file: Path = PREFECT_FILE, names: list[str] | None = None, project_dir: Path = PROJECT_DIR,
             result_storage: str | None = None) -> list[str]:
    """Create the work pools, optionally set the result storage, and run ``prefect deploy`` for all
    (or the named) deployments of ``prefect_file`` from ``project_dir``, where workers will load
    the flows from. Returns the registered deployment names ``<flow>/<deployment>``.

    Raises:
        ValueError / ConnectionError: no server, a bad file, an unknown deployment name.
        RuntimeError: ``prefect deploy`` failed (its output is in the message).
    """
    entries = read_deployments(prefect_file)  # a bad file fails before the server is asked
    check_server()
    known = [e["name"] for e in entries]
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise ValueError(f"unknown deployment(s) {unknown}; {prefect_file} declares {known}")
    chosen = [e for e in entries if not names or e["name"] in names]
    ensure_work_pools([e["work_pool"]["name"] for e in chosen if e.get("work_pool")])
    if result_storage:
        set_result_storage(result_storage)
    args = [prefect_bin(), "--no-prompt", "deploy", "--prefect-file", str(Path(prefect_file).resolve())]
    args += ["--all"] if not names else [f"--name={n}" for n in names]
    done = subprocess.run(args, cwd=project_dir, capture_output=True, text=True, env={**os.environ, "PREFECT_CLI_WRAP_LINES": "false"})
    if done.returncode != 0:
        raise RuntimeError(f"`prefect deploy` failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return registered_names(chosen, project_dir)


def registered_names(entries: list[dict[str, Any]], project_dir: Path) -> list[str]:
    """``<flow name>/<deployment name>`` of each entry (the flow name read from its entrypoint)."""
    from prefect.flows import load_flow_from_entrypoint

    out = []
    for entry in entries:
        path, func = entry["entrypoint"].rsplit(":", 1)
        flow = load_flow_from_entrypoint(f"{Path(project_dir) / path}:{func}")
        out.append(f"{flow.name}/{entry['name']}")
    return out


def worker_command(pool: str, *, limit: int | None = 1, name: str | None = None) -> list[str]:
    """``prefect worker start`` for a process worker on ``pool`` (created if missing)."""
    args = [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"]
    if limit is not None:
        args += ["--limit", str(limit)]
    if name:
        args += ["--name", name]
    return args


def worker_env(gpu: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment (inherited by every flow run it starts); ``gpu`` pins the device
    with ``CUDA_VISIBLE_DEVICES`` (so ``cuda`` in a flow means that GPU)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def trigger(deployment: str, parameters: dict[str, Any], *, wait: bool = False, timeout_s: float | None = None) -> Any:
    """Create a flow run of ``deployment`` (what the UI's Run button does) and return it; with
    ``wait``, poll until it is final."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    check_server()
    try:
        return run_deployment(deployment, parameters=parameters, timeout=(timeout_s if wait else 0), as_subflow=False)
    except ObjectNotFound:
        raise ValueError(f"deployment {deployment!r} is not on the server at {api_url()}; run `stego deploy`") from None


def queue_run(deployment: str, parameters: dict[str, Any], *, name: str, tags: list[str], hint: str = "") -> Any:
    """Queue one flow run of ``deployment`` (linked to the calling flow run, as a child) without waiting.

    Raises:
        ValueError: the deployment is not registered on the server (``hint`` says what else to do).
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        return run_deployment(deployment, parameters=parameters, timeout=0, flow_run_name=name, tags=tags)
    except ObjectNotFound:
        raise ValueError(f"deployment {deployment!r} is not on the Prefect server; register it with `stego deploy`"
                         + (f", {hint}" if hint else "")) from None


def wait_for_runs(run_ids: list[Any], *, timeout_s: float | None = None, poll_s: float = 5.0,
                  on_final: Any = None, what: str = "flow runs") -> dict[str, Any]:
    """Poll the server until every flow run in ``run_ids`` is final; ``on_final(run)`` is called once for
    each as it ends. Returns ``{str(id): run}``.

    Raises:
        TimeoutError: some runs are not final after ``timeout_s`` (they keep running); the message lists them.
    """
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s if timeout_s else None
    done: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        pending = [str(r) for r in run_ids]
        while pending:
            for run_id in list(pending):
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    pending.remove(run_id)
                    done[run_id] = run
                    if on_final is not None:
                        on_final(run)
            if pending and deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} {what} still running after {timeout_s:.0f} s: {', '.join(pending)}")
            if pending:
                time.sleep(poll_s)
    return done


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(port: int, *, env: dict[str, str], log: Path, host: str = "127.0.0.1",
                 timeout_s: float = 180) -> subprocess.Popen:
    """``prefect server start`` on ``host:port`` (127.0.0.1 unless told otherwise), its UI pointed at
    that address; returns once ``/api/health`` answers.

    Raises:
        RuntimeError: the server exited (its log tail is in the message).
        TimeoutError: not healthy within ``timeout_s``.
    """
    import time
    import urllib.request

    url = f"http://{host}:{port}/api"
    env = {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": url}
    proc = subprocess.Popen([prefect_bin(), "server", "start", "--host", host, "--port", str(port)], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise TimeoutError(f"prefect server on {url} not healthy after {timeout_s} s:\n{Path(log).read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Terminate, then kill if it does not exit in ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drain_event_workers(timeout_s: float = 30) -> None:
    """Send and stop this process's Prefect event workers. One worker serves every event of a process and
    keeps the API URL it started with, so one started while this process talked to a server that is now
    stopping would send all later events (a later flow's task runs) to a dead address."""
    if "prefect.events.worker" in sys.modules:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout_s)


class LocalCluster:
    """A Prefect server on 127.0.0.1, the deployments registered, and process workers: the whole
    scale-out path on one machine (the end-to-end tests, ``bench/ui_screenshot.py``, ``bench/queue_load.py``).

    ``workers`` maps a pool to its concurrency limit, ``replicas`` to its number of worker processes
    (default 1: one worker per pool); ``env`` is the environment of every process (give it its own
    ``PREFECT_HOME``, ``STEGO_HOME``, ``MLFLOW_TRACKING_URI``). Logs go to ``logs/``.
    """

    def __init__(self, base: Path, env: dict[str, str], workers: dict[str, int] | None = None,
                 deployments: list[str] | None = None, result_storage: str | None = None,
                 replicas: dict[str, int] | None = None) -> None:
        self.base, self.port = Path(base), free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {**env, "PREFECT_HOME": env.get("PREFECT_HOME", str(self.base / "prefect")), "PREFECT_API_URL": self.url,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2"}
        self.env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
        self.workers, self.deployments, self.result_storage = workers or {}, deployments, result_storage
        self.replicas = replicas or {}
        self.logs = self.base / "logs"
        self.procs: list[subprocess.Popen] = []
        self.deploy_output = ""

    def __enter__(self) -> LocalCluster:
        self.logs.mkdir(parents=True, exist_ok=True)
        stego = str(Path(sys.executable).with_name("stego"))
        try:
            self.procs.append(start_server(self.port, env=self.env, log=self.logs / "server.log"))
            args = [stego, "deploy"] + [f"--name={n}" for n in self.deployments or []]
            args += ["--result-storage", self.result_storage] if self.result_storage else []
            done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"stego deploy failed:\n{done.stdout}\n{done.stderr}")
            self.deploy_output = done.stdout
            for pool, limit in self.workers.items():
                for i in range(self.replicas.get(pool, 1)):
                    name = f"{pool}-local" + (f"-{i}" if self.replicas.get(pool, 1) > 1 else "")
                    log = open(self.logs / f"worker-{name}.log", "w")
                    self.procs.append(subprocess.Popen([stego, "worker", "--pool", pool, "--limit", str(limit), "--name", name],
                                                       env=self.env, stdout=log, stderr=subprocess.STDOUT))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        drain_event_workers()
        procs = list(reversed(self.procs))
        for proc in procs:  # signal every process first, so their shutdowns overlap instead of queueing
            proc.terminate()
        for proc in procs:
            stop_process(proc)
        self.procs.clear()

    def logs_tail(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.logs.glob("*.log")))
