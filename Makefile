# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create $(VENV) with the pinned environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Options passed through to tools/run_demo.py, e.g. `make demo DEMO_ARGS="--allow-random-clip"`.
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test lint format clean

$(BIN)/.installed: requirements/ci.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/ci.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python tools/run_demo.py $(DEMO_ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache output
