"""Publication on the Spark engine (issue 18): write, audit, then publish, inside the Spark catalog.

On DuckDB a release is a new serving file swapped in (``orchestration/publication.py``). On Spark it lives in
the catalog:

* **write**: every published table (``PUBLISHED_TABLES``) and the run log get this run's rows as a partition
  ``release = <run id>`` of ``serving_releases.<table>``;
* **audit**: each partition holds as many rows as its warehouse query, and ``customer_scores`` one row per
  customer; anything else stops here, with nothing readers see changed;
* **publish**: readers query the views ``serving.<table>``, each of which shows the partition the one-row view
  ``serving_releases.current`` names. Publishing replaces that view: one catalog operation switches every
  published table at once, so a query never mixes two nights.

The newest ``keep`` releases stay (``releases()``, ``rollback_to`` points ``current`` back at one); older
partitions are dropped after the switch.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import pyarrow as pa

from orchestration import run_log, score_history
from orchestration.publication import PUBLISHED_TABLES

RELEASES = "serving_releases"
SERVING = "serving"
CURRENT = f"{RELEASES}.current"
REGISTER = f"{RELEASES}.releases"  # one row per written release: release, as_of_date, written_at
RUN_LOG = f"{RELEASES}.pipeline_runs_log"
RELEASE_NAMES = (*PUBLISHED_TABLES, "pipeline_runs", *score_history.HISTORY_TABLES)  # the tables of a release, the views readers query
RUNS_DDL = run_log.DDL.replace("varchar", "string").replace("ops.pipeline_runs", RUN_LOG)


class PublicationError(RuntimeError):
    """The release was not published (an audit failed, or no such kept release); readers see what they saw."""


def quote_literal(release: str) -> str:
    """A release id (a run id: letters, digits, dashes) as a SQL literal; anything else is refused, never
    escaped (Spark and DuckDB escape quotes differently)."""
    if not re.fullmatch(r"[0-9A-Za-z_-]+", str(release)):
        raise PublicationError(f"not a release id: {release!r}")
    return f"'{release}'"


def _source(query: str) -> str:
    """A published table's warehouse query without its ``order by`` (a partition keeps no order)."""
    return query.split(" order by ")[0]


def _write(warehouse, name: str, source: str, release: str, inputs: dict[str, pa.Table] | None = None) -> None:
    """``source``'s rows as the partition ``release`` of ``serving_releases.<name>`` (created, or re-created
    when the published columns changed: the kept releases of that table then go)."""
    table = f"{RELEASES}.{name}"
    columns = warehouse.arrow(f"select * from ({source}) q limit 0", inputs=inputs).column_names
    if name in warehouse.tables(RELEASES) and warehouse.columns(table)[:-1] != columns:
        warehouse.execute(f"drop table {table}")
    if name not in warehouse.tables(RELEASES):
        warehouse.execute(f"create table {table} using parquet partitioned by (release) as "
                          f"select *, cast(null as string) as release from ({source}) q where 1 = 0")
    warehouse.execute(f"insert overwrite table {table} partition (release = {quote_literal(release)}) "
                      f"select * from ({source}) q", inputs=inputs)


def releases(warehouse) -> list[tuple[str, str, datetime]]:
    """The written releases, newest first: (release, as-of date, written at)."""
    if "releases" not in warehouse.tables(RELEASES):
        return []
    return warehouse.rows(f"select release, as_of_date, written_at from {REGISTER} order by written_at desc")


def current_release(warehouse) -> str | None:
    """The published release (None before the first publication)."""
    if not warehouse.session.catalog.tableExists(CURRENT):
        return None
    return warehouse.scalar(f"select release from {CURRENT}")


def _switch(warehouse, release: str, names) -> None:
    """Point ``current`` at ``release`` (one catalog operation); the table views are created the first time."""
    first = current_release(warehouse) is None
    if first:  # the table views need the pointer to exist; nothing is published before this anyway
        warehouse.execute(f"create or replace view {CURRENT} as select {quote_literal(release)} as release")
    for name in names:
        columns = ", ".join(c for c in warehouse.columns(f"{RELEASES}.{name}") if c != "release")
        warehouse.execute(f"create or replace view {SERVING}.{name} as select {columns} from {RELEASES}.{name} "
                          f"where release = (select release from {CURRENT})")
    if not first:
        warehouse.execute(f"create or replace view {CURRENT} as select {quote_literal(release)} as release")


