# Two commands do everything on a fresh machine with Python 3.11:
#   make run    set up .venv from uv.lock, generate the sample data if missing, run the nightly job
#   make test   set up .venv from uv.lock (with the dev extra), run the test suite
# Every dependency is installed at the exact version and hash pinned in uv.lock (make lock refreshes it);
# uv itself, pinned below, is installed from the package index into .venv-tools/ the first time.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE_DIR ?= data/sample
SAMPLE_CUSTOMERS ?= 5000
SAMPLE_SEED ?= 42
# The Dagster home is the repository root: its dagster.yaml keeps the run history in .dagster/ (docs/production.md).
export DAGSTER_HOME ?= $(CURDIR)
# where `make ui` and `make serve` listen
HOST ?= 127.0.0.1
PORT ?= 3000

# uv lives in its own small venv beside the project's: `uv sync` removes from .venv whatever uv.lock
# does not list, so a uv installed inside .venv would delete itself, and `rm -rf .venv` keeps it.
UV_VERSION := 0.13.9
TOOLS ?= .venv-tools
UV := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
# The project venv is $(VENV), made with $(PYTHON); uv never downloads an interpreter of its own.
# uv gets the interpreter's real path: given another path to the same Python (a pyenv shim, say),
# it would delete and recreate the venv on every sync.
PYTHON_EXE = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# --locked: install exactly uv.lock, and stop if it no longer matches pyproject.toml (make lock).
UV_SYNC = $(UV) sync --locked --python $(PYTHON_EXE)

# STAMP: .venv holds the runtime and the dev extra (tests, benchmarks); RUN_STAMP: at least the runtime.
# Each is remade when pyproject.toml, uv.lock or the uv version changes.
STAMP := $(VENV)/.synced-dev
RUN_STAMP := $(VENV)/.synced-runtime

.PHONY: help venv lock run sample test test-spark java browser postgres ui serve manifest bench bench-models docs readme clean
.NOTPARALLEL:

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(UV_STAMP):
	@test -n "$(PYTHON)" || { echo "needs python3.11 (or python3) on PATH" >&2; exit 1; }
	@echo "installing uv $(UV_VERSION) into $(TOOLS)/ (pip, from the package index)"
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@rm -f $(TOOLS)/.uv-* && touch $@

# $(call sync,what,uv options): one exact `uv sync` of .venv to uv.lock, saying what and how long.
define sync
echo "installing the locked $(1) dependencies into $(VENV) (uv sync$(if $(2), $(2)), from uv.lock)"; \
start=$$SECONDS; \
$(UV_SYNC) $(2) || { echo "uv sync failed; if uv.lock is out of date with pyproject.toml, run 'make lock'" >&2; exit 1; }; \
echo "$(VENV) holds the locked $(1) dependencies (synced in $$((SECONDS - start)) s)"
endef

$(STAMP): pyproject.toml uv.lock $(UV_STAMP)
	@$(call sync,runtime + dev,--extra dev)
	@touch $@ $(RUN_STAMP)

# The dev set includes the runtime set: when $(STAMP) is current the runtime is already there, and
# an exact runtime-only sync would only remove the test tools.
$(RUN_STAMP): pyproject.toml uv.lock $(UV_STAMP)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ] && [ $(STAMP) -nt uv.lock ] && [ $(STAMP) -nt $(UV_STAMP) ]; then \
	  echo "$(VENV) already holds the locked runtime + dev dependencies"; \
	else \
	  rm -f $(STAMP); $(call sync,runtime,); \
	fi
	@touch $@

venv: $(STAMP)  ## create or update the virtualenv (runtime + dev) from uv.lock

lock: $(UV_STAMP)  ## refresh uv.lock from pyproject.toml (UPGRADE=1: newest allowed release of everything)
	$(UV) lock --python $(PYTHON_EXE) $(if $(UPGRADE),--upgrade)

$(SAMPLE_DIR)/customers.csv: | $(RUN_STAMP)
	$(BIN)/crm-potential generate --customers $(SAMPLE_CUSTOMERS) --seed $(SAMPLE_SEED) --out $(SAMPLE_DIR)

sample: $(SAMPLE_DIR)/customers.csv  ## generate the bundled sample data if missing

run: $(RUN_STAMP) sample  ## run the whole nightly job on the sample data
	$(BIN)/crm-potential run --source $(SAMPLE_DIR)

CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || echo /usr/bin/chromium)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:  ## install Debian's Chromium if missing (the run-report test opens the report in it)
	@test -x $(CHROMIUM) || { echo "installing chromium (apt-get) for the run-report test"; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; } || \
	  echo "could not install chromium (not Debian?): the run-report tests will be skipped; install Chromium or set CRM_CHROMIUM"; }

