# The README's two commands are `make run` and `make test`; both set up .venv themselves.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,test,lint]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev and test tools

run: $(STAMP)  ## run the whole system locally (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/scheduler dev

# Files go out in the order tests/conftest.py sorts them (the longest first), not by their number
# of tests, so that no long file ends the run alone. Two workers, one per core: the soak's and the
# end-to-end tests' tolerances are those of a loaded two-core machine (three workers broke them).
test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)  ## ruff, formatting, mypy and the import layering contracts
	$(BIN)/ruff check scheduler tests
	$(BIN)/ruff format --check scheduler tests
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)  ## format the code
	$(BIN)/ruff format scheduler tests
	$(BIN)/ruff check --fix scheduler tests

# ONLY=refactor runs the insert, steady and burst scenarios alone, into docs/benchmarks-refactor.md,
# each figure against the range of the last three full runs. ONLY=mixed runs the mixed endpoints
# with their limits and the cost of flow keys alone, into docs/benchmarks-mixed.md. ONLY=crons runs
# the crons at scale alone (a boundary, every-second crons, a leader killed), into
# docs/benchmarks-crons.md. ONLY=pooler runs steady, a burst and jobs due now through PgBouncer in
# transaction mode (no direct URL) beside the direct steady and burst runs, into
# docs/benchmarks-pooler.md.
bench: $(STAMP)  ## run the benchmarks (about 30 minutes; NOTE="what changed", ONLY=refactor, mixed, crons or pooler) into docs/
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m tests.bench --note "$(NOTE)" $(if $(ONLY),--only $(ONLY) \
		--output docs/benchmarks-$(ONLY).md --history docs/benchmarks-history.json,--output docs/benchmarks.md)

# SEED=n replays a run's plan (the seed is printed when drawn); DURATION=s shortens the faults.
chaos: $(STAMP)  ## chaos soak: faults at random under load, then the invariants (at most 10 minutes; SEED=n, DURATION=s) into docs/reliability.md
	$(BIN)/python -m tests.chaos $(if $(SEED),--seed $(SEED)) $(if $(DURATION),--duration $(DURATION)) \
		--output docs/reliability.md

screenshots: $(STAMP)  ## refresh the dashboard screenshots in docs/screenshots (needs Debian's chromium)
	DASHBOARD_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest \
		tests/e2e/test_dashboard_browser.py -k "every_page or editing_a_job"

audit: $(STAMP)  ## check the installed dependencies for known vulnerabilities (needs PyPI's JSON API)
	$(BIN)/python -m pip install --quiet -e '.[audit]'
	$(BIN)/pip freeze --exclude-editable > $(VENV)/frozen.txt
	$(BIN)/pip-audit --requirement $(VENV)/frozen.txt --no-deps --disable-pip --strict

migrate: $(STAMP)  ## apply migrations to DATABASE_URL
	$(BIN)/scheduler migrate

.PHONY: help install run test lint fmt bench chaos screenshots audit migrate
