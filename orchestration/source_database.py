"""The database source: the contract's entities read from a PostgreSQL schema, incrementally.

``--source postgresql://user@host:5432/crm?schema=crm`` (``CRM_SOURCE_DIR``): each entity is the table or view
of its name in that schema, with the contract's columns (matched case-insensitively, as file headers are).
Rows travel as Arrow (ADBC's PostgreSQL driver, binary COPY out) and land in ``raw.<entity>`` exactly as a
Parquet file's would: every contract column cast to text by DuckDB, lineage in ``_source_file`` (the table)
and ``_source_row``. From there the same contract, quarantine, checks and models apply.

Incremental loads. The warehouse keeps a mirror of each source table (``source_mirror.<entity>``); a night
reads only the rows of keys that changed since the last *published* night's cursor and merges them into the
mirror by key, then ``raw.<entity>`` is the mirror:

- the cursor is ``updated_at`` when the table has it, else the entity's first required date column (customers
  ``created_at``, orders ``ordered_at``, ...; a table with neither is read in full); a night reads every row of each key that has a row with a cursor
  value at or after the stored one, or none (all versions of a changed customer, so the merge equals a full
  read), and replaces those keys' rows in the mirror;
- the new cursor (the largest cursor value read) is stored as pending and becomes the cursor only when the run
  publishes (``commit_cursors``): a failed or killed run leaves it where it was, and the next night reads the
  same rows again (the merge is idempotent);
- a row with ``is_deleted`` true or a ``deleted_at`` (soft delete) removes its key; rows deleted outright are
  not seen by an incremental read: ``--full-refresh`` (or a changed source URL) reads everything again;
- tables without ``updated_at``: a row inserted later with a cursor value older than the cursor is missed until
  a full refresh.

The password comes from ``CRM_SOURCE_PASSWORD``, ``PGPASSWORD`` or ``~/.pgpass``, never from the URL.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from data_quality.contract import Entity
from orchestration.postgres_url import DatabaseError, PostgresUrl, execute, failing_as, ident, literal, rows
from orchestration.source_files import LoadResult, SourceError, create_tables, normalise_column, select_contract
from orchestration.sql_quoting import quote_ident

PASSWORD_ENV = "CRM_SOURCE_PASSWORD"
DEFAULT_SCHEMA = "public"
WHAT = "source database"
MIRROR = "source_mirror"
SOFT_DELETE = ("is_deleted", "deleted_at")
CURSORS_DDL = """
create table if not exists ops.source_cursors (
    source varchar, entity varchar, cursor_column varchar, cursor_value varchar, run_id varchar,
    committed boolean, rows_read bigint, loaded_at timestamp
)"""


@dataclass(frozen=True)
class DatabaseSource:
    url: PostgresUrl

    @classmethod
    def parse(cls, url: str) -> "DatabaseSource":
        return cls(PostgresUrl.parse(url, what="source", password_env=PASSWORD_ENV, default_schema=DEFAULT_SCHEMA))

    @property
    def display(self) -> str:
        return self.url.display


def cursor_column(entity: Entity, columns: set[str]) -> str | None:
    """``updated_at``, else the first date column present (required ones first); None: read in full each night."""
    if "updated_at" in columns:
        return "updated_at"
    dated = [c for c in entity.columns if entity.types.get(c) in ("timestamp", "date") and c in columns]
    return dated[0] if dated else None


def _find_table(pg, source: DatabaseSource, entity: Entity) -> str | None:
    """The entity's table or view (matched case-insensitively); None for an optional one that is absent."""
    names = [n for (n,) in rows(pg, "select table_name from information_schema.tables where table_schema = "
                                    f"{literal(source.url.schema)} and lower(table_name) = {literal(entity.name)} "
                                    "order by table_name")]
    if not names and entity.required:
        raise SourceError(f"{entity.name}: required source table {source.url.schema}.{entity.name} not found in "
                          f"{source.display}. Create it (or a view of that name) with the contract's columns.")
    return names[0] if names else None


def _columns(pg, source: DatabaseSource, table: str) -> list[str]:
    return [c for (c,) in rows(pg, "select column_name from information_schema.columns where table_schema = "
                                   f"{literal(source.url.schema)} and table_name = {literal(table)} "
                                   "order by ordinal_position")]


def check_source(source: DatabaseSource, entities) -> None:
    """Before a run starts: the database answers, and every required table has its required columns (the same
    messages as the ingest step's); raises ``DatabaseError`` or ``SourceError``."""
    pg = source.url.connect(WHAT)
    try:
        for entity in entities:
            table = _find_table(pg, source, entity)
            if table is not None:
                _check_columns(entity, source, table, _columns(pg, source, table))
    finally:
        pg.close()


