# curator — two commands on a fresh machine: `make build-corpus` and `make test`.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.curator-installed
DEMO_DATA ?= data/demo
DEMO_OUT ?= shards/demo

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install curator with pinned dependencies

build-corpus: $(STAMP) ## Build the demo corpus into shards/demo (offline, end to end)
	$(BIN)/curator demo-data $(DEMO_DATA)
	$(BIN)/curator build --recipe recipes/demo.toml --out $(DEMO_OUT)

# Debian's Chromium for the report's browser test (tests/test_report_browser.py). apt only,
# never a test tool's own browser download; where apt cannot install it (no root, no
# sudo, no package), the target says so and the test skips with that reason.
CHROMIUM ?= /usr/bin/chromium
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

browser: ## Install Debian's Chromium for the report's browser test, if missing
	@test -x $(CHROMIUM) || { echo "installing Debian chromium (report browser test)"; \
	  $(SUDO) $(APT) install --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $(SUDO) $(APT) update >/dev/null 2>&1 && $(SUDO) $(APT) install --no-install-recommends chromium >/dev/null 2>&1; } || \
	  echo "warning: could not install chromium with apt; tests/test_report_browser.py will skip"; }

CHROMIUM_FLAGS := --headless --no-sandbox --disable-gpu --disable-quic --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars

report-png: $(STAMP) browser ## Screenshot the demo corpus card into docs/report.png (after make build-corpus)
	$(BIN)/curator report --out $(DEMO_OUT)
	profile=$$(mktemp -d) && $(CHROMIUM) $(CHROMIUM_FLAGS) --user-data-dir=$$profile --window-size=1280,2600 \
	  --screenshot=docs/report.png file://$(abspath $(DEMO_OUT))/report/index.html; rc=$$?; rm -rf $$profile; exit $$rc

test: $(STAMP) browser ## Run the test suite (what CI runs)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## The test suite without the tests marked slow
	$(BIN)/pytest -q -m 'not slow'

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check curator tests bench
	$(BIN)/ruff format --check curator tests bench

lock: ## Re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -e '.[dev,ray]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^curator' > constraints.txt
	rm -rf .lockenv

clean: ## Remove the demo data and demo corpus (keeps .venv)
	rm -rf $(DEMO_DATA) $(DEMO_OUT)

.PHONY: help install browser report-png build-corpus test test-fast lint lock clean

bench: $(STAMP) ## Print speed and memory figures (bench/bench_*.py)
	$(BIN)/python -m bench

.PHONY: bench
