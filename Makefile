# The venv is built from pyproject.toml on first use; every target runs inside it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test lint format typecheck docs screenshot bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python worker.py

# The 25 slowest tests close the report, so a slow drift shows in every run (and CI's, .ci/run).
test: $(STAMP)
	$(BIN)/python -m pytest --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: $(STAMP)
	$(BIN)/python -m workflows.diagram --write

# The README's Web UI screenshots (docs/ui-*.png); needs the Debian package chromium.
screenshot: $(STAMP)
	$(BIN)/python docs/screenshot.py
	$(BIN)/python docs/screenshot.py codec

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Engine benchmarks (bench/README.md): each bounded in count and time, loopback only; about
# 30 to 40 minutes on the 2-CPU machine. Figures land in bench/results/*.json.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.coldstart
	$(BIN)/python -m bench.lifecycle
	$(BIN)/python -m bench.deadlines
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.plot

# The soak (tests/soak/): random traffic and random faults for MINUTES, then every case checked
# against the pure core. Loopback only; not part of `make test`; CI runs a 5-minute profile.
# The same SEED replays the same traffic scripts and fault schedule (printed at the start).
MINUTES ?= 30
STORE ?= postgresql
CASES ?= 500
SEED ?=
soak: $(STAMP)
	MINUTES=$(MINUTES) STORE=$(STORE) CASES=$(CASES) SEED=$(SEED) $(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
