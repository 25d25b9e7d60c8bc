"""Shared fixtures: generated sample data in temporary folders and an isolated DAGSTER_HOME."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

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
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """A small generated source folder (CSV). Treat as read-only; copy it to change it."""
    out = tmp_path_factory.mktemp("small_sample")
    generate(GeneratorConfig(customers=SMALL_CUSTOMERS, seed=7, end_date=SAMPLE_END), out, progress=lambda *_: None)
    return out


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
    """Two real runs into one work folder (as of 2026-08-31, then the default as-of date). Treat as
    read-only; copy the folder to change it. Returns (folder, first run id, second run id)."""
    from orchestration.cli import main

    work = tmp_path_factory.mktemp("wap")
    assert main(run_args(small_sample, work, "--as-of", "2026-08-31")) == 0
    first = published_run_id(work / "serving.duckdb")
    assert main(run_args(small_sample, work)) == 0
    return work, first, published_run_id(work / "serving.duckdb")
