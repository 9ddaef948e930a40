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

test: $(STAMP) ## Run the test suite (what CI runs)
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

.PHONY: help install build-corpus test test-fast lint lock clean

bench: $(STAMP) ## Print speed and memory figures (bench/bench_*.py)
	$(BIN)/python -m bench

.PHONY: bench
