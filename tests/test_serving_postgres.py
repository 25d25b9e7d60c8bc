"""The PostgreSQL serving target against a real, throw-away PostgreSQL server (tests/postgres_server.py).

The readers here are psycopg connections, an independent libpq client as a BI server's driver would be.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import duckdb
import pytest

from orchestration.cli import main
from orchestration.publication import list_versions, publish
from orchestration.serving_postgres import (
    PostgresTarget,
    ServingTargetError,
    connect,
    publish_release,
    releases,
)
from orchestration.settings import PipelineSettings, SettingsError
from tests.conftest import published_run_id, run_args
from tests.postgres_server import PASSWORD
from tests.test_publication import _record, _tiny_warehouse


@pytest.fixture
def password(monkeypatch):
    monkeypatch.setenv("CRM_SERVING_PASSWORD", PASSWORD)


def _target(server: PostgresServer, schema: str) -> PostgresTarget:
    return PostgresTarget.parse(server.url(query=f"schema={schema}"))


def _tables(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as con:
        names = [n for (n,) in con.execute("select table_name from duckdb_tables() order by 1").fetchall()]
        return {n: sorted(con.execute(f'select * from "{n}"').fetchall(), key=repr) for n in names}


def _pg_tables(server: PostgresServer, schema: str, names) -> dict[str, list[tuple]]:
    with server.connect() as con:
        return {n: sorted(con.execute(f'select * from "{schema}"."{n}"').fetchall(), key=repr) for n in names}


class Poller(threading.Thread):
    """A BI reader: queries the serving schema in a loop until stopped, on a pooled connection and on a new
    connection each time, and records every error and which runs each query saw."""

    def __init__(self, server: PostgresServer, schema: str):
        super().__init__(daemon=True)
        self.server, self.schema = server, schema
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.seen: list[tuple] = []

    def _query(self, con) -> None:
        runs = con.execute(f'select run_id, count(*) from "{self.schema}".customer_scores group by run_id').fetchall()
        published = con.execute(f'select count(*) from "{self.schema}".pipeline_runs where published').fetchall()
        self.seen.append((tuple(sorted(runs)), published[0][0]))

    def run(self) -> None:
        pooled = self.server.connect()
        while not self.stop.is_set():
            for fresh in (False, True):
                try:
                    if fresh:
                        with self.server.connect() as con:
                            self._query(con)
                    else:
                        self._query(pooled)
                except Exception as exc:  # every error counts: a BI dashboard would show it
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)
        pooled.close()


@pytest.mark.slow
def test_a_run_publishes_to_postgresql_while_readers_poll(postgres, password, two_publications, small_sample,
                                                          tmp_path, capsys):
    work, first, second = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    target = _target(postgres, "crm_serving")
    # the database already serves the second publication (as after an earlier night)
    assert publish_release(copy / "serving.duckdb", target, run_id=second, as_of_date="2026-09-30") == []
    poller = Poller(postgres, "crm_serving")
    poller.start()
    try:
        assert main(run_args(small_sample, copy, "--serving", target.display)) == 0
        time.sleep(0.2)
    finally:
        poller.stop.set()
        poller.join(timeout=30)
    third = published_run_id(copy / "serving.duckdb")
    assert third not in (first, second)
    out = capsys.readouterr().out
    assert f"serving database : postgresql://127.0.0.1:{postgres.port}/crm?user=crm&schema=crm_serving" in out
    # --quiet: no dbt lines; a redirected output: no colour codes; the summary names this run's report
    assert "dbt |" not in out and "\x1b[" not in out
    assert f"run report       : {copy / 'reports' / f'run_{third}.html'}" in out
    # zero reader errors, and every query saw one whole release: the old one, then the new one
    assert poller.errors == []
    assert len(poller.seen) > 50
    runs_seen = [runs for runs, _ in poller.seen]
    assert all(len(runs) == 1 for runs in runs_seen)
    order = [runs[0][0] for runs in runs_seen]
    assert order[0] == second and order[-1] == third
    switch = order.index(third)
    assert set(order[:switch]) == {second} and set(order[switch:]) == {third}  # never back, never mixed
    # the rows equal the DuckDB publication of the same run, table by table, and carry its descriptions
    local = _tables(copy / "serving.duckdb")
    assert _pg_tables(postgres, "crm_serving", local) == local
    with postgres.connect() as con:
        pg_comment = con.execute("select col_description('crm_serving.customer_scores'::regclass, 1)").fetchall()[0][0]
    with duckdb.connect(str(copy / "serving.duckdb"), read_only=True) as con:
        duck_comment = con.execute("select comment from duckdb_columns() where table_name = 'customer_scores' "
                                   "and column_index = 1").fetchall()[0][0]
    assert pg_comment and pg_comment == duck_comment
    # rollback: the kept release comes back in the database, and the local release file follows
    assert main(["rollback", "--serving", target.display, "--warehouse", str(copy / "warehouse.duckdb")]) == 0
    with postgres.connect() as con:
        assert con.execute("select distinct run_id from crm_serving.customer_scores").fetchall() == [(second,)]
    assert published_run_id(copy / "serving.duckdb") == second
    assert main(["rollback", "--list", "--serving", target.display]) == 0
    listed = capsys.readouterr().out
    assert f"run {third}" in listed and f"run {second}" in listed


def test_bad_targets_are_refused_with_one_clear_line(postgres, monkeypatch, two_publications):
    work, _, second = two_publications
    release = work / "serving.duckdb"
    # a password in the URL would be stored with the run's parameters: refused before anything runs
    with pytest.raises(SettingsError, match="holds a password"):
        PipelineSettings.from_env(serving_path=postgres.url(password=True))
    # a wrong password, an unreachable host: one line that names the target, never the password
    monkeypatch.setenv("CRM_SERVING_PASSWORD", "not-the-password")
    with pytest.raises(ServingTargetError) as wrong:
        publish_release(release, _target(postgres, "crm_a"), run_id=second, as_of_date="2026-09-30")
    message = str(wrong.value)
    assert "password authentication failed" in message and "not-the-password" not in message
    assert message.startswith(f"cannot connect to the PostgreSQL serving target postgresql://127.0.0.1:{postgres.port}"
                              "/crm?user=crm&schema=crm_a:")
    assert "\n" not in message
    closed = PostgresTarget.parse(f"postgresql://crm@127.0.0.1:1/crm?schema=crm_a")
    with pytest.raises(ServingTargetError, match="cannot connect to the PostgreSQL serving target"):
        publish_release(release, closed, run_id=second, as_of_date="2026-09-30")
    with pytest.raises(ServingTargetError, match="schema='Bad-Name'"):
        PostgresTarget.parse(postgres.url(query="schema=Bad-Name"))


def test_a_refused_database_release_publishes_nothing(postgres, tmp_path):
    """When the database cannot take the release, the local serving file stays as it was too."""
    serving = tmp_path / "serving.duckdb"
    bad = PostgresTarget.parse(f"postgresql://crm@127.0.0.1:1/crm?schema=crm_b")
    with _tiny_warehouse(tmp_path / "warehouse.duckdb") as con:
        publish(con, serving, _record("r1"))
        with pytest.raises(ServingTargetError):
            publish(con, serving, _record("r2"), target=bad)
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("select max(run_id) from pipeline_runs where published").fetchall()[0][0] == "r1"
    assert not list(tmp_path.glob(".serving.duckdb.*.tmp*"))


def test_kept_releases_are_pruned_scrubbed_and_killed_loads_cleaned(postgres, password, two_publications):
    work, first, second = two_publications
    kept_file = list_versions(work / "serving.duckdb")[0]
    target = _target(postgres, "crm_c")
    with postgres.connect() as con:  # a load killed half-way left its schema behind
        con.execute("create schema crm_c__next_deadbeef")
        con.execute("create table crm_c__next_deadbeef.customer_scores (customer_id text)")
    for i, (release, run_id) in enumerate([(kept_file, first), (work / "serving.duckdb", second),
                                           (kept_file, first + "-again"), (work / "serving.duckdb", second + "-again")]):
        publish_release(release, target, run_id=run_id, as_of_date="2026-09-30", keep=2)
    with postgres.connect() as con:
        schemas = {n for (n,) in con.execute("select nspname from pg_namespace where nspname like 'crm\\_c%'").fetchall()}
        victim = con.execute("select customer_id, customer_key from crm_c.customer_scores limit 1").fetchall()[0]
    assert "crm_c__next_deadbeef" not in schemas
    assert len(schemas) == 3  # the current release and two kept
    connection = connect(target)
    try:
        found = releases(connection, target)
    finally:
        connection.close()
    assert [r.run_id for r in found] == [second + "-again", first + "-again", second]
    # an erasure reaches the kept releases (the current one is rebuilt from the erased warehouse each night)
    publish_release(work / "serving.duckdb", target, run_id="after-erasure", as_of_date="2026-09-30", keep=2,
                    erased={"customer_id": [victim[0]], "customer_key": [victim[1]]})
    with postgres.connect() as con:
        for (schema,) in con.execute("select nspname from pg_namespace where nspname like 'crm\\_c\\_\\_%'").fetchall():
            left = con.execute(f"select count(*) from {schema}.customer_scores where customer_id = %s",
                               [victim[0]]).fetchall()[0][0]
            assert left == 0, schema


def test_a_writer_with_create_only_publishes_and_the_reader_role_reads(postgres, monkeypatch, two_publications):
    """The roles the README asks for: the pipeline's with CREATE on the database and nothing else, the BI
    tools' with only what ``reader_role`` grants."""
    work, _, second = two_publications
    with postgres.connect() as con:
        con.execute("create role crm_writer login password 'writer-pw'")
        con.execute("create role bi_reader login password 'reader-pw'")
        con.execute("create role nobody login password 'nobody-pw'")
        con.execute("grant create on database crm to crm_writer")
    monkeypatch.setenv("CRM_SERVING_PASSWORD", "writer-pw")
    url = f"postgresql://crm_writer@127.0.0.1:{postgres.port}/crm?schema=crm_d&reader_role=bi_reader"
    for run in (second, second + "-next"):  # the second night renames the first one's schema: owner rights do
        publish_release(work / "serving.duckdb", PostgresTarget.parse(url), run_id=run, as_of_date="2026-09-30")
    import psycopg

    def read(user: str, password: str):
        with psycopg.connect(host="127.0.0.1", port=postgres.port, user=user, password=password, dbname="crm") as con:
            return con.execute("select count(distinct run_id) from crm_d.customer_scores").fetchall()[0][0]

    assert read("bi_reader", "reader-pw") == 1
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        read("nobody", "nobody-pw")
