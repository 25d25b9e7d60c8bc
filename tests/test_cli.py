"""The CLI's own messages (issue 16, item 7): errors in the flag's terms with the subcommand's usage, rollback's
table and short run ids, and a source folder without its required files refused before Dagster starts."""

from __future__ import annotations

import re
import time

import pytest

from orchestration.cli import main
from orchestration.publication import publish
from tests.test_publication import _record, _tiny_warehouse


def test_bad_values_and_options_are_said_in_the_subcommands_terms(capsys):
    assert main(["run", "--as-of", "2026-13-45"]) == 2
    err = capsys.readouterr().err
    assert "crm-potential run: error: argument --as-of: must be a date YYYY-MM-DD, got '2026-13-45'" in err
    assert "usage: crm-potential run" in err and "pydantic" not in err and "as_of_date" not in err
    assert main(["run", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "usage: crm-potential run" in err and "crm-potential run: error: unrecognized arguments: --bogus" in err
    assert main(["run", "--churn-horizon-days", "0"]) == 2
    assert "argument --churn-horizon-days: must be at least 1 day, got 0" in capsys.readouterr().err
    assert main(["rollback", "--nope"]) == 2
    assert "usage: crm-potential rollback" in capsys.readouterr().err


def test_rollback_lists_a_table_and_takes_short_run_ids(tmp_path, capsys):
    serving = tmp_path / "serving.duckdb"
    with _tiny_warehouse(tmp_path / "warehouse.duckdb") as con:
        for run in ("abc1-first", "abc2-second", "zzz3-third"):
            publish(con, serving, _record(run))
    assert main(["rollback", "--list", "--serving", str(serving)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run", "as"] and "published (UTC)" in lines[0]
    assert lines[1].startswith("* zzz3-thi") and "(current)" in lines[1]  # the current one first, marked
    assert [line.split()[0] for line in lines[2:4]] == ["abc2-sec", "abc1-fir"]
    assert main(["rollback", "--serving", str(serving), "--to", "abc"]) == 2
    assert "the run id 'abc' is ambiguous: abc1-first, abc2-second" in capsys.readouterr().err
    assert main(["rollback", "--serving", str(serving), "--to", "abc1"]) == 0
    assert "to run abc1-first" in capsys.readouterr().out
    assert main(["rollback", "--list", "--serving", str(serving)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("* abc1-fir")


def test_a_source_folder_without_its_required_files_is_refused_at_once(tmp_path, capsys):
    started = time.perf_counter()
    assert main(["run", "--source", str(tmp_path), "--warehouse", str(tmp_path / "w" / "warehouse.duckdb")]) == 1
    assert time.perf_counter() - started < 30  # before Dagster, dbt and the models load (61 s in the issue)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "starting the nightly job" not in line]
    assert len(err) == 1 and "customers: required source file not found in" in err[0] and "nothing was run" in err[0]
    assert not (tmp_path / "w" / "warehouse.duckdb").exists()


def test_validate_checks_a_source_in_seconds_and_says_what_a_night_would(small_sample, tmp_path, capsys):
    """``crm-potential validate``: the night's source checks on a scratch warehouse; the same failure lines as the
    night itself, and nothing of the real warehouse or serving database touched."""
    import shutil

    import duckdb

    from tests.conftest import run_args

    work = tmp_path / "work"
    assert main(["validate", "--source", str(small_sample), "--serving", str(work / "serving.duckdb")]) == 0
    out = capsys.readouterr().out
    assert "The source passes every check of a night" in out and "customers 1,244 rows" in out
    assert not work.exists()  # no warehouse, no serving database, no logs where a run would put them

    broken = tmp_path / "broken"
    shutil.copytree(small_sample, broken)
    duckdb.execute(  # one order in ten with an amount that is not a number: far above the 1 % bad-row share
        f"copy (select * replace (case when hash(order_id) % 10 = 0 then 'n/a' else amount end as amount) "
        f"from read_csv('{small_sample}/orders.csv', all_varchar=true)) to '{broken}/orders.csv' (header)")
    assert main(["validate", "--source", str(broken), "--quiet"]) == 1
    said = [line.strip() for line in capsys.readouterr().err.splitlines() if line.startswith("  - ")]
    assert any("orders" in line and "unparseable amount" in line for line in said), said
    assert main(run_args(broken, work)) == 1  # the night on the same source fails with the same lines
    night = [re.sub(r"; dbt log: \S+", "", line.strip()) for line in capsys.readouterr().err.splitlines()
             if line.startswith("  - ")]
    assert said == night  # (validate names no dbt log: its scratch warehouse is gone when it ends)


@pytest.mark.parametrize("first, last, message", [
    ("2026-09-30", "2026-09-28", "crm-potential: error: --from 2026-09-30 is after --to 2026-09-28"),
    ("2020-01-01", "2020-01-02", "crm-potential: error: the nights run from 2024-01-01 (CRM_PARTITIONS_START) to "
                                 "today; 2020-01-01 .. 2020-01-02 is not inside them"),
])
def test_a_backfill_range_outside_the_nights_is_refused(first, last, message, capsys):
    assert main(["backfill", "--from", first, "--to", last]) == 2
    assert capsys.readouterr().err.strip() == message


def test_an_as_of_date_before_the_first_night_is_noted_not_warned(small_sample, capsys):
    """``--as-of`` earlier than the nights the UI lists (CRM_PARTITIONS_START; CDNOW's 1997, say) files the run under
    today's night: that is said once, as information, and never as "give --as-of", which the user did."""
    assert main(["validate", "--source", str(small_sample), "--as-of", "2023-06-30"]) == 0
    out = capsys.readouterr()
    said = out.out + out.err
    assert "as of 2023-06-30, a date outside the nights the Dagster UI lists (CRM_PARTITIONS_START 2024-01-01" in said
    assert "give --as-of" not in said


def test_the_spark_engine_without_pyspark_says_what_to_install_before_anything_runs(tmp_path, monkeypatch, capsys):
    """``make test``'s venv has no pyspark (the spark extra lives in .venv-spark): ``--engine spark`` (or
    ``CRM_ENGINE=spark``) says what to install and touches nothing; a misspelt engine names the variable."""
    for how in (["--engine", "spark"], []):
        monkeypatch.setenv("CRM_ENGINE", "duckdb" if how else "spark")
        assert main(["run", "--warehouse", str(tmp_path / "warehouse.duckdb"), *how]) == 2
        err = capsys.readouterr().err
        assert "--engine spark needs pyspark and dbt-spark: install the spark extra" in err
        assert not (tmp_path / "warehouse.duckdb").exists()
    monkeypatch.setenv("CRM_ENGINE", "sparkle")
    assert main(["run", "--warehouse", str(tmp_path / "warehouse.duckdb")]) == 2
    assert "CRM_ENGINE" in capsys.readouterr().err
    monkeypatch.setenv("CRM_ENGINE", "spark")
    monkeypatch.setenv("CRM_SPARK_DRIVER_MEMORY", "lots")
    assert main(["run", "--warehouse", str(tmp_path / "warehouse.duckdb")]) == 2
    assert "CRM_SPARK_DRIVER_MEMORY) must be a JVM size such as 2g" in capsys.readouterr().err
