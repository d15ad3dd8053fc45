# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick lint typecheck layers unit e2e bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel; a bare `torch` would pull a multi-gigabyte CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pouw devnet

test: $(STAMP) lint typecheck layers unit

# The fast lane: every check and test but the multi-process devnets and the flood (-m slow).
quick: $(STAMP) lint typecheck layers
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check node operator tests examples e2e
	$(BIN)/ruff format --check node operator tests examples e2e

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest

# The kind end-to-end suite (e2e/README.md), apart from `make test`: it builds the image and
# runs a cluster for about 20 minutes. Without Docker, kind, kubectl or helm it skips with
# one line naming what is missing.
e2e: $(STAMP)
	$(BIN)/pytest e2e -v

bench: $(STAMP)
	for name in attacks ledger mining network operator; do $(BIN)/pouw bench $$name --json || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
