# vidgate: two commands for a newcomer (`make serve`, `make test`); the rest are for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: serve test lint bench install dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# torch first, pinned: the CPU wheel (a looser spec would pull gigabytes of CUDA packages).
$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,gpu]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

## Start the gateway on SQLite with the CPU renderer; prints an API key and a curl example.
serve: install
	$(BIN)/vidgate serve --quickstart --host $(HOST) --port $(PORT)

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## Lint, then the whole test suite.
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks; figures are printed and written to bench/results/latest.json.
bench: install
	$(BIN)/vidgate bench --output bench/results/latest.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