def _check_columns(entity: Entity, source: DatabaseSource, table: str, found: list[str]) -> dict[str, str]:
    """Contract column -> the table's column (matched case-insensitively); raises when a required one is missing."""
    by_name: dict[str, str] = {}
    for original in found:
        by_name.setdefault(normalise_column(original), original)
    missing = [c for c in entity.required_columns if c not in by_name]
    if missing:
        raise SourceError(f"{entity.name} ({source.url.schema}.{table} in {source.display}): required column(s) "
                          f"{', '.join(missing)} missing. Found columns: {', '.join(found)}. Add the column(s) "
                          "to the table or view; names are matched case-insensitively.")
    return by_name


def _committed_cursor(con: duckdb.DuckDBPyConnection, source: DatabaseSource, entity: str) -> tuple[str, str] | None:
    found = con.execute("select cursor_column, cursor_value from ops.source_cursors where source = ? and entity = ? "
                        "and committed order by loaded_at desc limit 1", [source.display, entity]).fetchall()
    return found[0] if found else None


def load_entity_from_database(con: duckdb.DuckDBPyConnection, entity: Entity, source: DatabaseSource, *,
                              run_id: str, full_refresh: bool = False) -> LoadResult:
    """Read ``entity`` from the database (all of it, or what changed since the committed cursor) into the mirror
    and ``raw.<entity>``; ``LoadResult.rows`` is the rows in raw, ``rows_read`` in its metadata what was read."""
    con.execute("create schema if not exists ops")
    con.execute(CURSORS_DDL)
    con.execute(f"create schema if not exists {MIRROR}")
    create_tables(con, entity)
    pg = source.url.connect(WHAT)
    try:
        table = _find_table(pg, source, entity)
        if table is None:
            con.execute(f"drop table if exists {MIRROR}.{entity.name}")
            return LoadResult(entity.name, [], 0, list(entity.optional_columns), [], present=False)
        by_name = _check_columns(entity, source, table, _columns(pg, source, table))
        cursor = cursor_column(entity, set(by_name))
        committed = None if full_refresh else _committed_cursor(con, source, entity.name)
        if committed and (cursor is None or committed[0] != cursor):
            committed = None  # the table gained or lost updated_at: read it all once
        mirror_exists = con.execute("select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
                                    [MIRROR, entity.name]).fetchall()[0][0]
        incremental = bool(committed) and bool(mirror_exists)
        qualified = ident(source.url.schema, table)
        # one snapshot for the cursor and the rows: nothing committed in between is skipped or half-read
        pg.commit()
        execute(pg, "set session characteristics as transaction isolation level repeatable read, read only")
        pg.commit()
        new_cursor = None if cursor is None else rows(pg, f"select max({ident(by_name[cursor])})::text from {qualified}")[0][0]
        label = f"{source.display}#{source.url.schema}.{entity.name}"
        read = _read_into_mirror(con, pg, entity, qualified, by_name, label,
                                 since=(committed[1], cursor) if incremental else None)
        pg.rollback()
    except (DatabaseError, SourceError):
        raise
    except Exception as exc:
        raise SourceError(f"{entity.name}: reading {source.display} failed: {source.url.scrub(exc)}") from None
    finally:
        pg.close()
    if new_cursor is None and incremental:  # an empty table: the cursor stays
        new_cursor = committed[1]
    con.execute("delete from ops.source_cursors where source = ? and entity = ? and not committed",
                [source.display, entity.name])
    if new_cursor is not None:
        con.execute("insert into ops.source_cursors values (?, ?, ?, ?, ?, false, ?, current_timestamp)",
                    [source.display, entity.name, cursor, new_cursor, run_id, read])
    con.execute(f"insert into raw.{entity.name} select * from {MIRROR}.{entity.name}")
    total = con.execute(f"select count(*) from raw.{entity.name}").fetchall()[0][0]
    if total == 0 and entity.required:
        raise SourceError(f"{entity.name} ({source.url.schema}.{entity.name} in {source.display}): the table has no "
                          "rows. The pipeline needs at least one.")
    return LoadResult(entity.name, [label], total, [c for c in entity.optional_columns if c not in by_name],
                      sorted(set(by_name) - set(entity.columns) - set(SOFT_DELETE)), rows_read=read,
                      mode="incremental" if incremental else "full")


def _deleted(by_name: dict[str, str]) -> str:
    terms = []
    if "is_deleted" in by_name:
        terms.append(f"coalesce(cast({quote_ident(by_name['is_deleted'])} as boolean), false)")
    if "deleted_at" in by_name:
        terms.append(f"{quote_ident(by_name['deleted_at'])} is not null")
    return " or ".join(terms) or "false"


