"""The database source against a real, throw-away PostgreSQL server (tests/postgres_server.py): the same
scores as the same data in files, incremental nights that read only what changed and publish what a full
refresh would, a killed run that leaves the cursor, and clear one-line errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from data_quality.contract import ENTITIES
from orchestration.cli import main
from orchestration.publication import list_versions
from orchestration.source_database import DatabaseSource, write_source
from tests.conftest import run_args
from tests.postgres_server import PASSWORD

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("crm-potential"))


@pytest.fixture
def password(monkeypatch):
    monkeypatch.setenv("CRM_SOURCE_PASSWORD", PASSWORD)


PREVIOUS = "previous_rfm_segment, previous_lifecycle_stage, previous_priority_tier, previous_potential_rank"


def _scores(serving: Path, exclude: str = "run_id") -> list[tuple]:
    with duckdb.connect(str(serving), read_only=True) as con:
        return con.execute(f"select * exclude ({exclude}) from customer_scores order by customer_id").fetchall()


def _cursors(warehouse: Path) -> dict[str, tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {e: (v, n) for e, v, n in con.execute(
            "select entity, cursor_value, rows_read from ops.source_cursors where committed").fetchall()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_database_nights_full_then_incremental(postgres, password, small_sample, two_publications, tmp_path):
    work, first, _ = two_publications
    url = postgres.url(query="schema=crm")
    assert main(["generate", "--customers", "10", "--out", url]) == 0  # replaced below: the generator writes there
    write_source(small_sample, DatabaseSource.parse(url), ENTITIES.values())  # the same data as the files
    night = tmp_path / "night"
    night.mkdir()
    shutil.copy(work / ".pseudonym.key", night / ".pseudonym.key")  # the same pseudonyms as the file run

    # night 1: a full read publishes what the same data read from files published (two_publications' first run)
    assert main(run_args(url, night, "--as-of", "2026-08-31")) == 0
    from_files = next(v for v in list_versions(work / "serving.duckdb") if v.stem.endswith(first))
    assert _scores(night / "serving.duckdb") == _scores(from_files)
    cursors = _cursors(night / "warehouse.duckdb")
    with postgres.connect() as con:
        totals = {e: con.execute(f"select count(*) from crm.{e}").fetchall()[0][0] for e in ENTITIES}
    assert {e: n for e, (_, n) in cursors.items()} == totals  # the first night reads everything

    # the CRM moves on: 25 customers change, 12 new orders arrive
    with postgres.connect() as con:
        changed = [r[0] for r in con.execute("select distinct customer_id from crm.customers order by 1 limit 25")]
        con.execute("update crm.customers set city = 'Moved', updated_at = timestamp '2026-10-01 09:00:00' "
                    "where customer_id = any(%s)", [changed])
        con.execute("insert into crm.orders select 'NEW-' || order_id, customer_id, timestamp '2026-10-01 12:00:00', "
                    "amount, status, currency, product_category, quantity, sales_channel "
                    "from crm.orders where status = 'completed' order by order_id limit 12")
        expected = {
            "customers": con.execute(  # every row of a customer with a changed (or undated) row
                "select count(*) from crm.customers where customer_id in (select customer_id from crm.customers "
                "where updated_at >= %s::timestamp or updated_at is null)", [cursors["customers"][0]]).fetchall()[0][0],
            "orders": con.execute("select count(*) from crm.orders where ordered_at >= %s::timestamp "
                                  "or ordered_at is null", [cursors["orders"][0]]).fetchall()[0][0],
        }
    assert expected["orders"] >= 12
    published = _digest(night / "serving.duckdb")

    # a run killed after its ingest leaves the cursor where it was
    proc = subprocess.Popen([CLI, *run_args(url, night)[:-1]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=os.environ.copy(), start_new_session=True)
    deadline = time.time() + 120
    for line in proc.stdout:
        if "OK created sql table model" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _cursors(night / "warehouse.duckdb") == cursors
    assert _digest(night / "serving.duckdb") == published

    # night 2: only the changed keys' rows and the new orders are read ... (and a customer asks to be erased)
    erase = tmp_path / "erase.csv"
    erase.write_text(f"customer_id\n{changed[0]}\n")
    assert main(run_args(url, night, "--erase", str(erase))) == 0
    with duckdb.connect(str(night / "warehouse.duckdb"), read_only=True) as con:  # the merged history too
        for table in ("source_mirror.customers", "source_mirror.orders", "source_mirror.interactions",
                      "raw.customers", "raw.orders"):
            assert con.execute(f"select count(*) from {table} where trim(customer_id) = ?",
                               [changed[0]]).fetchall()[0][0] == 0, table
    after = _cursors(night / "warehouse.duckdb")
    assert after["customers"][1] == expected["customers"] and after["orders"][1] == expected["orders"]
    assert after["orders"][0].startswith("2026-10-01 12:00:00") and after["orders"][0] > cursors["orders"][0]
    assert all(after[e][1] < totals[e] / 10 for e in ("customers", "orders", "interactions"))
    # (the same night twice: the second run's previous_* columns describe the first one's publication)
    incremental = _raw(night / "warehouse.duckdb"), _scores(night / "serving.duckdb", f"run_id, {PREVIOUS}")
    with duckdb.connect(str(night / "serving.duckdb"), read_only=True) as con:
        assert con.execute("select max(as_of_date) from customer_scores").fetchall()[0][0].isoformat() == "2026-10-01"
    # ... and a full refresh of the same night reads everything and finds the same rows, features and scores
    assert main(run_args(url, night, "--full-refresh")) == 0
    assert _cursors(night / "warehouse.duckdb")["orders"][1] == totals["orders"] + 12
    assert (_raw(night / "warehouse.duckdb"), _scores(night / "serving.duckdb", f"run_id, {PREVIOUS}")) == incremental


def _raw(warehouse: Path) -> dict[str, list[tuple]]:
    """The raw tables and the feature mart, row order aside (``_source_row`` numbers rows in load order)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = {e: f"select * exclude (_source_row) from raw.{e}" for e in ENTITIES}
        tables["features"] = "select * from marts.customer_features"
        return {name: sorted(con.execute(sql).fetchall(), key=repr) for name, sql in tables.items()}


