"""Shared fixtures: generated sample data in temporary folders and an isolated DAGSTER_HOME.

`make test` runs the suite in parallel (pytest-xdist, one worker per core). A pipeline run that several test
files read (``small_sample``, ``two_publications``, ...) is built once per test session, not once per worker:
``build_once`` builds it under a file lock in a folder all workers share, and the others wait for it and
reuse it. Tests treat those folders as read-only: a test that changes one copies it first.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any, Callable

import pytest

from ml.sample_data import GeneratorConfig, generate

SMALL_CUSTOMERS = 1200
SAMPLE_END = date(2026, 9, 30)


@pytest.fixture(scope="session", autouse=True)
def dagster_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the workers share the cores: each model step on one OpenMP thread, or the threads of two workers
        # spin against each other at every barrier (ml/threads.py; 5-50x slower fits measured)
        mp.setenv("CRM_MODEL_THREADS", os.environ.get("CRM_MODEL_THREADS", "1"))
    yield home
    mp.undo()


def build_once(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """``build(folder)`` once per test session, whichever worker asks first; returns (folder, its value).

    The value must be JSON; the folder is shared by every worker, so callers treat it as read-only. A build
    that failed leaves no record: the next caller tries again (and fails the same way, with its own error)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder
    folder, record = root / f"shared_{name}", root / f"shared_{name}.json"
    with FileLock(str(root / f"shared_{name}.lock")):
        if record.exists():
            return folder, json.loads(record.read_text())
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        value = build(folder)
        record.write_text(json.dumps(value))
        return folder, value


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """A small generated source folder (CSV). Treat as read-only; copy it to change it."""
    def build(out: Path) -> None:
        generate(GeneratorConfig(customers=SMALL_CUSTOMERS, seed=7, end_date=SAMPLE_END), out,
                 progress=lambda *_: None)

    return build_once(tmp_path_factory, "small_sample", build)[0]


@pytest.fixture
def sample_copy(small_sample, tmp_path) -> Path:
    dst = tmp_path / "source"
    shutil.copytree(small_sample, dst)
    return dst


def run_args(source: Path, work: Path, *extra: str) -> list[str]:
    return [
        "run", "--source", str(source), "--warehouse", str(work / "warehouse.duckdb"),
        "--serving", str(work / "serving.duckdb"), "--models", str(work / "models"), "--quiet", *extra,
    ]


def published_run_id(serving: Path) -> str:
    import duckdb

    with duckdb.connect(str(serving), read_only=True) as con:
        return con.execute("select distinct run_id from customer_scores").fetchall()[0][0]


@pytest.fixture(scope="session")
def two_publications(small_sample, tmp_path_factory):
    """Two real runs into one work folder (as of 2026-08-31, then the default as-of date), their Dagster
    history in ``<folder>/.dagster``. Treat as read-only; copy the folder to change it. Returns (folder, first
    run id, second run id)."""
    from orchestration.cli import main

    def build(work: Path) -> list[str]:
        with pytest.MonkeyPatch.context() as mp:  # the runs' Dagster history goes with them (any worker reads it)
            mp.setenv("DAGSTER_HOME", str(work / ".dagster"))
            assert main(run_args(small_sample, work, "--as-of", "2026-08-31")) == 0
            first = published_run_id(work / "serving.duckdb")
            assert main(run_args(small_sample, work)) == 0
        return [first, published_run_id(work / "serving.duckdb")]

    work, (first, second) = build_once(tmp_path_factory, "two_publications", build)
    return work, first, second


@pytest.fixture(scope="module")
def serving_copy(two_publications, tmp_path_factory) -> Path:
    """The sample's serving file as `crm-potential run` wrote it, copied per test module (clients open it; the
    shared run stays untouched)."""
    work, _, _ = two_publications
    copy = tmp_path_factory.mktemp("serving") / "serving.duckdb"
    shutil.copy2(work / "serving.duckdb", copy)
    return copy


REQUIRE_ALL = "CRM_TESTS_REQUIRE_ALL"  # set by CI (.ci/run): a missing system tool fails instead of skipping


def require(available: bool, what: str, install: str) -> None:
    """A test that needs a system tool ``make test`` installs on Debian (Chromium, PostgreSQL, a JDK): skipped
    with a message that says how to run it where it is missing (another OS), failed in CI."""
    if available:
        return
    message = f"{what} is not installed: {install}, then run the tests again"
    if os.environ.get(REQUIRE_ALL):
        pytest.fail(f"{message} ({REQUIRE_ALL} is set: CI runs every test)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server per test module (tests/postgres_server.py): started on first use, stopped
    after the module, so modules never see each other's schemas."""
    from tests.postgres_server import PostgresServer, server_binaries_found

    require(server_binaries_found(), "PostgreSQL's server (initdb, pg_ctl)",
            "install Debian's postgresql package (make postgres) or your OS's PostgreSQL server")
    server = PostgresServer().start()
    yield server
    server.stop()
