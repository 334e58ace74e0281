# One entry point for people and CI. Everything installs into .venv from requirements.lock.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HYPOTHESIS_PROFILE ?= ci

.PHONY: install demo test test-slow lint format lock bench docs clean

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv with the locked dependencies

demo: $(STAMP) ## backtest the bundled example artifact on the bundled sample data
	$(BIN)/stratagem run examples/rsi-reversion.yaml --funding examples/data/btcusdt-funding-synthetic.csv

test: $(STAMP) ## the whole fast test suite (what CI runs)
	$(BIN)/python -m pytest -n 2 -m "not slow" -q

test-slow: $(STAMP) ## long-running tests (also run in CI, separately); none selected is fine
	$(BIN)/python -m pytest -n 2 -m slow -q; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

lint: $(STAMP) ## ruff, formatting, mypy and the import-linter dependency contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: ## re-pin every dependency (run after changing pyproject.toml)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^stratagem' > requirements.lock

bench: $(STAMP) ## run every benchmark and print markdown tables
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP) ## regenerate generated docs from the code
	$(BIN)/python -m stratagem.docs

clean:
	rm -rf $(VENV) runs build .pytest_cache .mypy_cache .ruff_cache
