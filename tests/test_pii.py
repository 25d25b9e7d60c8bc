"""Personal data: nothing identifying is published, and erased customers vanish everywhere we keep data."""

from __future__ import annotations

import re

import duckdb
import pytest

from data_quality.pii import pseudonym_key, pseudonymise
from orchestration.cli import main
from tests.conftest import run_args

pytestmark = pytest.mark.slow


def _text_values(db, schemas=None) -> set[str]:
    """Every text value in every table of a DuckDB file (optionally only some schemas)."""
    values: set[str] = set()
    with duckdb.connect(str(db), read_only=True) as con:
        cols = con.execute("select table_schema, table_name, column_name from information_schema.columns "
                           "where data_type = 'VARCHAR'").fetchall()
        for schema, table, column in cols:
            if schemas and schema not in schemas:
                continue
            values.update(r[0] for r in con.execute(
                f'select distinct "{column}" from "{schema}"."{table}" where "{column}" is not null').fetchall())
    return values


def _contains(values: set[str], needles: set[str]) -> set[str]:
    return {n for n in needles if any(n in v for v in values)}


def _holds(values: set[str], ids: set[str]) -> set[str]:
    """Ids present as a value, or inside a quarantined raw row (``customer_id=<id>;``)."""
    return (ids & values) | {i for i in ids if any(f"customer_id={i};" in v for v in values)}


def test_published_tables_hold_no_clear_text_personal_data(small_sample, tmp_path):
    work = tmp_path / "work"
    assert main(run_args(small_sample, work)) == 0
    people = duckdb.execute(
        f"select email, phone, full_name from read_csv('{small_sample}/customers.csv', all_varchar=true) limit 200"
    ).fetchall()
    published = _text_values(work / "serving.duckdb")
    assert not [v for v in published if re.search(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", v, re.I)]
    assert not _contains(published, {p[2] for p in people if p[2]})
    assert not _contains(published, {p[1].replace(" ", "")[-9:] for p in people if p[1]})
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        profile_cols = {r[0] for r in con.execute("describe customer_profile").fetchall()}
    assert "customer_id" not in profile_cols and "customer_key" in profile_cols
    assert oct((work / ".pseudonym.key").stat().st_mode & 0o777) == "0o600"


def test_erased_customers_leave_no_trace(small_sample, tmp_path):
    work = tmp_path / "work"
    assert main(run_args(small_sample, work)) == 0
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        victims = [r[0] for r in con.execute(
            "select customer_id from customer_scores where potential_rank in (1, 100, 700)").fetchall()]
    erase = tmp_path / "erase.csv"
    erase.write_text("customer_id\n" + "\n".join(victims) + "\n")
    assert main(run_args(small_sample, work, "--erase", str(erase))) == 0
    assert main(run_args(small_sample, work)) == 0  # the next nightly run, without the flag: still erased
    keys = set(pseudonymise(victims, pseudonym_key(work / ".pseudonym.key")))
    needles = set(victims) | keys
    assert not _holds(_text_values(work / "serving.duckdb"), needles)
    versions = list((work / ".serving-versions").glob("*.duckdb"))
    assert len(versions) == 2
    for version in versions:
        assert not _holds(_text_values(version), needles), version
    # the warehouse keeps the ids only in the erasure register, which applies them on every run
    warehouse = _text_values(work / "warehouse.duckdb", schemas=["raw", "staging", "intermediate", "marts", "scores", "quarantine"])
    assert not _holds(warehouse, needles)
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        assert sorted(r[0] for r in con.execute("select customer_id from ops.erasure_requests").fetchall()) == sorted(victims)
        assert not con.execute("select count(*) from ops.customer_pseudonyms where customer_id in (?, ?, ?)",
                               victims).fetchall()[0][0]
