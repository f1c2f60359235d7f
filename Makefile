# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv when missing.
# `make serve` installs what the service needs to run, nothing more; `make test` adds the test
# tools (pytest, Playwright, schemathesis, ruff, mypy) and the PostgreSQL driver. One stamp each,
# so that serving never pulls the test extras and testing reinstalls only when pyproject changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $@

serve: $(RUNTIME_STAMP)
	$(BIN)/cds-hooks serve --host $(HOST) --port $(PORT)

lint: $(TEST_STAMP)
	$(BIN)/ruff check cds_hooks tests bench tools
	$(BIN)/ruff format --check cds_hooks tests bench tools
	$(BIN)/mypy cds_hooks

test: lint
	$(BIN)/python -m pytest

bench: $(TEST_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
