# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/cds-hooks serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check cds_hooks tests bench tools
	$(BIN)/ruff format --check cds_hooks tests bench tools
	$(BIN)/mypy cds_hooks

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
