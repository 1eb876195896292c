# Every target builds its own virtualenv from nothing: a fresh Debian machine with Python 3.11 is enough.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The OpenAPI linters, npm packages pinned here and installed into $(TOOLS) (gitignored), where
# tests/test_openapi_lint.py runs them. Redocly CLI 1.x runs on Debian's Node.js 18; 2.x needs 20.19.
TOOLS        := .tools
TOOLS_STAMP  := $(TOOLS)/.installed
REDOCLY_CLI  := @redocly/cli@1.34.20
SPECTRAL_CLI := @stoplight/spectral-cli@6.16.3

.PHONY: run test bench lint typecheck schemas clean chromium promtool openapi-tools demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/relay serve

test: $(STAMP) chromium promtool openapi-tools
	$(BIN)/ruff check relay tests
	$(BIN)/ruff format --check relay tests
	$(BIN)/mypy
	$(BIN)/python -m relay.schemagen --check
	$(BIN)/python -m relay.configdoc --check
	$(BIN)/pytest -q

# The dashboard test drives Debian's Chromium headless (Playwright never downloads a browser here).
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# The alert rules in deploy/prometheus are checked and unit-tested with Debian's promtool. The
# package also ships a Prometheus server that systemd would start on :9090: installed only for
# promtool, it is stopped and disabled at once (tests never need a running Prometheus).
promtool:
	command -v promtool >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus && (systemctl disable --now prometheus 2>/dev/null || true))

# Redocly CLI and Spectral lint openapi.yaml in the tests: Debian's nodejs and npm, then the pinned
# packages from the npm registry into $(TOOLS), reinstalled when the pins here change.
openapi-tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): Makefile
	command -v npm >/dev/null || (apt-get update && apt-get install -y --no-install-recommends nodejs npm)
	rm -rf $(TOOLS)
	npm install --prefix $(TOOLS) --save-exact --no-audit --no-fund --loglevel=error $(REDOCLY_CLI) $(SPECTRAL_CLI)
	touch $(TOOLS_STAMP)

# A populated dashboard from nothing: hours of synthetic traffic through real relays, then the lead.
demo: $(STAMP)
	$(BIN)/python -m relay.lead.demo --dir relay-demo
	$(BIN)/relay lead --config relay-demo/lead.yaml

# wrk (load generator) and taskset come from Debian; statsd (the peer) from npm, on first use.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/relay bench --out bench-report.json

lint: $(STAMP)
	$(BIN)/ruff check relay tests
	$(BIN)/ruff format --check relay tests

typecheck: $(STAMP)
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/python -m relay.schemagen
	$(BIN)/python -m relay.configdoc

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
