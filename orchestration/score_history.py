"""Score history for analysts: ``customer_scores_history`` and ``segment_history``.

One row per customer (per segment) and published night, so an analyst can follow a customer's score, rank, tier
and segments over time, and count tier movements month over month. Each release carries the history: the
warehouse's ``history`` schema (the published nights ``Retention`` keeps) plus the night being published,
which replaces any earlier publication of the same as-of date (a re-run of a night is idempotent). The warehouse
copy is updated only after the release is swapped in, so a night that failed its gates never enters it.

Erased customers (``ops.erasure_requests``) are left out of every release and deleted from the warehouse copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from orchestration.sql_quoting import quote_ident as _ident

SCHEMA = "history"
# Every release copies the whole history (one row per customer and night kept): about 0.7 s and 57 MiB per million
# rows here (10M rows of customer_scores_history: 7.0 s, 0.57 GiB). So the history keeps every night of the last
# five weeks (day over day, week over week) and, before that, each month's last published night for a year (month
# over month): 35 + 12 nights, 47M rows at a million customers (about 33 s per release), 4.7M at 100,000.
DEFAULT_HISTORY_DAYS = 35
DEFAULT_HISTORY_MONTHS = 12


@dataclass(frozen=True)
class Retention:
    """Which nights the history keeps: every night of the ``days`` before the newest, and each month's last
    published night of the ``months`` months before the newest night's month."""
    days: int = DEFAULT_HISTORY_DAYS
    months: int = DEFAULT_HISTORY_MONTHS

    def kept(self, nights: list[date]) -> list[date]:
        """The nights of ``nights`` this retention keeps, in date order."""
        if not nights:
            return []
        newest = max(nights)
        last_of_month: dict[tuple[int, int], date] = {}
        for night in nights:
            month = (night.year, night.month)
            last_of_month[month] = max(night, last_of_month.get(month, night))
        months_back = {night: (newest.year - y) * 12 + newest.month - m for (y, m), night in last_of_month.items()}
        return sorted({n for n in nights if (newest - n).days <= self.days}
                      | {n for n, back in months_back.items() if back <= self.months})


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
        "each night kept (every night of the last CRM_HISTORY_DAYS days, and each month's last night of the last "
        "CRM_HISTORY_MONTHS months). A re-run of a night replaces that night's rows."),
    "segment_history": (
        "analytics.segment_summary", None,
        "segment_summary of every published night kept, as for customer_scores_history (one row per segment, cut "
        "and night): how segments grow, shrink and change value over time."),
}


def _exists(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> bool:
    return bool(con.execute("select count(*) from duckdb_tables() where database_name = ? and schema_name = ? "
                            "and table_name = ?", [catalog, schema, table]).fetchall()[0][0])


def _select(source: str, columns: tuple[str, ...] | None) -> str:
    return f"select {', '.join(_ident(c) for c in columns) if columns else '*'} from {source}"


def _not_erased(erased: list[str]) -> tuple[str, list]:
    """A condition keeping the rows of customers not in ``erased`` (a table without customer_id keeps all)."""
    return ("not coalesce(list_contains(?::varchar[], customer_id), false)", [list(erased)]) if erased else ("true", [])


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


def write_release_history(con: duckdb.DuckDBPyConnection, catalog: str, as_of: date, retention: Retention,
                          erased: list[str]) -> dict[str, int]:
    """Create the history tables in the release ``catalog`` (``_history_parts``), pruned to the nights
    ``retention`` keeps, in date order. The warehouse is not changed (``keep_in_warehouse`` does that once the
    release is out). Returns rows per table."""
    counts = {}
    for table in HISTORY_TABLES:
        rows, params = _history_parts(con, table, as_of, erased)
        nights = [d for (d,) in con.execute(f"select distinct as_of_date from ({rows})", params).fetchall()]
        con.execute(f"create table {_ident(catalog, 'main', table)} as select * from ({rows}) "
                    "where list_contains(?::date[], as_of_date) order by as_of_date", params + [retention.kept(nights)])
        counts[table] = con.execute(f"select count(*) from {_ident(catalog, 'main', table)}").fetchall()[0][0]
    return counts


def keep_in_warehouse(con: duckdb.DuckDBPyConnection, as_of: date, retention: Retention, erased: list[str]) -> None:
    """After the swap: the warehouse's history gets what the release published, in one transaction: tonight's
    rows replace any earlier ones of ``as_of``; erased customers and the nights ``retention`` drops go. Cheap:
    only tonight's rows are written."""
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
            nights = [d for (d,) in con.execute(f"select distinct as_of_date from {target}").fetchall()]
            con.execute(f"delete from {target} where not list_contains(?::date[], as_of_date)", [retention.kept(nights)])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
