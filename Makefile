# Two entry points for a fresh machine; each creates .venv and installs what it needs.
#   make demo   plan the embedded model for 4 Edge TPUs, verify, run the simulated pipeline, show what 1-4 TPUs buy
#   make test   run the test suite
# Daily work: make test-fast (unit tier, under a minute), make lint (ruff check, ruff format --check, mypy).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EMBEDDED := respect_pass/data/mobilenet_v2_0.35_96_int8.tflite

.PHONY: demo test test-fast lint format zoo bench-io bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,zoo]'
	touch $@ $(VENV)/.base

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@ $(VENV)/.base

demo: $(VENV)/.base
	$(BIN)/respect-pass $(EMBEDDED) -n 4 -o out/demo --verify
	$(BIN)/run_pipeline out/demo
	$(BIN)/respect-pass sweep $(EMBEDDED) --max-tpus 4
	@echo "next: respect-pass YOUR_MODEL.tflite -n K -o DIR --verify  (K: your TPUs; README, 'How many TPUs?')"

test: $(VENV)/.full
	$(BIN)/python -m pytest -q

# the unit tier: no keras builds, no training, no benchmark or CLI subprocesses, few hypothesis examples
test-fast: $(VENV)/.dev
	HYPOTHESIS_PROFILE=dev $(BIN)/python -m pytest -q -m "not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

zoo: $(VENV)/.full
	$(BIN)/python -m tools.build_zoo

bench-io: zoo
	$(BIN)/python -m tools.bench_io --ks 2-8

bench: zoo
	$(BIN)/python -m tools.bench

bench-quick: $(VENV)/.full
	$(BIN)/python -m tools.bench --quick

clean:
	rm -rf out .pytest_cache .hypothesis
