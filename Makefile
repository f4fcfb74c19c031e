# Two commands a user needs: `make run` (default pipeline, tiny preset) and `make test`.
# Both create .venv on first use: torch 2.13.0 (CPU wheel) first, then this project with its test extra.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra pip flags for the torch install, e.g. TORCH_PIP_FLAGS="--index-url <your CPU wheel index>" on machines
# where a plain `pip install torch==2.13.0` would fetch a CUDA build.
TORCH_PIP_FLAGS ?=
export PATH := $(BIN):$(PATH)

.PHONY: run test test-slow test-slurm test-all setup clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_FLAGS) torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores all --profile profiles/local

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -m slurm

test-all: test test-slow test-slurm
