# Thin wrappers: each target is a real command you can also run by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test lint typecheck demo bench chaos system-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	bash scripts/ensure-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: system-deps lint typecheck
	$(BIN)/pytest -m "not hardware and not chaos"

demo: system-deps $(STAMP)
	$(BIN)/python -m demo

bench: system-deps $(STAMP)
	$(BIN)/python -m bench

chaos: system-deps $(STAMP)
	VIGIL_CHAOS_SECONDS=$${VIGIL_CHAOS_SECONDS:-90} $(BIN)/pytest -m chaos -s tests/chaos

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