def publish_on_spark(warehouse, record: run_log.RunRecord, *, keep: int,
                     erased: dict[str, list[str]] | None = None,
                     retention: score_history.Retention = score_history.Retention()) -> dict[str, int]:
    """Write, audit and publish this run's release; returns the rows per published table. Raises
    ``PublicationError`` before the switch when the audit fails (what readers see is unchanged). ``erased``
    (``publication.erased_keys``): the erased customers, left out of the score history and removed from every
    kept release."""
    release = record.run_id
    for database in (RELEASES, SERVING, score_history.SCHEMA):
        warehouse.execute(f"create database if not exists {database}")
    published = _current_as_of(warehouse)
    if published and record.as_of_date and record.as_of_date < published:
        raise PublicationError(f"the night of {record.as_of_date} is older than the published one ({published}); "
                               "a backfill of earlier nights is not available on the Spark engine yet")
    erased = {column: values for column, values in (erased or {}).items() if values}
    counts, expected = {}, {}
    for name, query in PUBLISHED_TABLES.items():
        source = _source(query)
        _write(warehouse, name, source, release)
        expected[name] = int(warehouse.scalar(f"select count(*) from ({source}) q"))
    # audit
    for name in expected:
        counts[name] = int(warehouse.scalar(f"select count(*) from {RELEASES}.{name} where release = ?", [release]))
    wrong = [f"{name}: {counts[name]:,} rows written, {expected[name]:,} expected" for name in expected
             if counts[name] != expected[name]]
    customers, distinct = warehouse.rows(f"select count(*), count(distinct customer_id) from "
                                         f"{RELEASES}.customer_scores where release = ?", [release])[0]
    if customers != distinct:
        wrong.append(f"customer_scores: {customers - distinct:,} customer(s) appear more than once")
    if wrong:
        _drop(warehouse, release, PUBLISHED_TABLES)
        raise PublicationError("the release failed its audit, nothing was published: " + "; ".join(wrong))
    counts.update(_write_history(warehouse, release, date.fromisoformat(record.as_of_date), retention, erased))
    # the run log of the published runs, this one's row included, as the release's pipeline_runs
    record_run(warehouse, record)
    _write(warehouse, "pipeline_runs", f"select * from {RUN_LOG}", release)
    warehouse.execute(f"create table if not exists {REGISTER} (release string, as_of_date string, written_at timestamp)")
    warehouse.replace_rows(REGISTER, pa.table({
        "release": [release], "as_of_date": [record.as_of_date],
        "written_at": pa.array([datetime.now(timezone.utc).replace(tzinfo=None)], pa.timestamp("us"))}),
        {"release": release})
    # publish: one switch
    _switch(warehouse, release, RELEASE_NAMES)
    counts["pipeline_runs"] = int(warehouse.scalar(f"select count(*) from {SERVING}.pipeline_runs"))
    _keep_history(warehouse, release)
    _prune(warehouse, keep, RELEASE_NAMES)
    _scrub_kept(warehouse, release, erased)
    return counts


def _current_as_of(warehouse) -> str | None:
    current = current_release(warehouse)
    return warehouse.scalar(f"select as_of_date from {REGISTER} where release = ?", [current]) if current else None


def _erased_inputs(erased: dict[str, list[str]]) -> dict[str, pa.Table]:
    """The erased customers' values per column as views ``erased_<column>`` (one column ``value``)."""
    return {f"erased_{column}": pa.table({"value": pa.array(values, pa.string())}) for column, values in erased.items()}


def _not_erased(columns, erased: dict[str, list[str]]) -> str:
    """A condition keeping the rows of no erased customer (``_erased_inputs`` must be given to the query); a row
    whose column is null is kept."""
    terms = [f"coalesce(trim(cast({column} as string)) not in (select value from erased_{column}), true)"
             for column in erased if column in columns]
    return " and ".join(terms) or "true"


def _write_history(warehouse, release: str, as_of: date, retention: score_history.Retention,
                   erased: dict[str, list[str]]) -> dict[str, int]:
    """The release's score history (``orchestration/score_history.py``): the kept history (``history.<table>``,
    the last release's) without ``as_of``'s night, plus tonight's rows; the nights ``retention`` keeps; no
    erased customer. Returns rows per table."""
    counts, inputs = {}, _erased_inputs(erased)
    for table, (source, columns, _) in score_history.HISTORY_TABLES.items():
        picked = ", ".join(columns) if columns else "*"
        tonight = f"select {picked} from {source}"
        names = warehouse.arrow(f"{tonight} limit 0").column_names
        parts = [tonight]
        if table in warehouse.tables(score_history.SCHEMA) and \
                warehouse.columns(f"{score_history.SCHEMA}.{table}") == names:
            parts.append(f"select {', '.join(names)} from {score_history.SCHEMA}.{table} "
                         f"where as_of_date <> date'{as_of.isoformat()}'")
        rows = f"select * from ({' union all '.join(parts)}) h where {_not_erased(names, erased)}"
        nights = warehouse.arrow(f"select distinct as_of_date from ({rows}) n", inputs=inputs)["as_of_date"].to_pylist()
        kept = ", ".join(f"date'{d.isoformat()}'" for d in retention.kept(nights)) or "null"
        _write(warehouse, table, f"{rows} and as_of_date in ({kept})", release, inputs)
        counts[table] = int(warehouse.scalar(f"select count(*) from {RELEASES}.{table} where release = ?", [release]))
    return counts


