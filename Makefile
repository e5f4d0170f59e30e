# vidgate: two commands for a newcomer (`make serve`, `make test`); the rest are for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: serve test lint bench install dev clean proxy-deps browser-deps

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

## nginx and Caddy for the reverse-proxy tests (Debian packages, when missing and run as root).
## The tests start them in the foreground on loopback; they are never left running as services.
proxy-deps:
	@if { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null && command -v caddy >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light caddy >/dev/null \
		  && { systemctl disable --now nginx caddy >/dev/null 2>&1 || true; }; } \
		|| echo "proxy-deps: could not install nginx-light/caddy; their tests will skip (fail under CI)"; \
	else echo "proxy-deps: nginx or caddy missing; their tests will skip (fail under CI)"; fi

## Debian's Chromium for the console's browser tests (Playwright drives it; no browser download).
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "browser-deps: WARNING: could not install chromium; the browser tests will skip (fail under CI)"; \
	elif sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then \
		{ sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "browser-deps: WARNING: could not install chromium; the browser tests will skip (fail under CI)"; \
	else echo "browser-deps: WARNING: /usr/bin/chromium is missing (install Debian's chromium as root);" \
		"the browser tests will skip (fail under CI)"; fi

## Lint, then the whole test suite.
test: lint proxy-deps browser-deps
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks; figures are printed and written to bench/results/latest.json.
bench: install
	$(BIN)/vidgate bench --output bench/results/latest.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
