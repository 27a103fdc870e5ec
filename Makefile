# knative-saga: `make dev` runs the whole local stack, `make test` runs every test.
# Cluster targets (kind-up, images, deploy, e2e-kind, kind-down) live in mk/cluster.mk.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package pinned with its hashes, written by `make lock` from pyproject.toml: `make dev`,
# `make test`, the benchmark and the image (requirements/image.lock) install exactly these.
LOCK := requirements/dev.lock
UV := uv==0.13.9
PYTEST_ARGS ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lock dev test lint unit bench chaos clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Bytecode compiled at install, as in the image; the project installed editable in "compat" mode: a
# plain path entry, not an import hook that every Python start (a cold start) would load, 20 ms.
$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3 $(UV)
	$(BIN)/uv pip sync -q --python $(BIN)/python --require-hashes --compile-bytecode $(LOCK)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e . --config-setting editable_mode=compat
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the locked packages (again only when pyproject.toml or the lock changes)

lock: ## write requirements/*.lock from pyproject.toml: every package pinned, with hashes
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv .local/uv && .local/uv/bin/pip install -q $(UV)
	.local/uv/bin/uv pip compile -q pyproject.toml --extra stack --extra dev --generate-hashes --universal \
		--python-version 3.11 --custom-compile-command "make lock" -o $(LOCK)
	.local/uv/bin/uv pip compile -q pyproject.toml --extra replay --generate-hashes --universal \
		--python-version 3.11 --custom-compile-command "make lock" -c $(LOCK) -o requirements/image.lock

dev: venv ## start Kafka, PostgreSQL and every function: the whole local stack (Ctrl-C stops it)
	$(BIN)/saga dev $(ARGS)

lint: venv ## ruff and mypy
	$(BIN)/ruff check saga functions localstack bench chaos tests scripts
	$(BIN)/mypy saga functions localstack bench chaos scripts

unit: venv ## unit tests only (no infrastructure)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: venv lint ## every test: unit, manifests, integration (real Kafka + PostgreSQL), end to end
	$(BIN)/pytest $(PYTEST_ARGS)

bench: venv ## measure throughput, latency, cold starts, footprint, cost per saga (ARGS=--smoke: 1 min)
	$(BIN)/python -m bench $(ARGS)

chaos: venv ## faults injected under load, then every invariant checked (ARGS=--short: the CI run, 2-3 min)
	$(BIN)/python -m chaos $(ARGS)

clean: ## remove the test stack's data (keeps the downloaded Kafka jars and the dev data)
	rm -rf .local/test

-include mk/*.mk
