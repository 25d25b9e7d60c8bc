"""Paths are data, never SQL: a quote, a space and non-ASCII letters in every path the pipeline touches
(source folder, warehouse, serving file, model registry, erasure file, Dagster home) must not break a run.
Every path reaches DuckDB as a parameter or a quoted literal (issue 17, item 9)."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from orchestration.cli import main
from orchestration.publication import published_run_id

pytestmark = pytest.mark.slow
ODD = "O'Brien ü data"


def test_a_run_publishes_and_reports_with_a_quote_a_space_and_unicode_in_every_path(small_sample, tmp_path,
                                                                                   monkeypatch, capsys):
    base = tmp_path / ODD
    source = base / "sour'ce ü"
    shutil.copytree(small_sample, source)
    # the warehouse's file name (not its folder) becomes DuckDB's catalog name, which dbt-duckdb's own macros
    # put into SQL literals unescaped, so a quote cannot be in that name: here it is in the folder's
    warehouse = base / "ware house ü'" / "ware house ü.duckdb"
    serving = base / "serv'ing ü" / "serv'ing ü.duckdb"
    models = base / "mod'els ü"
    erase = base / "erase 'ü'.csv"  # an empty request file: its path still goes through the run
    erase.write_text("customer_id\n")
    monkeypatch.setenv("DAGSTER_HOME", str(base / "dag'ster ü"))
    assert main(["run", "--source", str(source), "--warehouse", str(warehouse), "--serving", str(serving),
                 "--models", str(models), "--erase", str(erase), "--quiet"]) == 0, capsys.readouterr().err[-3000:]
    run = published_run_id(serving)
    assert run and f"(run {run}," in capsys.readouterr().out
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("select count(*) from customer_scores").fetchall()[0][0] > 0
        recorded = con.execute("select source_dir from pipeline_runs where run_id = ?", [run]).fetchall()
    assert recorded == [(str(source),)]
    report = warehouse.parent / "reports" / f"run_{run}.html"
    assert report.exists() and (warehouse.parent / "reports" / "latest.html").read_text() == report.read_text()
    assert (warehouse.parent / "reports" / run / "quality.html").exists()
