"""Score history for analysts: ``customer_scores_history`` and ``segment_history``.

One row per customer (per segment) and published night, so an analyst can follow a customer's score, rank, tier
and segments over time, and count tier movements month over month. Each release carries the history: the
warehouse's ``history`` schema (every published night, newest ``history_days``) plus the night being published,
which replaces any earlier publication of the same as-of date (a re-run of a night is idempotent). The warehouse
copy is updated only after the release is swapped in, so a night that failed its gates never enters it.

Erased customers (``ops.erasure_requests``) are left out of every release and deleted from the warehouse copy.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb

from orchestration.sql_quoting import quote_ident as _ident
from orchestration.sql_quoting import quote_literal as _quoted

SCHEMA = "history"
# about three months: three month ends for "tier movements month over month". Every release copies the whole
# history (one row per customer per night), so it is sized to stay cheap at a million customers.
DEFAULT_HISTORY_DAYS = 100

# the columns of customer_scores a customer's trajectory needs (their descriptions come from customer_scores)
CUSTOMER_COLUMNS = (
    "as_of_date", "run_id", "customer_id", "customer_key", "potential_score", "potential_rank", "priority_tier",
    "rfm_segment", "lifecycle_stage", "value_segment", "behaviour_cluster_label", "churn_probability", "p_alive",
    "expected_purchases", "expected_spend", "clv", "next_best_action", "action_channel", "next_category",
)

# published history table -> (the warehouse table a night comes from, its columns (None: all), table description)
HISTORY_TABLES: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "customer_scores_history": (
        "analytics.customer_scores", CUSTOMER_COLUMNS,
        "One row per customer and published as-of date: score, rank, tier, segments, churn, CLV and action of "
        "each night (newest CRM_HISTORY_DAYS days). A re-run of a night replaces that night's rows."),
    "segment_history": (
        "analytics.segment_summary", None,
        "segment_summary of every published as-of date (one row per segment, cut and night; newest "
        "CRM_HISTORY_DAYS days): how segments grow, shrink and change value over time."),
}


def _exists(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> bool:
    return bool(con.execute("select count(*) from duckdb_tables() where database_name = ? and schema_name = ? "
                            "and table_name = ?", [catalog, schema, table]).fetchall()[0][0])


def _select(source: str, columns: tuple[str, ...] | None) -> str:
    return f"select {', '.join(_ident(c) for c in columns) if columns else '*'} from {source}"


def _not_erased(erased: list[str]) -> tuple[str, list]:
    """A condition keeping the rows of customers not in ``erased`` (a table without customer_id keeps all)."""
    return ("not coalesce(list_contains(?::varchar[], customer_id), false)", [list(erased)]) if erased else ("true", [])


def oldest_kept(newest: date, history_days: int) -> date:
    return newest - timedelta(days=history_days)


def _history_parts(con: duckdb.DuckDBPyConnection, table: str, as_of: date, erased: list[str]) -> tuple[str, list]:
    """The rows of ``table`` after tonight: the warehouse's history without ``as_of``'s night, plus tonight's
    rows (this run's analytics table), both without erased customers. Returns a query and its parameters."""
    source, columns, _ = HISTORY_TABLES[table]
    keep, values = _not_erased(erased) if "customer_id" in (columns or ()) else ("true", [])
    parts, params = [f"select * from ({_select(source, columns)}) where {keep}"], list(values)
    home = con.execute("select current_database()").fetchall()[0][0]
    if _exists(con, home, SCHEMA, table):
        parts.append(f"select * from {_ident(SCHEMA, table)} where as_of_date <> ? and {keep}")
        params += [as_of, *values]
    return " union all by name ".join(f"({p})" for p in parts), params


def write_release_history(con: duckdb.DuckDBPyConnection, catalog: str, as_of: date, history_days: int,
                          erased: list[str]) -> dict[str, int]:
    """Create the history tables in the release ``catalog`` (``_history_parts``), pruned to the ``history_days``
    before the newest night, in date order. The warehouse is not changed (``keep_in_warehouse`` does that once
    the release is out). Returns rows per table."""
    counts = {}
    for table in HISTORY_TABLES:
        rows, params = _history_parts(con, table, as_of, erased)
        con.execute(f"create table {_ident(catalog, 'main', table)} as select * from ({rows}) "
                    f"where as_of_date >= (select max(as_of_date) from ({rows})) - to_days(cast(? as integer)) "
                    "order by as_of_date", params + params + [history_days])
        counts[table] = con.execute(f"select count(*) from {_ident(catalog, 'main', table)}").fetchall()[0][0]
    return counts


def comment_history(con: duckdb.DuckDBPyConnection, catalog: str) -> None:
    """Table descriptions from ``HISTORY_TABLES``; column descriptions from the tables the rows come from."""
    home = con.execute("select current_database()").fetchall()[0][0]
    for table, (source, _, description) in HISTORY_TABLES.items():
        con.execute(f"comment on table {_ident(catalog, 'main', table)} is {_quoted(description)}")
        schema, name = source.split(".")
        present = {c for (c,) in con.execute("select column_name from duckdb_columns() where database_name = ? and "
                                             "schema_name = 'main' and table_name = ?", [catalog, table]).fetchall()}
        for column, comment in con.execute(
                "select column_name, comment from duckdb_columns() where database_name = ? and schema_name = ? and "
                "table_name = ? and comment is not null", [home, schema, name]).fetchall():
            if column in present:
                con.execute(f"comment on column {_ident(catalog, 'main', table, column)} is {_quoted(comment)}")


def keep_in_warehouse(con: duckdb.DuckDBPyConnection, as_of: date, history_days: int, erased: list[str]) -> None:
    """After the swap: the warehouse's history gets what the release published, in one transaction: tonight's
    rows replace any earlier ones of ``as_of``; erased customers and nights older than ``history_days`` before the
    newest go. Cheap: only tonight's rows are written."""
    con.execute(f"create schema if not exists {SCHEMA}")
    home = con.execute("select current_database()").fetchall()[0][0]
    con.execute("begin")
    try:
        for table, (source, columns, _) in HISTORY_TABLES.items():
            target = _ident(SCHEMA, table)
            if not _exists(con, home, SCHEMA, table):
                con.execute(f"create table {target} as {_select(source, columns)} limit 0")
            con.execute(f"delete from {target} where as_of_date = ?", [as_of])
            con.execute(f"insert into {target} by name {_select(source, columns)}")
            if erased and "customer_id" in (columns or ()):
                con.execute(f"delete from {target} where list_contains(?::varchar[], customer_id)", [list(erased)])
            con.execute(f"delete from {target} where as_of_date < (select max(as_of_date) from {target}) "
                        "- to_days(cast(? as integer))", [history_days])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
