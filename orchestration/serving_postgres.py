"""The PostgreSQL serving target: the night's release, published into a database schema BI servers can reach.

``--serving postgresql://user@host:5432/db?schema=crm_serving`` (``CRM_SERVING``) publishes the tables of the
night's serving file (the local release, still written beside the warehouse: the run report, rollback and the
next night's segment transitions read it) into PostgreSQL, write-audit-publish as for the file:

1. **write**: every table into a new schema ``<schema>__next_<run>``, by binary COPY from Arrow (ADBC's
   PostgreSQL driver), with the release's table and column descriptions as comments and, when the URL names
   one (``&reader_role=bi_reader``), SELECT granted to the BI tools' role;
2. **audit**: the loaded row counts and columns must equal the release's, else the new schema is dropped and
   nothing is published;
3. **publish**: in ONE transaction the current ``<schema>`` is renamed to ``<schema>__<its run>`` (kept for
   ``crm-potential rollback``) and the new one to ``<schema>``. PostgreSQL's catalog changes are transactional:
   a reader sees the old release or the new one, never neither or half; a query already running finishes on
   the old tables (its locks hold them; the rename does not wait for it).

Kept releases beyond ``keep`` are dropped afterwards (a reader still holding one makes that wait at most
``lock_timeout``, then it becomes a warning and the next night retries); erased customers are deleted from
the kept ones. Each release schema carries its run in its comment (JSON), which rollback reads.

The password comes from ``CRM_SERVING_PASSWORD`` or libpq's own ``PGPASSWORD`` / ``~/.pgpass`` (a URL holding one
is refused by the settings: the URL is recorded with the run); it is never printed, logged or stored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from orchestration.postgres_url import DatabaseError, PostgresUrl, failing_as, is_database_url, starting_with
from orchestration.postgres_url import execute as _execute
from orchestration.postgres_url import ident as _ident
from orchestration.postgres_url import literal as _literal
from orchestration.postgres_url import rows as _rows

__all__ = ["PostgresTarget", "ServingTargetError", "is_database_url", "publish_release", "rollback_release",
           "releases", "connect"]

DEFAULT_SCHEMA = "crm_serving"
PASSWORD_ENV = "CRM_SERVING_PASSWORD"
NEXT = "__next_"
LOCK_TIMEOUT = "10s"
WHAT = "PostgreSQL serving target"

ServingTargetError = DatabaseError  # one error type for both ends: the message names which end it is


@dataclass(frozen=True)
class PostgresTarget:
    url: PostgresUrl
    reader_role: str | None

    @classmethod
    def parse(cls, url: str) -> "PostgresTarget":
        parsed = PostgresUrl.parse(url, what="serving", password_env=PASSWORD_ENV, default_schema=DEFAULT_SCHEMA,
                                   own=("reader_role",))
        return cls(parsed, parsed.options.get("reader_role"))

    @property
    def schema(self) -> str:
        return self.url.schema

    @property
    def display(self) -> str:
        return self.url.display


def _scrub(message, target: PostgresTarget) -> str:
    return target.url.scrub(message)


def connect(target: PostgresTarget):
    return target.url.connect(WHAT)


@dataclass(frozen=True)
class Release:
    schema: str
    run_id: str
    as_of_date: str
    published_at: str


def releases(con, target: PostgresTarget) -> list[Release]:
    """The current release and the kept ones, newest publication first (schemas whose comment names a run)."""
    found = []
    for name, comment in _rows(con, "select nspname, obj_description(oid, 'pg_namespace') from pg_namespace "
                                    f"where nspname = {_literal(target.schema)} "
                                    f"or nspname like {starting_with(target.schema + '__')}"):
        try:
            info = json.loads(comment or "")
            found.append(Release(name, info["run_id"], info.get("as_of_date", ""), info.get("published_at", "")))
        except (ValueError, KeyError, TypeError):
            continue  # not one of ours (or a half-built schema of a killed run: no comment yet)
    return sorted(found, key=lambda r: r.published_at, reverse=True)


def _short(run_id: str) -> str:
    """A run id as a schema-name suffix: its first 8 letters and digits."""
    return re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or "run"


def _kept_name(target: PostgresTarget, run_id: str, taken: set[str]) -> str:
    base = f"{target.schema}__{_short(run_id)}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _release_tables(release: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    tables: dict[str, dict] = {}
    for name, comment in release.execute("select table_name, comment from duckdb_tables() "
                                         "where schema_name = 'main' order by table_name").fetchall():
        tables[name] = {"comment": comment, "columns": [], "rows": 0}
    for table, column, comment in release.execute(
            "select table_name, column_name, comment from duckdb_columns() where schema_name = 'main' "
            "order by table_name, column_index").fetchall():
        if table in tables:
            tables[table]["columns"].append((column, comment))
    for name, info in tables.items():
        info["rows"] = release.execute(f"select count(*) from {_ident(name)}").fetchall()[0][0]
    return tables


def _write(con, release: duckdb.DuckDBPyConnection, tables: dict[str, dict], schema: str,
           target: PostgresTarget) -> None:
    _execute(con, f"create schema {_ident(schema)}")
    for name, info in tables.items():
        reader = release.sql(f"select * from {_ident(name)}").to_arrow_reader(100_000)
        with con.cursor() as cur:
            cur.adbc_ingest(name, reader, mode="create", db_schema_name=schema)
        statements = [f"comment on table {_ident(schema, name)} is {_literal(info['comment'])}"] if info["comment"] else []
        statements += [f"comment on column {_ident(schema, name, column)} is {_literal(comment)}"
                       for column, comment in info["columns"] if comment]
        _execute(con, *statements)
    if target.reader_role:
        _execute(con, f"grant usage on schema {_ident(schema)} to {_ident(target.reader_role)}",
                 f"grant select on all tables in schema {_ident(schema)} to {_ident(target.reader_role)}")


def _audit(con, tables: dict[str, dict], schema: str) -> None:
    """The loaded schema must hold every table with the release's columns (in order) and row counts."""
    for name, info in tables.items():
        loaded = [c for (c,) in _rows(con, "select column_name from information_schema.columns where "
                                           f"table_schema = {_literal(schema)} and table_name = {_literal(name)} "
                                           "order by ordinal_position")]
        expected = [c for c, _ in info["columns"]]
        if loaded != expected:
            raise ServingTargetError(f"PostgreSQL's {name} has the columns {loaded}, the release {expected}")
        rows = _rows(con, f"select count(*) from {_ident(schema, name)}")[0][0]
        if rows != info["rows"]:
            raise ServingTargetError(f"PostgreSQL's {name} holds {rows:,} rows, the release {info['rows']:,}")


