# Two entry points for a fresh machine: `make demo` (set up + run a small federated simulation on CPU)
# and `make test` (set up with dev dependencies + run the test suite).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0; an unpinned torch would pull a multi-GB CUDA build. On a GPU machine:
#   make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.securefed-installed

.PHONY: demo test install clean-runs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/securefed simulate --config examples/demo.toml --out runs/demo

test: $(STAMP)
	$(VENV)/bin/pytest

clean-runs:
	rm -rf runs
