# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create $(VENV) with the pinned environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# detectron2 is not published on package registries: `make demo` builds it from its upstream
# source at this one pinned commit (the only place it is written). Another detectron2: a local
# checkout or URL as DETECTRON2_SOURCE, or install one into $(VENV) yourself (it is then kept).
DETECTRON2_COMMIT ?= 02b5c4e295e990042a714712c21dc79b731e8833
DETECTRON2_SOURCE ?= git+https://github.com/facebookresearch/detectron2.git@$(DETECTRON2_COMMIT)
DETECTRON2_BUILD_DEPS ?= -r requirements/detectron2.txt
# Options passed through to tools/run_demo.py, e.g. `make demo DEMO_ARGS="--allow-random-clip"`.
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Options passed through to tools/web_demo.py, e.g. `make web WEB_ARGS="--port 8080"`.
WEB_ARGS ?=
# Options passed through to tools/check_cluster.py, e.g. `make check-gpus CHECK_ARGS="--iterations 40"`.
CHECK_ARGS ?=

.PHONY: demo detectron2 web test lint format clean check-gpus gpu-suite mutation

$(BIN)/.installed: requirements/ci.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/ci.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Built after torch (in .installed) and against it: --no-build-isolation, so the build needs
# setuptools in $(VENV). Kept when $(VENV) already imports a detectron2.
$(BIN)/.detectron2: $(BIN)/.installed
	@if $(BIN)/python -c "import detectron2" 2>/dev/null; then \
	  echo "make: $(VENV) already has detectron2; kept"; \
	elif ! { $(BIN)/pip install --quiet $(DETECTRON2_BUILD_DEPS) && \
	         $(BIN)/pip install --quiet --no-build-isolation "$(DETECTRON2_SOURCE)"; }; then \
	  echo "make: could not install detectron2 from $(DETECTRON2_SOURCE) (no network?): get a copy of detectron2 and run 'make demo DETECTRON2_SOURCE=/path/to/detectron2' (README.md, 'Install')" >&2; \
	  exit 1; \
	fi
	@touch $@

detectron2: $(BIN)/.detectron2

demo: $(BIN)/.detectron2
	$(BIN)/python tools/run_demo.py $(DEMO_ARGS)

# Before a long run: trains, evaluates and measures on this machine's GPUs (NCCL; without a GPU,
# two CPU processes with gloo) and writes a PASS/FAIL report (docs/CLUSTER_CHECK.md).
check-gpus: $(BIN)/.detectron2
	$(BIN)/python tools/check_cluster.py $(CHECK_ARGS)

# On a lent GPU, one command of at most 10 minutes (docs/GPU.md, 'The lent-GPU script'): the
# CUDA-only tests, check-gpus with the AMP pseudo-mask comparison, sync counts, the benchmark on
# cuda and TF32; results in one folder. `make gpu-suite GPU_SUITE_ARGS="--device cpu"`: dry run.
GPU_SUITE_ARGS ?=
gpu-suite: $(BIN)/.detectron2
	GPU_SUITE_PYTHON=$(BIN)/python bash tools/gpu_suite.sh $(GPU_SUITE_ARGS)

# The web demo on http://127.0.0.1:7860 (tools/web_demo.py): `make demo`'s model by default.
web: $(BIN)/.detectron2
	$(BIN)/python tools/web_demo.py $(WEB_ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Mutation score of the method's core (docs/MUTATION.md; [tool.mutmut] in pyproject.toml lists
# the modules and their tests). Slow, so not in CI. mutmut imports the package from ./mutants/, so
# it runs in a staging copy with chimeraseg/ beside tests/. MUTANTS takes mutant-name patterns to
# measure one module at a time, e.g. `make mutation MUTANTS="chimeraseg.data.zero_shot*"`.
# One torch thread: mutmut forks a child per mutant, and a child that inherits torch's OpenMP pool
# hangs in its first parallel region (every CSH mutant then "times out", a false kill).
MUTATION_DIR ?= output/mutation
MUTANTS ?=
MUTATION_JOBS ?= $(shell nproc)
mutation: $(BIN)/.installed
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	cp -r projects/ChimeraSeg/chimeraseg tests configs pyproject.toml $(MUTATION_DIR)/
	cd $(MUTATION_DIR) && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 && \
		$(abspath $(BIN))/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS) && \
		$(abspath $(BIN))/mutmut results

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache output