def _swap(con, target: PostgresTarget, new_schema: str) -> str | None:
    """In one transaction: the current release to its kept name, ``new_schema`` to the target schema.
    Returns the kept name of the replaced release (None on the first publication)."""
    existing = {n for (n,) in _rows(con, "select nspname from pg_namespace")}
    current = next((r for r in releases(con, target) if r.schema == target.schema), None)
    statements = [f"set local lock_timeout = {_literal(LOCK_TIMEOUT)}"]
    kept = None
    if target.schema in existing:
        kept = _kept_name(target, current.run_id if current else "unknown", existing)
        statements.append(f"alter schema {_ident(target.schema)} rename to {_ident(kept)}")
    statements.append(f"alter schema {_ident(new_schema)} rename to {_ident(target.schema)}")
    _execute(con, *statements)
    con.commit()
    return kept


def _prune_and_scrub(con, target: PostgresTarget, keep: int, erased: dict[str, list[str]]) -> list[str]:
    warnings = []
    kept = [r for r in releases(con, target) if r.schema != target.schema]
    for old in kept[keep:]:
        try:
            _execute(con, f"set local lock_timeout = {_literal(LOCK_TIMEOUT)}", f"drop schema {_ident(old.schema)} cascade")
            con.commit()
        except Exception as exc:
            con.rollback()
            warnings.append(f"the kept PostgreSQL release {old.schema} was not dropped ({_scrub(exc, target)}); "
                            "the next run retries")
    if any(erased.values()):
        for old in kept[:keep]:
            try:
                _scrub_schema(con, old.schema, erased)
                con.commit()
            except Exception as exc:
                con.rollback()
                warnings.append(f"the kept PostgreSQL release {old.schema} may still hold erased customers "
                                f"({_scrub(exc, target)}); the next run retries, or drop that schema")
    return warnings


