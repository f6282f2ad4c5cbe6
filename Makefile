# Two commands matter: `make run` and `make test`. Both create .venv and
# install bsi into it on first use (and again whenever pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run in parallel worker processes (pytest-xdist), at most four, one per
# CPU; work-stealing keeps a long test (the container end-to-end run) from
# leaving the other workers idle. `make pytest XDIST=` runs them in one process.
# Tests marked `alone` (a latency bound) run afterwards, one at a time.
# The 25 slowest tests are listed at the end (where the suite's time goes).
XDIST  ?= -n auto --maxprocesses 4 --dist worksteal --durations=25

.PHONY: run test lint typecheck pytest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the bsi server on the embedded default (SQLite and local files in ./bsi-data)
run: $(STAMP)
	$(BIN)/bsi serve --data-dir bsi-data

## test: lint, strict type check and every test
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check --no-cache src tests benchmarks
	$(BIN)/ruff format --no-cache --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest $(XDIST) -m "not alone" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: none selected

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
