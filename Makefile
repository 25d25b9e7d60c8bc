# Two commands do everything on a fresh machine with Python 3.11:
#   make run    set up .venv, generate the sample data if missing, run the nightly job
#   make test   set up .venv, run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE_DIR ?= data/sample
SAMPLE_CUSTOMERS ?= 5000
SAMPLE_SEED ?= 42
export DAGSTER_HOME ?= $(CURDIR)/.dagster

.PHONY: help venv run sample test browser ui manifest bench docs clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## create or update the virtualenv

$(SAMPLE_DIR)/customers.csv: | $(STAMP)
	$(BIN)/crm-potential generate --customers $(SAMPLE_CUSTOMERS) --seed $(SAMPLE_SEED) --out $(SAMPLE_DIR)

sample: $(SAMPLE_DIR)/customers.csv  ## generate the bundled sample data if missing

run: $(STAMP) sample  ## run the whole nightly job on the sample data
	$(BIN)/crm-potential run --source $(SAMPLE_DIR)

CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || echo /usr/bin/chromium)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:  ## install Debian's Chromium if missing (the run-report test opens the report in it)
	@test -x $(CHROMIUM) || { echo "installing chromium (apt-get) for the run-report test"; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }; }

test: $(STAMP) browser  ## run the test suite
	CRM_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

ui: $(STAMP) sample  ## open the Dagster UI on the same definitions
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml

manifest: $(STAMP)  ## (re)build the dbt manifest
	$(BIN)/crm-potential manifest

bench: $(STAMP)  ## benchmark the nightly job (writes bench/results.md)
	$(BIN)/python bench/run_bench.py --clean

docs: $(STAMP)  ## build the dbt docs site into dbt_project/target
	$(BIN)/crm-potential docs

clean:  ## remove generated data, Dagster home and dbt artefacts (keeps .venv)
	rm -rf data .dagster dbt_project/target dbt_project/logs bench/cache