def _scrub_schema(con, schema: str, erased: dict[str, list[str]]) -> None:
    columns: dict[str, set[str]] = {}
    for table, column in _rows(con, "select table_name, column_name from information_schema.columns "
                                    f"where table_schema = {_literal(schema)}"):
        columns.setdefault(table, set()).add(column)
    statements = [f"set local lock_timeout = {_literal(LOCK_TIMEOUT)}"]
    for table, cols in sorted(columns.items()):
        terms = [f"{_ident(c)}::text in ({', '.join(_literal(v) for v in erased[c])})"
                 for c in erased if c in cols and erased[c]]
        if terms:
            statements.append(f"delete from {_ident(schema, table)} where {' or '.join(terms)}")
    _execute(con, *statements)


def publish_release(release_file: Path, target: PostgresTarget, *, run_id: str, as_of_date: str, keep: int = 3,
                    erased: dict[str, list[str]] | None = None) -> list[str]:
    """Write, audit and swap in the release ``release_file`` (a serving DuckDB file); returns warnings about what
    was left undone after the swap. Raises ``ServingTargetError`` before the swap: then nothing changed for readers."""
    new_schema = f"{target.schema}{NEXT}{_short(run_id)}"
    con = connect(target)
    try:
        with failing_as(con, target.url, f"loading the release into {target.display}"):
            stale = [n for (n,) in _rows(con, "select nspname from pg_namespace where nspname like "
                                              f"{starting_with(target.schema + NEXT)}")]
            _execute(con, *(f"drop schema {_ident(n)} cascade" for n in stale))  # left by killed runs
            with duckdb.connect(str(release_file), read_only=True) as release:
                tables = _release_tables(release)
                _write(con, release, tables, new_schema, target)
            _audit(con, tables, new_schema)
            info = {"run_id": run_id, "as_of_date": as_of_date,
                    "published_at": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
            _execute(con, f"comment on schema {_ident(new_schema)} is {_literal(json.dumps(info))}")
            con.commit()
        try:
            _swap(con, target, new_schema)
        except Exception as exc:
            con.rollback()
            _drop_quietly(con, new_schema)
            raise ServingTargetError(f"swapping in the new release in {target.display} failed, readers keep the "
                                     f"previous one: {_scrub(exc, target)}") from None
        return _prune_and_scrub(con, target, keep, erased or {})
    finally:
        con.close()


def _drop_quietly(con, schema: str) -> None:
    try:
        _execute(con, f"drop schema if exists {_ident(schema)} cascade")
        con.commit()
    except Exception:
        con.rollback()


def rollback_release(target: PostgresTarget, run_id: str | None = None) -> Release:
    """Put a kept release back as ``<schema>`` (the newest other than the current, or the one of ``run_id``, a
    run id or its first characters); the current one is kept under its own name. Returns the release put back."""
    con = connect(target)
    try:
        with failing_as(con, target.url, f"rollback in {target.display}"):
            found = releases(con, target)
        current = next((r for r in found if r.schema == target.schema), None)
        kept = [r for r in found if r.schema != target.schema]
        candidates = [r for r in kept if (run_id is None and (current is None or r.run_id != current.run_id))
                      or (run_id is not None and r.run_id.startswith(run_id))]
        if not candidates:
            runs = ", ".join(r.run_id for r in kept) or "none"
            raise ServingTargetError(f"no kept release {'of run ' + run_id if run_id else 'older than the current one'} "
                                     f"in {target.display} (kept runs: {runs})")
        chosen = candidates[0]
        with failing_as(con, target.url, f"rollback in {target.display}"):
            _swap(con, target, chosen.schema)
        return chosen
    finally:
        con.close()
