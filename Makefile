# gp-serve: export a BoTorch SingleTaskGP posterior to TorchScript and serve it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
COMPAT_VENV := .venv-botorch012
PY := $(VENV)/bin/python
MODEL_DIR := build/model

.PHONY: install install-compat test export

## install: create .venv with the pinned stack (idempotent)
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-serve.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

## install-compat: create .venv-botorch012 (BoTorch 0.12.0, the oldest supported)
install-compat: $(COMPAT_VENV)/.installed

$(COMPAT_VENV)/.installed: requirements-botorch012.txt requirements-dev.txt
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet -r requirements-botorch012.txt -r requirements-dev.txt
	touch $@

## export: fit and export the default model (BraninCurrin) to build/model
export: $(MODEL_DIR)/posterior.pt

$(MODEL_DIR)/posterior.pt: | install
	$(PY) -m export --out $(MODEL_DIR)

## test: the whole suite (pinned stack, then the export tests on BoTorch 0.12.0)
test: install install-compat
	$(PY) -m pytest tests
	$(COMPAT_VENV)/bin/python -m pytest tests/export
