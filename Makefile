# nasops — two commands for a new user: `make demo` and `make test` (both set up .venv first, idempotently).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nasops-installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
PYTEST_ARGS ?=
# Both cores of a CI runner: two xdist workers. --dist loadgroup (its scheduler is in tests/conftest.py) hands out
# single tests, except that the tests of a module with a shared module-scoped fixture (a refresh, a gateway, a
# trained model) stay on one worker, so that fixture is built once; slow tests are handed out first.
TEST_WORKERS ?= 2

.PHONY: help install demo test test-fast lint system-deps lock clean

help:
	@echo "make demo   - set up .venv (pinned working set) and run 'nasops refresh' on the bundled digits data"
	@echo "make test   - set up .venv and the Prometheus and PostgreSQL server binaries, then run the whole test suite"
	@echo "make test-fast - the suite without tests marked slow: starts no server, trains no model"
	@echo "make lint   - ruff"
	@echo "make lock   - re-resolve requirements.in into constraints.txt (the tested working set)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "nasops needs Python 3.11, found " + sys.version.split()[0]' \
		|| { echo "error: set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)

# Re-install only when the pinned set or the project metadata changed.
$(STAMP): $(BIN)/python requirements.in constraints.txt pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23" 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements.in
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# The server binaries the integration tests start on 127.0.0.1 (Prometheus, PostgreSQL), from Debian packages when
# missing. Their services are kept from starting at install (policy-rc.d) and nothing already running is stopped:
# see .ci/system-deps.sh. Where they cannot be installed, those tests skip with a visible reason locally; under
# CI=true a skip fails the run.
system-deps:
	@bash .ci/system-deps.sh

demo: install
	$(BIN)/nasops refresh

# pytest exits 5 when it ran no test at all: a selection that matches nothing must not look like a pass, so say so.
NO_TESTS = { rc=$$?; [ $$rc -ne 5 ] || echo "error: pytest ran no tests (exit 5): the selection matched nothing" >&2; exit $$rc; }

test: install system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS) || $(NO_TESTS)

# No server started, no model trained: tests doing either are marked slow (the server harness enforces it).
test-fast: install
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS) || $(NO_TESTS)

lint: install
	$(BIN)/ruff check nas pipelines serving monitoring tests benchmarks

lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.in
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > constraints.txt

clean:
	rm -rf .nasops .pytest_cache
