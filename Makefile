# gp-serve: export a BoTorch SingleTaskGP posterior to TorchScript and serve it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
COMPAT_VENV := .venv-botorch012
TORCH215_VENV := .venv-torch215
PY := $(VENV)/bin/python
# The one command (gp_serve/cli.py), installed into the venv by `make install`.
GP_SERVE := $(VENV)/bin/gp-serve
MODEL_DIR := build/model

.PHONY: install install-compat install-torch215 lock test test-fast test-sweep lint export

# --- environments: uv venvs synced to the lock files (docs/testing.md, "Environments") ---
# Each venv holds exactly one lock (requirements*.txt, compiled by `make lock` from
# requirements/*.in), then this checkout editable with --no-deps.
UV := .uv/bin/uv
# Where uv looks: what pip is configured with here (find-links, extra indexes: torch's CPU build
# lies there), else PyTorch's CPU index beside PyPI (.ci/uv_sources.py; read once per make).
UV_SOURCES := $(shell $(PYTHON) .ci/uv_sources.py)
# What a CPU never loads of torch 2.15.0's CUDA build (requirements/torch215.in says why).
TORCH215_SKIP := triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-nvtx nvidia-cuda-cccl

# (uv itself, with pip, into .uv/; inside each recipe, not as a prerequisite: a venv marked as
# installed, as in the Docker build, needs no uv)
GET_UV = test -x $(UV) || $(PYTHON) -m pip install --quiet --target .uv -r requirements-uv.txt

# $(call SYNC,venv,lock): the venv holds exactly the lock's packages, then this checkout editable.
define SYNC
	$(GET_UV)
	test -x $(1)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(1)
	$(UV) pip sync --quiet --python $(1)/bin/python $(UV_SOURCES) $(2)
	$(UV) pip install --quiet --python $(1)/bin/python --no-deps --editable .
	touch $(1)/.installed
endef

## install: create .venv, the pinned stack with the test, benchmark and lint tools
## (requirements-dev.txt; idempotent)
install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	$(call SYNC,$(VENV),requirements-dev.txt)

## install-compat: create .venv-botorch012 (BoTorch 0.12.0, the oldest supported)
install-compat: $(COMPAT_VENV)/.installed

$(COMPAT_VENV)/.installed: requirements-botorch012.txt pyproject.toml
	$(call SYNC,$(COMPAT_VENV),requirements-botorch012.txt)

## install-torch215: create .venv-torch215 (torch 2.15.0, the newest, with BoTorch 0.18.1)
install-torch215: $(TORCH215_VENV)/.installed

$(TORCH215_VENV)/.installed: requirements-torch215.txt pyproject.toml
	$(call SYNC,$(TORCH215_VENV),requirements-torch215.txt)
	$(TORCH215_VENV)/bin/python -W ignore -c "import torch, botorch"  # all of torch's libraries load

