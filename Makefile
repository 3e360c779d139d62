# kdseg: two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install demo test test-slow lint format clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>/dev/null || true
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e ".[dev]"  # no setuptools editable-install banner
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check kdseg tests scripts
	$(BIN)/ruff format --check kdseg tests scripts

format: $(STAMP)
	$(BIN)/ruff format kdseg tests scripts
	$(BIN)/ruff check --fix kdseg tests scripts

clean:
	rm -rf .demo runs outputs multirun
