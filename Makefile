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

.PHONY: help install demo test test-fast lint system-deps lock clean

help:
	@echo "make demo   - set up .venv (pinned working set) and run 'nasops refresh' on the bundled digits data"
	@echo "make test   - set up .venv and the Prometheus and PostgreSQL server binaries, then run the whole test suite"
	@echo "make test-fast - the suite without tests marked slow"
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

# The servers the integration tests start on 127.0.0.1 (Debian packages): Prometheus, and PostgreSQL (its
# initdb/pg_ctl/postgres live in /usr/lib/postgresql/<version>/bin; the tests make their own throw-away cluster, so
# a service the package starts is stopped again). Where they cannot be installed, those tests skip with a visible
# reason locally; under CI=true a skip fails the run.
system-deps:
	@missing=""; \
	{ command -v prometheus && command -v promtool; } >/dev/null || missing="prometheus"; \
	{ command -v initdb && command -v pg_ctl; } >/dev/null \
		|| ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing the Debian package(s)$${missing:+ }$${missing# } (used by the tests, on 127.0.0.1 only)"; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
		&& { case " $$missing " in *" prometheus "*) service prometheus stop >/dev/null 2>&1 || true; pkill -x prometheus 2>/dev/null || true;; esac; \
		     case " $$missing " in *" postgresql "*) service postgresql stop >/dev/null 2>&1 || true; \
		       pg_lsclusters -h 2>/dev/null | while read -r ver name _ status _; do \
		         [ "$$status" = online ] && pg_ctlcluster "$$ver" "$$name" stop >/dev/null 2>&1; done; true;; esac; }; \
	else echo "warning: $${missing# } not installed and cannot be installed here (needs root and apt-get); their tests will skip"; fi

demo: install
	$(BIN)/nasops refresh

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check nas pipelines serving monitoring tests benchmarks

lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.in
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > constraints.txt

clean:
	rm -rf .nasops .pytest_cache