# $(call COMPILE,in,lock[,extra args]): resolve requirements/<in>.in into the lock <lock>,
# keeping the lock's current versions where they still fit (uv's preference for the output file).
define COMPILE
	$(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  $(UV_SOURCES) requirements/$(1).in -o $(2) $(3)
endef

## lock: recompile the lock files from requirements/*.in (after changing a pin there)
lock:
	$(GET_UV)
	$(call COMPILE,serve,requirements-serve.txt)
	$(call COMPILE,main,requirements.txt)
	$(call COMPILE,dev,requirements-dev.txt)
	$(call COMPILE,botorch012,requirements-botorch012.txt)
	$(call COMPILE,torch215,requirements-torch215.txt,$(TORCH215_SKIP:%=--no-emit-package %))
	$(call COMPILE,user-botorch016,requirements-user-botorch016.txt)

## export: fit and export the default model (BraninCurrin) to build/model
export: $(MODEL_DIR)/posterior.pt

$(MODEL_DIR)/posterior.pt: $(wildcard export/*.py) | install
	$(GP_SERVE) export --out $(MODEL_DIR)

## lint: ruff (lint rules and the formatter's check) and mypy, configured in pyproject.toml
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) .ci/typecheck.py

## test-fast: the unit tiers only (no server, no Docker, nothing marked slow; pytest.ini's
## markers): under 2 minutes
test-fast: install
	$(PY) -m pytest -q -m "not server and not docker and not slow and not sweep" tests

## test-sweep: the sweeps' long tail that `make test` leaves out (pytest.ini's `sweep` marker:
## more cases of what it covers once per kind), in .venv and on torch 2.15.0
test-sweep: install install-torch215
	$(PY) -m pytest -m sweep tests
	$(TORCH215_VENV)/bin/python -m pytest -m sweep tests/export

## test: lint, then the whole suite (pinned stack), then the export tests on BoTorch 0.12.0 and
## on torch 2.15.0
test: lint install-compat install-onnx-example install-torch215
	$(PY) -m pytest --durations=25 tests
	$(COMPAT_VENV)/bin/python -m pytest tests/export
	$(TORCH215_VENV)/bin/python -m pytest tests/export

# --- benchmarks ---
.PHONY: bench install-bench

# (the benchmarks' packages are in .venv's lock)
install-bench: install

## bench: regenerate benchmarks/results/ (raw JSON, README.md tables, PNG plots): in-process
## traced vs eager, BoTorch's MTMVN assembly, HTTP vs echo vs a FastAPI peer, one worker's
## capacity, the artifact formats (TorchScript, pt2, ONNX), the frontend at every limit at once,
## large training sets (N up to 10,000; needs ~10 GB); not part of `make test` (about 25 min)
bench: install-bench export archive
	$(PY) -m benchmarks.inprocess --out benchmarks/results/raw
	$(PY) -m benchmarks.batch_mvn --out benchmarks/results/raw
	$(PY) -m benchmarks.http --out benchmarks/results/raw
	$(PY) -m benchmarks.columnar --model-dir $(MODEL_DIR) --out benchmarks/results/raw
	$(PY) -m benchmarks.capacity --out benchmarks/results/raw
	$(PY) -m benchmarks.formats --out benchmarks/results/raw
	$(PY) -m benchmarks.products --model-dir $(MODEL_DIR) --out benchmarks/results/raw
	$(PY) -m benchmarks.frontend_memory --model-dir $(MODEL_DIR) --out benchmarks/results/raw
	$(PY) -m benchmarks.scale --out benchmarks/results/raw
	$(PY) -m benchmarks.report --raw benchmarks/results/raw --out benchmarks/results

# --- serving ---
MAR := model_store/gp.mar
SERVE_LOGS := logs
SOAK_SECONDS ?= 300
# Which models of model_store `make serve|start` serve: comma-separated names (default: every
# <name>.mar there, i.e. gp after `make archive`).
MODELS ?=

.PHONY: archive serve start stop predict token soak

## archive: package the exported model and the handler into model_store/gp.mar
archive: $(MAR)

# The recipe (torch-model-archiver's arguments) is serving/archive.py's, shared with the tests.
$(MAR): $(MODEL_DIR)/posterior.pt $(MODEL_DIR)/metadata.json $(wildcard handler/*.py handler/*/*.py gp_serve/*.py) handler/model-config.yaml serving/archive.py | install
	$(GP_SERVE) archive --model-dir $(MODEL_DIR) --store model_store

$(MODEL_DIR)/metadata.json: $(MODEL_DIR)/posterior.pt

SERVE_MODELS = $(if $(MODELS),--models $(MODELS))

## serve: install, export and archive if needed, run TorchServe in the foreground (Ctrl-C stops it)
## on every model of model_store (MODELS=a,b: those)
serve: archive
	$(GP_SERVE) serve --workdir $(SERVE_LOGS) $(SERVE_MODELS)

## start: run TorchServe in the background; returns once every model answers a prediction
start: archive
	$(GP_SERVE) start --workdir $(SERVE_LOGS) $(SERVE_MODELS)

## stop: stop the TorchServe started by `make start`
stop:
	$(GP_SERVE) stop --workdir $(SERVE_LOGS)

## predict: send a sample request to the running server (address from config.properties, the
## inference key from its key file)
predict:
	curl -sS --fail-with-body "$$($(PY) -m gp_serve.serving.properties inference /predictions/gp)" \
	  -H "Authorization: Bearer $$($(GP_SERVE) token --workdir $(SERVE_LOGS))" \
	  -H 'Content-Type: application/json' \
	  -d '{"inputs": [[0.2, 0.4], [0.6, 0.8]], "covariance": "full"}'
	@echo

## token: print the running server's inference key (TorchServe's key file in $(SERVE_LOGS)/)
token:
	@$(GP_SERVE) token --workdir $(SERVE_LOGS)

## soak: 16 loopback clients of mixed sizes and modes for SOAK_SECONDS (default 300) against
## a fresh TorchServe; prints requests, errors, p50/p99 and worker RSS growth
soak: archive
	$(GP_SERVE) soak --seconds $(SOAK_SECONDS) --model-dir $(MODEL_DIR)

.PHONY: update

## update: serve MODEL_DIR (default build/model) as the next version of the model `make start`
## runs, with no failed request: register, verify, set default, drain and unregister the old
## (docs/serving.md, "Model updates")
update: | install
	$(GP_SERVE) update --model-dir $(MODEL_DIR) --workdir $(SERVE_LOGS)

# --- docker ---
DOCKER_IMAGE ?= gp-serve:latest

.PHONY: docker-engine docker-image docker-test

## docker-engine: make sure a Docker engine answers (installs docker.io, starts dockerd without a bridge)
docker-engine:
	docker/engine.sh

## docker-image: build $(DOCKER_IMAGE) (engine, local base if BASE_IMAGE can't be pulled, wheelhouse)
docker-image:
	IMAGE=$(DOCKER_IMAGE) docker/build.sh

## docker-test: only the Docker tier (builds the image, runs it on the host network)
docker-test: install
	$(PY) -m pytest -m docker tests/docker

# --- KServe ---
KSERVE_LAYOUT ?= build/kserve-layout

.PHONY: kserve-layout

## kserve-layout: write the storage layout KServe mounts at /mnt/models (config/config.properties,
## model-store/gp.mar) to KSERVE_LAYOUT (default build/kserve-layout); see deploy/kserve/
kserve-layout: archive
	$(GP_SERVE) kserve-layout --mar $(MAR) --out $(KSERVE_LAYOUT)

# --- the standalone ONNX example ---
ONNX_VENV := .venv-onnx

.PHONY: install-onnx-example

## install-onnx-example: create .venv-onnx with examples/onnx/requirements.txt only (numpy,
## onnx, onnxruntime; no torch) for examples/onnx/score.py and its test (idempotent)
install-onnx-example: $(ONNX_VENV)/.installed

$(ONNX_VENV)/.installed: examples/onnx/requirements.txt
	$(GET_UV)
	test -x $(ONNX_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(ONNX_VENV)
	$(UV) pip install --quiet --python $(ONNX_VENV)/bin/python $(UV_SOURCES) -r examples/onnx/requirements.txt
	touch $@

# --- the C++ example ---
CPP_EXAMPLE_BUILD := build/cpp-example

.PHONY: cpp-example

## cpp-example: build examples/cpp/predict (a C++ client of posterior.pt2) against the torch
## wheel's libtorch into build/cpp-example (CMake; Ninja when present; needs a C++17 compiler)
cpp-example: | install
	cmake -S examples/cpp -B $(CPP_EXAMPLE_BUILD) $$(command -v ninja >/dev/null && echo -G Ninja) \
	  -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CPP_EXAMPLE_BUILD) --parallel

# --- help ---
.PHONY: help

## help: list the targets, each with its `## target: text` comment (and the lines it continues on)
help:
	@awk '/^## [A-Za-z0-9_][A-Za-z0-9_.-]*: / { sub(/^## /, ""); name = $$0; sub(/: .*/, "", name); \
	  sub(/^[^:]*: /, ""); printf "  %-22s %s\n", name, $$0; more = 1; next } \
	  more && /^## / { sub(/^## /, ""); printf "  %-22s %s\n", "", $$0; next } \
	  { more = 0 }' $(MAKEFILE_LIST)
