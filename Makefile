# Set-up lives here so that the README's two commands work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup run test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[train,test,encoders,serve,onnx,team]"
	touch $@

## Train the default model (MLP) on the bundled sample of real titles; print its metrics.
run: setup
	$(VENV)/bin/prodcat train

## Run the test suite.
test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/data_layer.py
