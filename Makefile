# Two commands a user needs: `make run` (default pipeline, tiny preset) and `make test`.
# Both create .venv on first use: torch 2.13.0 (CPU wheel) first, then this project with its test extra, every
# package at the exact version of requirements.lock (the versions the committed results/ were made with).
# Every `egspo` command pins its CPU numerics itself (egspo.utils.numerics: AVX2 kernels in PyTorch, MKL and
# oneDNN, fixed threads, deterministic algorithms); `make run` prints the pin first. EGSPO_NUMERICS=native unpins.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra pip flags for the torch install, e.g. TORCH_PIP_FLAGS="--index-url <your CPU wheel index>" on machines
# where a plain `pip install torch==2.13.0` would fetch a CUDA build.
TORCH_PIP_FLAGS ?=
export PATH := $(BIN):$(PATH)

.PHONY: run test test-slow test-slurm test-all setup clean-results lock

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_FLAGS) torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/python -m egspo.utils.numerics
	$(BIN)/snakemake --cores all --profile profiles/local

# Rewrite requirements.lock from .venv after a deliberate upgrade (then rerun `make run` and commit both).
lock: $(STAMP)
	{ sed -n '/^#/p' requirements.lock; $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip==' \
	  | sed -E 's/^(torch==[0-9.]+)\+[a-z0-9]+$$/\1/'; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -m slurm

test-all: test test-slow test-slurm
