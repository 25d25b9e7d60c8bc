"""The PostgreSQL serving target read through pgjdbc, the JDBC driver of Metabase, DBeaver and Tableau.

The session's sample publication is published into a throw-away PostgreSQL server (tests/postgres_server.py) as
``crm-potential run --serving postgresql://...`` does, then tests/bi_clients/jdbc/Probe.java reads it with the
driver jar (Debian's libpostgresql-jdbc-java) the way those tools sync a schema: tables and columns from DatabaseMetaData (with REMARKS, the
comments they show as descriptions), counts, every row fetched. What it reads must equal what our DuckDB reads in
the serving file. The jar and the compiled probe are cached in .venv-bi/jdbc/ (tests/bi_clients/jdbc/drivers.py).
DuckDB's JDBC driver is on Maven Central only, which this machine kind does not reach: not run here.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from orchestration.serving_postgres import PASSWORD_ENV, PostgresTarget, publish_release
from tests.bi_clients.jdbc.drivers import probe
from tests.bi_clients.probe import plain_client, split_queries
from tests.postgres_server import DATABASE, PASSWORD, USER, PostgresServer

pytestmark = pytest.mark.slow  # the sample publication is a real pipeline run (shared with test_bi_clients)
ROOT = Path(__file__).resolve().parents[1]
QUERIES = split_queries((ROOT / "examples" / "queries.sql").read_text())
SCHEMA = "crm_serving"
# the java.sql.Types a driver may report for each DuckDB type we publish (pgjdbc says BIT for boolean)
JDBC_TYPES = {"VARCHAR": {12}, "BOOLEAN": {-7, 16}, "BIGINT": {-5}, "INTEGER": {4}, "DOUBLE": {8}, "DATE": {91},
              "TIMESTAMP": {93}}


def reference(serving: Path) -> dict:
    """What our DuckDB reads in the serving file (tests/bi_clients/probe.py), with each column's type."""
    report = plain_client(str(serving), QUERIES)
    with duckdb.connect(str(serving), read_only=True) as con:
        types = con.execute("select table_name, column_name, data_type from duckdb_columns() "
                            "where database_name = current_database() and schema_name = 'main'").fetchall()
    report["types"] = {(table, column): data_type for table, column, data_type in types}
    assert report["tables"]["customer_scores"]["rows"] > 1000 and len(report["tables"]) >= 7
    return report


@pytest.fixture(scope="module")
def ours(serving_copy) -> dict:
    return reference(serving_copy)


@pytest.fixture(scope="module")
def published(postgres, two_publications, serving_copy):
    """The module's throw-away server (tests/conftest.py) holding the sample's second publication in
    ``crm_serving``, as a run publishes it."""
    _, _, run_id = two_publications
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSWORD_ENV, PASSWORD)
        target = PostgresTarget.parse(postgres.url(query=f"schema={SCHEMA}"))
        assert publish_release(serving_copy, target, run_id=run_id, as_of_date="2026-09-30") == []
    return postgres


def jdbc_url(server: PostgresServer, search_path: str = SCHEMA) -> str:
    """The URL a Metabase or DBeaver administrator enters (host, port, database; the schema to show)."""
    return f"jdbc:postgresql://127.0.0.1:{server.port}/{DATABASE}?currentSchema={search_path}"


@pytest.fixture(scope="module")
def pgjdbc(published) -> dict:
    return probe("pgjdbc", jdbc_url(published), USER, PASSWORD, queries=None)


def test_pgjdbc_connects_as_a_bi_tool_would(pgjdbc):
    assert "open" not in pgjdbc, f"pgjdbc cannot connect: {pgjdbc['open']}"
    assert pgjdbc["driver"]["name"] == "PostgreSQL JDBC Driver"
    assert pgjdbc["driver"]["version"].startswith("42.")  # Debian 12: 42.5.5; Metabase and DBeaver ship 42.x
    assert (pgjdbc["catalog"], pgjdbc["schema"]) == (DATABASE, SCHEMA)


def test_pgjdbc_reads_every_published_table_with_its_columns_comments_and_rows(pgjdbc, ours):
    """What Metabase's sync and DBeaver's navigator show: each table and column with its description, in order,
    typed (no column the driver cannot map), and every row fetchable."""
    tables = pgjdbc["tables"]
    assert "error" not in tables, f"pgjdbc cannot list the tables: {tables['error']}"
    assert sorted(tables) == sorted(ours["tables"])
    for name, expected in ours["tables"].items():
        read = tables[name]
        assert read["type"] == "TABLE" and read["comment"] == expected["comment"], name
        assert "error" not in read["columns"], f"pgjdbc cannot list {name}'s columns: {read['columns']['error']}"
        assert list(read["columns"]) == list(expected["columns"]), name  # names, in order
        assert {c: v["comment"] for c, v in read["columns"].items()} == expected["columns"], name
        for column, got in read["columns"].items():
            assert got["jdbc_type"] in JDBC_TYPES[ours["types"][name, column]], (name, column, got)
        assert read["rows"] == read["rows_fetched"] == expected["rows"], name
    assert pgjdbc["queries"] == {}


def test_example_queries_on_postgresql_fail_only_on_round_of_a_double(published, ours):
    """examples/queries.sql is DuckDB SQL. On PostgreSQL its queries stumble on one thing only: ``round(double,
    n)``, which PostgreSQL has for numeric alone; the queries without it return DuckDB's row counts as they are,
    and with that one function added so do the others.
    If the examples become portable (``round(x::numeric, 2)``), this test fails: then assert equal row counts."""
    plain = probe("pgjdbc", jdbc_url(published), USER, PASSWORD)["queries"]
    assert set(plain) == set(QUERIES)
    for name, result in plain.items():
        if "round(" in QUERIES[name]:
            assert "function round(double precision, integer) does not exist" in result.get("error", ""), (name, result)
        else:  # the rest is portable as it is
            assert result == ours["queries"][name], (name, result)
    with published.connect() as con:
        con.execute("create schema if not exists bi_compat")
        con.execute("create or replace function bi_compat.round(double precision, integer) returns numeric "
                    "language sql immutable as 'select round($1::numeric, $2)'")
    shimmed = probe("pgjdbc", jdbc_url(published, f"{SCHEMA},bi_compat"), USER, PASSWORD)
    assert shimmed["queries"] == ours["queries"]