# Debian's PostgreSQL server binaries (initdb, pg_ctl, postgres): the PostgreSQL tests (database source,
# serving target) start a throw-away cluster of their own in a temporary folder; nothing is started system-wide.
# pgjdbc (libpostgresql-jdbc-java) and a JDK: the BI test reads the PostgreSQL target as Metabase/DBeaver do.
PG_CTL ?= $(shell command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)
PG_PACKAGES = $(if $(PG_CTL),,postgresql) $(if $(wildcard /usr/share/java/postgresql.jar),,libpostgresql-jdbc-java) \
	$(if $(shell command -v javac),,default-jdk-headless)

postgres:  ## install Debian's PostgreSQL server, pgjdbc and a JDK if missing (for the PostgreSQL and BI tests)
	@test -z "$(strip $(PG_PACKAGES))" || { echo "installing $(strip $(PG_PACKAGES)) (apt-get) for the PostgreSQL tests"; \
	  $(SUDO) apt-get install -y -q $(PG_PACKAGES) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $(PG_PACKAGES) >/dev/null; } || \
	  echo "could not install $(strip $(PG_PACKAGES)) (not Debian?): the PostgreSQL and JDBC tests will be skipped"; }

# TEST_WORKERS: pytest-xdist worker processes (auto: one per core; 0: in this process, for debugging)
TEST_WORKERS ?= auto

test: $(STAMP) browser postgres  ## run the test suite (in parallel, one worker per core: TEST_WORKERS=0 to run in one process)
	CRM_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The Spark engine's tests (issue 18) use their own venv, .venv-spark (runtime + dev + spark extras: pyspark,
# dbt-spark), so that .venv and `make test` stay exactly as they are; Spark needs Java 17 (Debian's JRE).
SPARK_VENV := .venv-spark
SPARK_STAMP := $(SPARK_VENV)/.synced-spark

$(SPARK_STAMP): pyproject.toml uv.lock $(UV_STAMP)
	@echo "installing the locked runtime + dev + spark dependencies into $(SPARK_VENV) (uv sync, from uv.lock)"
	@UV_PROJECT_ENVIRONMENT=$(SPARK_VENV) $(UV_SYNC) --extra dev --extra spark || \
	  { echo "uv sync failed; if uv.lock is out of date with pyproject.toml, run 'make lock'" >&2; exit 1; }
	@touch $@

java:  ## install Debian's Java runtime if missing (Spark needs Java 17)
	@command -v java >/dev/null || { echo "installing default-jre-headless (apt-get) for the Spark tests"; \
	  $(SUDO) apt-get install -y -q default-jre-headless >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q default-jre-headless >/dev/null; } || \
	  echo "could not install Java (not Debian?): the Spark tests will be skipped; install Java 17"; }

test-spark: $(SPARK_STAMP) java postgres  ## the Spark engine's tests: the nightly job on a local Spark session against DuckDB
	$(SPARK_VENV)/bin/python -m pytest -m spark $(PYTEST_ARGS)

ui: $(RUN_STAMP) sample  ## open the Dagster UI on the same definitions (development: reloads the code)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

serve: $(RUN_STAMP)  ## production: dagster-webserver on HOST:PORT and dagster-daemon, no reloader; Ctrl-C stops both
	$(BIN)/python -m orchestration.serve --host $(HOST) --port $(PORT) --workspace workspace.yaml

readme: $(RUN_STAMP) sample  ## regenerate README's example output and model tables from a run of the sample (docs/readme_blocks.py)
	$(BIN)/python docs/readme_blocks.py --run

manifest: $(RUN_STAMP)  ## (re)build the dbt manifest
	$(BIN)/crm-potential manifest

bench: $(STAMP) $(SPARK_STAMP) java  ## benchmark the nightly job, 5k-1M, once at 10M, dbt on Spark: 3 hours (writes bench/results.md)
	$(BIN)/python bench/run_bench.py --clean

bench-models: $(STAMP)  ## real-data benchmark on CDNOW (writes bench/results.md)
	$(BIN)/python bench/model_bench.py

docs: $(RUN_STAMP)  ## dbt docs in one file that opens offline: dbt_project/target/docs/static_index.html
	$(BIN)/crm-potential docs

clean:  ## remove generated data, Dagster home and dbt artefacts (keeps .venv and .venv-tools)
	rm -rf data .dagster dbt_project/target dbt_project/logs bench/cache