def _read_into_mirror(con, pg, entity: Entity, qualified: str, by_name: dict[str, str], label: str, *,
                      since: tuple[str, str] | None) -> int:
    """Stream the table's rows (with ``since`` = (cursor value, cursor column): every row of the keys changed
    since then) from the database into ``source_mirror.<entity>``: the whole mirror on a full read, the changed
    keys' rows on an incremental one (as text, like a Parquet file's, numbered on after the mirror's rows).
    Returns the rows read."""
    mirror = f"{MIRROR}.{entity.name}"
    wanted = [by_name[c] for c in entity.columns if c in by_name] + [by_name[c] for c in SOFT_DELETE if c in by_name]
    sql = f"select {', '.join(ident(c) for c in wanted)} from {qualified}"
    if since is not None:
        key, col = ident(by_name[entity.key]), ident(by_name[since[1]])
        sql += f" where {key} in (select {key} from {qualified} where {col} >= {literal(since[0])} or {col} is null)"
    sql += f" order by {ident(by_name[entity.key])}"
    columns = select_contract(entity, {c: quote_ident(o) for c, o in by_name.items()})
    keep = f"where not ({_deleted(by_name)})"
    con.execute("begin")
    try:
        with pg.cursor() as cur:
            cur.execute(sql)
            con.register("source_reader", cur.fetch_record_batch())
            try:
                if since is None:
                    con.execute(f"create or replace table {mirror} as select {columns}, {literal(label)} as _source_file, "
                                f"row_number() over () as _source_row from source_reader {keep}")
                    read = con.execute(f"select count(*) from {mirror}").fetchall()[0][0]
                else:
                    con.execute("create or replace temp table source_batch as select * from source_reader")
                    read = con.execute("select count(*) from source_batch").fetchall()[0][0]
                    con.execute(f"delete from {mirror} where {entity.key} in "
                                f"(select cast({quote_ident(by_name[entity.key])} as varchar) from source_batch)")
                    con.execute(f"insert into {mirror} select {columns}, {literal(label)}, "
                                f"(select coalesce(max(_source_row), 0) from {mirror}) + row_number() over () "
                                f"from source_batch {keep}")
                    con.execute("drop table source_batch")
            finally:
                con.unregister("source_reader")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return read


def erase_from_mirror(con: duckdb.DuckDBPyConnection, entity: str, ids: list[str]) -> int:
    """Erased customers leave the merged history too (the raw table is rebuilt from it every night)."""
    exists = con.execute("select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
                         [MIRROR, entity]).fetchall()[0][0]
    if not exists or not ids:
        return 0
    return con.execute(f"delete from {MIRROR}.{entity} where trim(customer_id) in (select unnest(?::varchar[]))",
                       [ids]).fetchall()[0][0]


def commit_cursors(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """The run published: its pending cursors become the cursors (older ones are dropped)."""
    con.execute(CURSORS_DDL)
    pending = con.execute("select source, entity from ops.source_cursors where run_id = ? and not committed",
                          [run_id]).fetchall()
    for src, entity in pending:
        con.execute("delete from ops.source_cursors where source = ? and entity = ? and committed", [src, entity])
    con.execute("update ops.source_cursors set committed = true where run_id = ?", [run_id])
    return len(pending)


# contract type -> the column type a CRM database would use for it
_DATABASE_TYPES = {"timestamp": "timestamp", "date": "date", "number": "double", "integer": "bigint", "bool": "boolean"}


def _typed(con: duckdb.DuckDBPyConnection, entity: Entity, files) -> "pa.Table":
    """The entity's files with each contract column in its database type where every value casts to it."""
    paths = "[" + ", ".join(literal(str(p)) for p in files) + "]"
    reader = (f"read_parquet({paths})" if files[0].suffix == ".parquet"
              else f"read_csv({paths}, all_varchar = true, header = true)")
    parts = []
    for column in con.sql(f"select * from {reader} limit 0").columns:
        kind, q = _DATABASE_TYPES.get(entity.types.get(column, "text")), quote_ident(column)
        bad = kind and con.execute(f"select count(*) from {reader} where {q} is not null and "
                                   f"try_cast({q} as {kind}) is null").fetchall()[0][0]
        parts.append(f"cast({q} as {kind}) as {q}" if kind and not bad else q)
    return con.sql(f"select {', '.join(parts)} from {reader}").to_arrow_table()


def write_source(folder, source: DatabaseSource, entities) -> dict[str, int]:
    """Load a source folder (the generator's files) into the database as typed tables, one per entity (replaced):
    a contract column whose every value casts to its type gets that type, else it stays text (as a sloppy CRM's
    would). Returns rows per table."""
    from pathlib import Path

    from orchestration.source_files import find_files

    pg = source.url.connect(WHAT)
    counts = {}
    try:
        with failing_as(pg, source.url, f"writing the source into {source.display}"):
            with pg.cursor() as cur:
                cur.execute(f"create schema if not exists {ident(source.url.schema)}")
            with duckdb.connect() as con:
                for entity in entities:
                    files = find_files(Path(folder), entity.name)
                    if files:
                        table = _typed(con, entity, files)
                        with pg.cursor() as cur:
                            cur.adbc_ingest(entity.name, table, mode="replace", db_schema_name=source.url.schema)
                        counts[entity.name] = table.num_rows
            pg.commit()
    finally:
        pg.close()
    return counts