def _keep_history(warehouse, release: str) -> None:
    """After the switch: ``history.<table>`` becomes what the release published, for the next night's release."""
    for table in score_history.HISTORY_TABLES:
        columns = ", ".join(c for c in warehouse.columns(f"{RELEASES}.{table}") if c != "release")
        staged = f"{score_history.SCHEMA}.{table}__next"
        warehouse.execute(f"drop table if exists {staged}")
        warehouse.execute(f"create table {staged} using parquet as select {columns} from {RELEASES}.{table} "
                          f"where release = {quote_literal(release)}")
        warehouse.swap(staged, f"{score_history.SCHEMA}.{table}")


def _scrub_kept(warehouse, release: str, erased: dict[str, list[str]]) -> None:
    """Remove the erased customers from every kept release but ``release`` (written without them): each
    partition that holds one is rewritten without its rows (through a scratch table: Spark does not overwrite
    what it reads)."""
    if not erased:
        return
    inputs = _erased_inputs(erased)
    scratch = f"{RELEASES}.scrub_scratch"
    earlier = [kept for kept, _, _ in releases(warehouse) if kept != release]
    for name in RELEASE_NAMES:
        columns = [c for c in warehouse.columns(f"{RELEASES}.{name}") if c != "release"]
        keep = _not_erased(columns, erased)
        if keep == "true":
            continue
        for kept in earlier:
            where = f"release = {quote_literal(kept)}"
            found = warehouse.arrow(f"select count(*) as n from {RELEASES}.{name} where {where} and not ({keep})",
                                    inputs=inputs)["n"][0].as_py()
            if not found:
                continue
            warehouse.execute(f"drop table if exists {scratch}")
            warehouse.execute(f"create table {scratch} using parquet as select {', '.join(columns)} from "
                              f"{RELEASES}.{name} where {where} and {keep}", inputs=inputs)
            warehouse.execute(f"insert overwrite table {RELEASES}.{name} partition ({where}) select * from {scratch}")
            warehouse.execute(f"drop table {scratch}")


def record_run(warehouse, record: run_log.RunRecord) -> None:
    """The run's row in the run log (``serving_releases.pipeline_runs_log``) that each release publishes as its
    ``pipeline_runs``; a failed run's row shows in the next release's (the first night's too)."""
    warehouse.execute(f"create database if not exists {RELEASES}")
    warehouse.execute(RUNS_DDL)
    warehouse.replace_rows(RUN_LOG, pa.table({c: [v] for c, v in zip(run_log.COLUMNS, record.row())}),
                           {"run_id": record.run_id})


def add_warning(warehouse, run_id: str, warning: str) -> bool:
    """Note on a published run's row of the run log that something after its publication failed."""
    warehouse.execute(RUNS_DDL)
    row = warehouse.arrow(f"select * from {RUN_LOG} where run_id = ?", [run_id])
    if not row.num_rows:
        return False
    message = run_log.with_warning(row["message"][0].as_py(), warning)
    row = row.set_column(row.column_names.index("message"), "message", pa.array([message], pa.string()))
    warehouse.replace_rows(RUN_LOG, row, {"run_id": run_id})
    return True


def _prune(warehouse, keep: int, names) -> None:
    """Drop every release but the newest ``keep`` and the current one."""
    current = current_release(warehouse)
    old = [r for r, _, _ in releases(warehouse)[max(keep, 1):] if r != current]
    for release in old:
        _drop(warehouse, release, names)
    if old:
        kept = ", ".join(quote_literal(r) for r, _, _ in releases(warehouse) if r not in old)
        rows = warehouse.arrow(f"select * from {REGISTER} where release in ({kept})")
        warehouse.write(REGISTER, rows)


def _drop(warehouse, release: str, names) -> None:
    for name in names:
        warehouse.execute(f"alter table {RELEASES}.{name} drop if exists partition (release = {quote_literal(release)})")


def rollback_to(warehouse, release_prefix: str) -> str:
    """Point ``current`` at a kept release (a run id or its first characters); returns the full release id."""
    found = [r for r, _, _ in releases(warehouse) if r.startswith(release_prefix)]
    if len(found) != 1:
        raise PublicationError(f"{len(found)} kept releases start with {release_prefix!r}; the kept ones: "
                               + ", ".join(r[:8] for r, _, _ in releases(warehouse)))
    _switch(warehouse, found[0], RELEASE_NAMES)
    return found[0]
