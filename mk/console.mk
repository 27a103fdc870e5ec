# The operator console (docs/console.md). Included by the root Makefile (`-include mk/*.mk`).

BIN ?= .venv/bin
PYTEST_ARGS ?=

.PHONY: screenshots

screenshots: ## the console's browser tests, writing their screenshots into docs/img (commit them)
	SAGA_UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_console.py $(PYTEST_ARGS)
