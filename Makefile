# The venv is built from pyproject.toml on first use; every target runs inside it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test browser lint format typecheck docs screenshot bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python worker.py

# The 25 slowest tests close the report, so a slow drift shows in every run (and CI's, .ci/run).
test: browser $(STAMP)
	$(BIN)/python -m pytest --durations=25

# Headless Chromium renders the report page in the tests (tests/test_report.py) and takes the
# screenshots. The one set-up outside the venv, here for `make test` and .ci/run alike: the Debian
# package is installed when it is missing and this user may (root, or sudo without a password);
# otherwise the run stops at once with the README's line.
BROWSER_MISSING := the Debian package chromium is missing: sudo apt-get install -y chromium
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if ! command -v apt-get >/dev/null; then echo "error: $(BROWSER_MISSING)" >&2; exit 2; fi; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "error: $(BROWSER_MISSING)" >&2; exit 2; fi; \
	  echo "installing the Debian package chromium (headless Chromium for the report tests)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium \
	    >/dev/null; }

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
screenshot: browser $(STAMP)
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
