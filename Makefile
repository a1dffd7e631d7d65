# voice-router: every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURITE := .tools/azurite/node_modules/.bin/azurite-blob
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run demo test lint typecheck unit bench clean redis-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(AZURITE):
	mkdir -p .tools/azurite
	cd .tools/azurite && (test -f package.json || npm init -y >/dev/null) && \
		npm install --no-audit --no-fund --silent azurite@3.35.0

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		(apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || \
		{ echo "redis-server is missing and could not be installed"; exit 1; }; }

install: $(STAMP)

run: $(STAMP) $(AZURITE)
	mkdir -p var
	$(PY) -m router serve --local --host $(HOST) --port $(PORT)

demo: $(STAMP) $(AZURITE)
	$(PY) -m emulators.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) $(AZURITE) redis-server
	$(VENV)/bin/pytest

test: lint typecheck unit

bench: $(STAMP) $(AZURITE)
	$(PY) -m bench.webhook

clean:
	rm -rf $(VENV) .tools var .mypy_cache .ruff_cache .pytest_cache