def test_database_source_errors_are_one_clear_line(postgres, monkeypatch, small_sample, two_publications, tmp_path,
                                                   capsys):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    before = _digest(copy / "serving.duckdb")
    monkeypatch.setenv("CRM_SOURCE_PASSWORD", PASSWORD)
    write_source(small_sample, DatabaseSource.parse(postgres.url(query="schema=broken")), ENTITIES.values())
    with postgres.connect() as con:
        con.execute("alter table broken.orders drop column amount")
    cases = {
        "missing table": (postgres.url(query="schema=nowhere"),
                          "customers: required source table nowhere.customers not found in"),
        "missing column": (postgres.url(query="schema=broken"), "required column(s) amount missing"),
        "wrong password": (postgres.url(query="schema=crm"), "password authentication failed"),
        "unreachable host": ("postgresql://127.0.0.1:1/crm?user=crm&schema=crm", "cannot connect to the source database"),
    }
    for case, (url, phrase) in cases.items():
        if case == "wrong password":
            monkeypatch.setenv("CRM_SOURCE_PASSWORD", "wrong-password")
        assert main(run_args(url, copy)) == 1, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase in err[0] and "nothing was run" in err[0], (case, err)
        assert "wrong-password" not in err[0] and PASSWORD not in err[0]
        assert _digest(copy / "serving.duckdb") == before
    # a password in the URL is refused before anything runs (it would be stored with the run's parameters)
    assert main(run_args(postgres.url(password=True), copy)) == 2
    assert "the source URL holds a password" in capsys.readouterr().err
