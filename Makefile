# gp-serve: export a BoTorch SingleTaskGP posterior to TorchScript and serve it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
COMPAT_VENV := .venv-botorch012
TORCH2141_VENV := .venv-torch2141
PY := $(VENV)/bin/python
# The one command (gp_serve/cli.py), installed into the venv by `make install`.
GP_SERVE := $(VENV)/bin/gp-serve
MODEL_DIR := build/model

.PHONY: install install-compat test export

## install: create .venv with the pinned stack (idempotent)
install: $(VENV)/.installed

# The exact pins first, then this checkout editable on top of them (pyproject.toml's ranges are
# for users; --no-deps and --no-build-isolation: nothing is resolved or fetched past the pins).
EDITABLE := -m pip install --quiet --no-deps --no-build-isolation --editable .

$(VENV)/.installed: requirements.txt requirements-serve.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) $(EDITABLE)
	touch $@

## install-compat: create .venv-botorch012 (BoTorch 0.12.0, the oldest supported)
install-compat: $(COMPAT_VENV)/.installed

$(COMPAT_VENV)/.installed: requirements-botorch012.txt requirements-dev.txt pyproject.toml
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet -r requirements-botorch012.txt -r requirements-dev.txt
	$(COMPAT_VENV)/bin/python $(EDITABLE)
	touch $@

.PHONY: install-torch2141

## install-torch2141: create .venv-torch2141 (torch 2.14.1, BoTorch 0.18.1) for the export tests;
## --no-deps: requirements-torch2141.txt is the complete set (it says why)
install-torch2141: $(TORCH2141_VENV)/.installed

$(TORCH2141_VENV)/.installed: requirements-torch2141.txt pyproject.toml
	test -x $(TORCH2141_VENV)/bin/python || $(PYTHON) -m venv $(TORCH2141_VENV)
	$(TORCH2141_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-torch2141.txt
	$(TORCH2141_VENV)/bin/python $(EDITABLE)
	$(TORCH2141_VENV)/bin/python -W ignore -c "import torch, botorch"  # all of torch's libraries load
	touch $@

## export: fit and export the default model (BraninCurrin) to build/model
export: $(MODEL_DIR)/posterior.pt

$(MODEL_DIR)/posterior.pt: $(wildcard export/*.py) | install
	$(GP_SERVE) export --out $(MODEL_DIR)

## test: the whole suite (pinned stack, then the export tests on BoTorch 0.12.0 and on torch 2.14.1)
test: install install-compat install-bench install-onnx-example install-torch2141
	$(PY) -m pytest tests
	$(COMPAT_VENV)/bin/python -m pytest tests/export
	$(TORCH2141_VENV)/bin/python -m pytest tests/export

# --- benchmarks ---
.PHONY: bench install-bench

## install-bench: add the benchmarks' extra packages (requirements-bench.txt) to .venv
install-bench: $(VENV)/.bench-installed

$(VENV)/.bench-installed: requirements-bench.txt | install
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

## bench: regenerate benchmarks/results/ (raw JSON, README.md tables, PNG plots): in-process
## traced vs eager, BoTorch's MTMVN assembly, HTTP vs echo vs a FastAPI peer, one worker's
## capacity, the artifact formats (TorchScript, pt2, ONNX), the frontend at every limit at once;
## not part of `make test` (under 15 min)
bench: install-bench export archive
	$(PY) -m benchmarks.inprocess --out benchmarks/results/raw
	$(PY) -m benchmarks.batch_mvn --out benchmarks/results/raw
	$(PY) -m benchmarks.http --out benchmarks/results/raw
	$(PY) -m benchmarks.capacity --out benchmarks/results/raw
	$(PY) -m benchmarks.formats --out benchmarks/results/raw
	$(PY) -m benchmarks.frontend_memory --model-dir $(MODEL_DIR) --out benchmarks/results/raw
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
	test -x $(ONNX_VENV)/bin/python || $(PYTHON) -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/python -m pip install --quiet -r examples/onnx/requirements.txt
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
