"""Atomic publication of the serving database.

The new serving file is written beside the old one under a temporary name, closed (checkpointed,
no WAL left), then renamed over the old one with ``os.replace``. Readers that hold the old file open
keep reading the old publication; a reader that connects after the rename sees the new one; nobody
ever sees a half-written file. A failure before the rename leaves the old file untouched.

No file a reader may hold is ever modified: the kept publications (``.serving-versions/``, hard links of
earlier serving files, so possibly the very inode a BI tool has open) are scrubbed of erased customers by
writing a new file and renaming it over the version's name. Once the serving rename happened the run is
published: what fails after it is a warning on a published run (``Published.warnings``, recorded in
``pipeline_runs.message`` as ``warning: ...``), never a failure. Every path and value reaches SQL as a
parameter or a quoted literal, every identifier quoted.

The serving file is written in an older DuckDB storage format (``CRM_SERVING_STORAGE_VERSION``) that the DuckDB
1.x inside BI drivers reads. Two optional targets come from the same release: a PostgreSQL schema
(``serving_postgres.py``; swapped in before the file, so a refusal there publishes nothing) and a Parquet copy
(``parquet_export.py``; written after the swap, a failure there is a warning).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from data_quality.pii import erased_ids, profile_pseudonymise, pseudonymise, scrub_text
from orchestration import run_log, score_history
from orchestration.sql_quoting import quote_ident as _ident
from orchestration.sql_quoting import quote_literal as _quoted  # DuckDB takes no parameter in `comment on`
from orchestration.warehouse import DuckDBWarehouse, Warehouse

if TYPE_CHECKING:
    from orchestration.serving_postgres import PostgresTarget

WARNING_PREFIX = "warning: "

# The serving file's storage format (``CRM_SERVING_STORAGE_VERSION``): the oldest DuckDB release whose format holds
# everything we publish (types, comments). v1.0.0 writes storage version 64, which DuckDB 0.10 and every 1.x client
# open; DuckDB 2.x's own format (69) only 2.x does. The warehouse is private to the pipeline and keeps the current one.
DEFAULT_SERVING_STORAGE_VERSION = "v1.0.0"


def attach_for_writing(con: duckdb.DuckDBPyConnection, path: Path, alias: str, storage_version: str) -> None:
    """Attach a new serving-format file ``path`` as ``alias`` (a DuckDB error names a version it cannot write)."""
    try:
        con.execute(f"attach ? as {_ident(alias)} (storage_version {_quoted(storage_version)})", [str(path)])
    except duckdb.InvalidInputException as exc:
        if "version" not in str(exc).lower():
            raise
        raise ValueError(f"CRM_SERVING_STORAGE_VERSION={storage_version!r} is not a storage format DuckDB "
                         f"{duckdb.__version__} can write; use a DuckDB release from v0.10.0 on, such as v1.0.0 (the "
                         "default), or latest") from exc

MODEL_PERFORMANCE_DDL = """
create table if not exists ops.model_performance (
    run_id string,
    as_of_date date,
    model_name string,
    model_version string,
    task string,
    metric string,
    value double,
    train_window_start date,
    train_window_end date,
    test_window_start date,
    test_window_end date,
    is_champion boolean
)
"""

# published table -> the warehouse query that fills it
PUBLISHED_TABLES = {
    "customer_scores": "select * from analytics.customer_scores order by potential_rank",
    "customer_profile": "select * from marts.customer_profile order by profile_key",
    "segment_summary": "select * from analytics.segment_summary order by segment_type, cut_type, cut_value, segment",
    "lifecycle_funnel": "select * from analytics.lifecycle_funnel order by period_end, from_stage, to_stage_order",
    "campaign_effectiveness": "select * from analytics.campaign_effectiveness order by campaign_id, segment",
    "model_performance": "select * from ops.model_performance",
}
# every table of a release, in the order exporters write them: the tables above, the run log, the score history
RELEASE_TABLES = (*PUBLISHED_TABLES, "pipeline_runs", *score_history.HISTORY_TABLES)
# where each published table's documentation (dbt descriptions, persisted as DuckDB comments) lives
DOCUMENTED_IN = {"customer_scores": "analytics", "customer_profile": "marts", "segment_summary": "analytics",
                 "lifecycle_funnel": "analytics", "campaign_effectiveness": "analytics"}

# The operational tables are not dbt models: their documentation lives here, one description per table and
# column, written as comments into every release (a test checks that every published column has one).
OPS_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "model_performance": (
        "Back-test metrics per run, model and metric (long format): how well each model and baseline predicted a "
        "held-out window, and which one is the champion whose predictions were published.", {
            "run_id": "The run that measured the metric.",
            "as_of_date": "The run's as-of date.",
            "model_name": "The model or baseline measured, for example churn_hgb, churn_logit, churn_bgnbd, "
                          "churn_recency, bgnbd_gg, hgb_poisson or naive_last_period (README, section Models).",
            "model_version": "The model's version: the registry version of a registered churn model, else "
                             "<model_name>@<test window start>.",
            "task": "What was predicted: clv_spend, clv_purchases, btyd_selection, churn or next_category.",
            "metric": "The metric's name (roc_auc, pr_auc, brier, log_loss, top_decile_lift, calib_dNN_expected/"
                      "_observed, normalised_gini, spearman, total_ratio, interval_coverage, hit_rate_top1, "
                      "n_customers, ...); README, section Models.",
            "value": "The metric's value.",
            "train_window_start": "First cutoff of the training data; null where the model is not trained on a "
                                  "window of its own (baselines, models fitted at the test cutoff).",
            "train_window_end": "End of the training data: no training label lies after this date.",
            "test_window_start": "The back-test cutoff: predictions are made from data up to this date.",
            "test_window_end": "End of the back-test window: the outcomes compared run up to this date.",
            "is_champion": "True for the model whose predictions this run published for the task.",
        }),
    "pipeline_runs": (
        "One row per pipeline run, successful or failed, kept in the warehouse and published with each release: "
        "as-of date, settings, rows in and out, quality checks, models, time per stage and the error of a failed "
        "run.", {
            "run_id": "The run (Dagster run id).",
            "as_of_date": "The run's as-of date.",
            "started_at": "When the run started (UTC).",
            "finished_at": "When the run finished or failed (UTC).",
            "status": "success or failed. A published run whose publication left something undone (a kept "
                      "earlier publication not yet scrubbed of erased customers, for example) is a success "
                      "whose message starts with 'warning: '.",
            "published": "True when the run replaced the serving database.",
            "source_dir": "The source folder the run read.",
            "parameters": "JSON: the run's settings (horizons, weights, tier bounds, thresholds, paths).",
            "rows_in": "JSON: rows read per source entity.",
            "rows_out": "Rows of customer_scores the run produced.",
            "rows_quarantined": "Source rows the contract rules set aside in the quarantine tables.",
            "checks_passed": "Quality checks (dbt tests, Great Expectations suites, asset checks) that passed "
                             "before publication.",
            "checks_failed": "Quality checks that failed (a failed blocking check stops the publication).",
            "model_versions": "JSON: the value and churn models and the scoring rules behind the published scores.",
            "stage_seconds": "JSON: seconds per Dagster step, and per dbt layer (dbt:<layer>).",
            "message": "The error of a failed run; for a successful one empty, or 'warning: ' and what the "
                       "run warned about (a check that warns, such as a stale source) or what the publication left "
                       "undone, and what to do.",
            "quarantined_by_rule": "JSON: quarantined rows per source entity and contract rule.",
            "stage_rows": "JSON: rows per warehouse table when the run published.",
        }),
}


def comment_ops_tables(con: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Write ``OPS_DOCS`` as table and column comments on the release's operational tables."""
    written = 0
    for table, (description, columns) in OPS_DOCS.items():
        con.execute(f"comment on table {_ident(catalog, 'main', table)} is {_quoted(description)}")
        written += 1
        present = {c for (c,) in con.execute(
            "select column_name from duckdb_columns() "
            "where database_name = ? and schema_name = 'main' and table_name = ?", [catalog, table]).fetchall()}
        for column, comment in columns.items():
            if column in present:
                con.execute(f"comment on column {_ident(catalog, 'main', table, column)} is {_quoted(comment)}")
                written += 1
    return written


def _copy_table_comments(con: duckdb.DuckDBPyConnection, source: tuple[str, str, str],
                         target: tuple[str, str, str]) -> int:
    """Copy the table and column comments of ``source`` (catalog, schema, table) onto ``target`` (the columns
    ``target`` has: a history table holds some of its source's)."""
    where = "database_name = ? and schema_name = ? and table_name = ?"
    present = {c for (c,) in con.execute(f"select column_name from duckdb_columns() where {where}",
                                         list(target)).fetchall()}
    copied = 0
    for (comment,) in con.execute(f"select comment from duckdb_tables() where {where} and comment is not null",
                                  list(source)).fetchall():
        con.execute(f"comment on table {_ident(*target)} is {_quoted(comment)}")
        copied += 1
    for column, comment in con.execute(f"select column_name, comment from duckdb_columns() where {where} and "
                                       "comment is not null", list(source)).fetchall():
        if column in present:
            con.execute(f"comment on column {_ident(*target, column)} is {_quoted(comment)}")
            copied += 1
    return copied


def copy_comments(con: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Carry the table and column descriptions dbt persisted in the warehouse over to the new release; the history
    tables take their columns' descriptions from the tables they copy, and their own table description."""
    home = con.execute("select current_database()").fetchall()[0][0]
    copied = sum(_copy_table_comments(con, (home, schema, table), (catalog, "main", table))
                 for table, schema in DOCUMENTED_IN.items())
    for table, (source, _, description) in score_history.HISTORY_TABLES.items():
        copied += _copy_table_comments(con, (home, *source.split(".")), (catalog, "main", table))
        con.execute(f"comment on table {_ident(catalog, 'main', table)} is {_quoted(description)}")
    return copied


def ensure_ops_tables(con: duckdb.DuckDBPyConnection) -> None:
    run_log.ensure_table(con)
    ensure_model_performance(DuckDBWarehouse(con))


def ensure_model_performance(warehouse: Warehouse) -> None:
    """``ops.model_performance``, where each model step replaces its run's back-test rows (any engine)."""
    warehouse.execute("create schema if not exists ops")
    warehouse.execute(MODEL_PERFORMANCE_DDL)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def versions_dir(serving_path: Path) -> Path:
    return Path(serving_path).resolve().parent / ".serving-versions"


def published_run_id(serving_path: Path) -> str | None:
    """The run whose publication the serving file holds (None when there is none or it cannot be read)."""
    from orchestration.published import published_file

    try:
        with published_file(serving_path) as published:
            return published.published_run_id() if published else None
    except duckdb.Error:
        return None


def published_as_of(serving_path: Path) -> str | None:
    """The as-of date (YYYY-MM-DD) of the latest tables in the serving file (None when there is none)."""
    from orchestration.published import published_file

    try:
        with published_file(serving_path) as published:
            return published.as_of() if published else None
    except duckdb.Error:
        return None


def _without_erased(con: duckdb.DuckDBPyConnection, table: tuple[str, str, str],
                    erased: dict[str, list[str]]) -> tuple[str, list | None]:
    """A query for ``table`` less the rows of erased customers (by any of the columns ``erased`` names)."""
    columns = {c for (c,) in con.execute("select column_name from duckdb_columns() where database_name = ? and "
                                         "schema_name = ? and table_name = ?", list(table)).fetchall()}
    match, values = _erased_match(columns, erased)
    return (f"select * from {_ident(*table)}" + (f" where not ({match})" if match else ""), values if match else None)


def _published_run_id(path: Path) -> str:
    return published_run_id(path) or "unknown"


def keep_version(serving_path: Path, keep: int) -> Path | None:
    """Hard-link the current serving file into the versions folder (instant, no copy); prune to ``keep``."""
    if not serving_path.exists() or keep < 1:
        return None
    folder = versions_dir(serving_path)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(serving_path.stat().st_mtime))
    target = folder / f"{serving_path.stem}.{stamp}.{_published_run_id(serving_path)}.duckdb"
    if not target.exists():
        os.link(serving_path, target)
    for old in list_versions(serving_path)[keep:]:
        old.unlink()
    return target


def erased_keys(ids: list[str], pseudonym_key: bytes | None) -> dict[str, list[str]]:
    """Column -> the values that identify the erased customers ``ids`` in a published table."""
    keys = {"customer_id": list(ids)}
    if ids and pseudonym_key:
        keys["customer_key"] = pseudonymise(ids, pseudonym_key)
        keys["profile_key"] = profile_pseudonymise(ids, pseudonym_key)
    return keys


def _erased_match(columns: set[str], erased: dict[str, list[str]]) -> tuple[str | None, list]:
    """The condition that picks an erased customer's rows of a table with ``columns``, and its parameters."""
    present = [c for c in erased if c in columns and erased[c]]
    terms = [f"coalesce(list_contains(?::varchar[], trim(cast({_ident(c)} as varchar))), false)" for c in present]
    return (" or ".join(terms) or None), [erased[c] for c in present]


def scrub_version(path: Path, erased: dict[str, list[str]],
                  storage_version: str = DEFAULT_SERVING_STORAGE_VERSION) -> int:
    """Remove the customers from a kept publication; returns the rows removed.

    The file is never opened for writing: it may be the very inode a BI reader holds (a kept version is a
    hard link of an earlier serving file), and a reader's lock would refuse the writer. Instead its tables,
    less the rows whose ``customer_id``, ``customer_key``, ... is one of the values ``erased`` gives for that
    column (``erased_keys``), are written (with their comments) to a new file that is renamed over the
    version's name: a reader keeps its view, the deleted rows leave no trace in free blocks, and a file with
    none of the customers is left alone."""
    path = Path(path)
    if not any(erased.values()):
        return 0
    tmp = path.with_name(f".{path.name}.scrub.tmp")
    _remove(tmp)
    try:
        with duckdb.connect() as con:
            con.execute("attach ? as kept (read_only)", [str(path)])
            removed = _write_scrubbed(con, tmp, erased, storage_version)
    except BaseException:
        _remove(tmp)
        raise
    if removed:
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    return removed


def _write_scrubbed(con: duckdb.DuckDBPyConnection, tmp: Path, erased: dict[str, list[str]],
                    storage_version: str) -> int:
    """Copy the attached ``kept`` catalog into ``tmp`` without the customers' rows, if it holds any."""
    tables: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in con.execute("select schema_name, table_name, column_name from duckdb_columns() "
                                             "where database_name = 'kept'").fetchall():
        tables.setdefault((schema, table), set()).add(column)
    plan = [(schema, table, *_erased_match(columns, erased)) for (schema, table), columns in sorted(tables.items())]
    removed = sum(con.execute(f"select count(*) from {_ident('kept', schema, table)} where {match}",
                              values).fetchall()[0][0] for schema, table, match, values in plan if match)
    if not removed:
        return 0
    attach_for_writing(con, tmp, "scrubbed", storage_version)
    for schema, table, match, values in plan:
        con.execute(f"create schema if not exists {_ident('scrubbed', schema)}")
        where = f" where not ({match})" if match else ""
        con.execute(f"create table {_ident('scrubbed', schema, table)} as "
                    f"select * from {_ident('kept', schema, table)}{where}", values if match else None)
        _copy_table_comments(con, ("kept", schema, table), ("scrubbed", schema, table))
    con.execute("detach scrubbed")
    return removed


def version_run_id(version: Path) -> str:
    """The run whose publication a kept version holds (``serving.<stamp>.<run_id>.duckdb``)."""
    return version.stem.split(".")[-1]


@dataclass(frozen=True)
class Publication:
    run_id: str
    as_of_date: str
    published_at: str
    rows: int
    path: Path
    current: bool


def describe_publications(serving_path: Path) -> list[Publication]:
    """The current publication and the kept ones, newest first, as ``rollback --list`` shows them."""
    serving_path = Path(serving_path).resolve()
    current = published_run_id(serving_path) if serving_path.exists() else None
    found = []
    for path in ([serving_path] if current else []) + [v for v in list_versions(serving_path)
                                                       if version_run_id(v) != current]:
        run = current if path == serving_path else version_run_id(path)
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                rows, as_of = con.execute("select count(*), any_value(as_of_date) from customer_scores").fetchall()[0]
                finished = con.execute("select max(finished_at) from pipeline_runs where run_id = ?", [run]).fetchall()[0][0]
        except (duckdb.Error, IndexError):
            rows, as_of, finished = 0, None, None
        found.append(Publication(run, str(as_of or "?"), f"{finished:%Y-%m-%d %H:%M}" if finished else "?", rows, path,
                                 path == serving_path))
    return found


def list_versions(serving_path: Path) -> list[Path]:
    """Kept publications, newest first."""
    folder = versions_dir(serving_path)
    return sorted(folder.glob(f"{Path(serving_path).stem}.*.duckdb"), reverse=True) if folder.exists() else []


def replace_atomically(source: Path, serving_path: Path) -> None:
    os.chmod(source, 0o644)  # readable by the BI group, writable only by the pipeline
    os.replace(source, serving_path)
    sync_folder(serving_path.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (fsync the directory)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rollback(serving_path: Path, run_id: str | None = None) -> Path:
    """Put a kept publication back (the newest, or the one of ``run_id``); the current one is kept too."""
    serving_path = Path(serving_path).resolve()
    versions = list_versions(serving_path)
    current = _published_run_id(serving_path) if serving_path.exists() else None
    candidates = [v for v in versions if (run_id is None and not v.stem.endswith(f".{current}"))
                  or (run_id is not None and version_run_id(v).startswith(run_id))]
    if run_id is not None and len({version_run_id(v) for v in candidates}) > 1:
        raise FileNotFoundError(f"the run id {run_id!r} is ambiguous: "
                                f"{', '.join(sorted({version_run_id(v) for v in candidates}))}; give more of it")
    if not candidates:
        kept = ", ".join(v.stem.split(".")[-1] for v in versions) or "none"
        raise FileNotFoundError(f"no kept publication {'of run ' + run_id if run_id else 'older than the current one'} "
                                f"in {versions_dir(serving_path)} (kept runs: {kept})")
    chosen = candidates[0]
    keep_version(serving_path, keep=len(versions) + 1)
    tmp = serving_path.with_name(f".{serving_path.name}.rollback.tmp")
    shutil.copyfile(chosen, tmp)
    replace_atomically(tmp, serving_path)
    return chosen


@dataclass
class Published:
    """What ``publish`` did: rows per published table, and what it left undone (the run is published).
    ``latest_as_of`` is the as-of date of the latest tables now served: a backfilled night's is a later one."""
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    latest_as_of: str | None = None

    @property
    def message(self) -> str:
        """``pipeline_runs.message`` of the published run: empty, or ``warning: `` and the warnings."""
        return (WARNING_PREFIX + "; ".join(self.warnings))[:4000] if self.warnings else ""


def _reason(exc: BaseException) -> str:
    """The error in a few words for a stored warning: its type and first line, PII-scrubbed."""
    first = scrub_text(str(exc).strip().splitlines()[0])[:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _keep_and_scrub(serving_path: Path, keep: int, erased: dict[str, list[str]], storage_version: str,
                    export_dir: Path | None) -> list[str]:
    """Keep the current publication, prune old ones and remove erased customers from all that are kept.
    A version that cannot be kept or scrubbed does not stop the publication: it becomes a warning that says
    what to do (the next run scrubs again)."""
    warnings = []
    try:
        keep_version(serving_path, keep)
    except Exception as exc:
        warnings.append(f"the previous publication was not kept in {versions_dir(serving_path)} ({_reason(exc)}); "
                        "rollback to it is not possible, check that folder")
    for version in list_versions(serving_path) if any(erased.values()) else []:  # erasure reaches kept ones too
        try:
            scrub_version(version, erased, storage_version)
        except Exception as exc:
            warnings.append(f"kept publication {version} may still hold erased customers ({_reason(exc)}); "
                            "the next run retries, or delete the file")
    if export_dir is not None and any(erased.values()):
        from orchestration.parquet_export import scrub_exports  # it imports this module

        try:
            scrub_exports(export_dir, erased)
        except Exception as exc:
            warnings.append(f"the Parquet export in {export_dir} may still hold erased customers ({_reason(exc)}); "
                            "the next run retries, or delete its runs/ folders")
    return warnings


def publish(con: duckdb.DuckDBPyConnection, serving_path: Path, record: run_log.RunRecord, keep: int = 3,
            pseudonym_key: bytes | None = None, storage_version: str = DEFAULT_SERVING_STORAGE_VERSION,
            target: "PostgresTarget | None" = None, export_dir: Path | None = None,
            retention: score_history.Retention = score_history.Retention()) -> Published:
    """Build the new serving file from the warehouse ``con`` and swap it in.

    A night older than the one the serving file holds (a backfill) never replaces the newer latest tables: the
    release keeps them (less any erased customer) and adds the older night to the history tables.

    Raises only before the swap (then nothing was published). The kept publications are looked after
    just before the swap so that the release's own ``pipeline_runs`` row already carries any warning;
    after the swap only the warehouse's record remains, and its failure is a warning too."""
    serving_path = Path(serving_path).resolve()
    serving_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in serving_path.parent.glob(f".{serving_path.name}.*.tmp*"):  # left by a killed run
        stale.unlink()
    tmp = serving_path.with_name(f".{serving_path.name}.{record.run_id}.tmp")
    ensure_ops_tables(con)
    counts: dict[str, int] = {}
    erased_customers = erased_ids(con)
    erased = erased_keys(erased_customers, pseudonym_key)
    latest = published_as_of(serving_path)
    past = latest is not None and record.as_of_date is not None and record.as_of_date < latest
    if past:  # an earlier night (a backfill): its history goes out, the newer latest tables stay as they are
        con.execute("attach ? as current_release (read_only)", [str(serving_path)])
    attach_for_writing(con, tmp, "next_release", storage_version)
    try:
        for name, sql in PUBLISHED_TABLES.items():
            query, params = (_without_erased(con, ("current_release", "main", name), erased)
                             if past and name in DOCUMENTED_IN else (sql, None))
            con.execute(f"create table {_ident('next_release', 'main', name)} as {query}", params)
            counts[name] = con.execute(f"select count(*) from {_ident('next_release', 'main', name)}").fetchall()[0][0]
        counts.update(score_history.write_release_history(con, "next_release", date.fromisoformat(record.as_of_date),
                                                          retention, erased_customers))
        copy_comments(con, "next_release")
        if past:
            con.execute("detach current_release")
        result = Published(counts, _keep_and_scrub(serving_path, keep, erased, storage_version, export_dir),
                           latest_as_of=latest if past else record.as_of_date)
        record = replace(record, message=result.message or record.message)
        con.execute("create table next_release.main.pipeline_runs as select * from ops.pipeline_runs")
        run_log.insert(con, record, schema="next_release.main")
        comment_ops_tables(con, "next_release")
        counts["pipeline_runs"] = con.execute("select count(*) from next_release.main.pipeline_runs").fetchall()[0][0]
        con.execute("detach next_release")
    except BaseException:
        for catalog in ("next_release", "current_release"):
            try:
                con.execute(f"detach {catalog}")
            except duckdb.Error:
                pass
        _remove(tmp)
        raise
    if tmp.with_name(tmp.name + ".wal").exists():  # DETACH checkpoints; a WAL here would be a bug
        _remove(tmp)
        raise RuntimeError(f"{tmp}.wal left behind after detach; refusing to publish a partial file")
    if target is not None:  # the database target first: if it refuses the release, nothing is published
        from orchestration.serving_postgres import publish_release

        try:
            result.warnings += publish_release(tmp, target, run_id=record.run_id, as_of_date=record.as_of_date,
                                               keep=keep, erased=erased)
        except BaseException:
            _remove(tmp)
            raise
    os.chmod(tmp, 0o644)  # readable by the BI group, writable only by the pipeline
    os.replace(tmp, serving_path)  # from here on the run is published: nothing below may fail it
    late = []
    try:
        sync_folder(serving_path.parent)
    except OSError as exc:
        late.append(f"the rename of {serving_path} may not survive a power cut ({_reason(exc)}); check the disk")
    try:  # the warehouse keeps the history the release published, for the next night's release
        score_history.keep_in_warehouse(con, date.fromisoformat(record.as_of_date), retention, erased_customers)
    except Exception as exc:
        late.append(f"the night of {record.as_of_date} was published but not kept in the warehouse's score history "
                    f"({_reason(exc)}); the next release will lack it unless this night is run again")
    if export_dir is not None:  # a copy of the release for tools that read files, once the release is out
        from orchestration.parquet_export import export_release

        try:
            export_release(serving_path, export_dir, run_id=record.run_id, as_of_date=record.as_of_date, keep=keep + 1)
        except Exception as exc:
            late.append(f"the Parquet export in {export_dir} still shows the previous run ({_reason(exc)}); "
                        "fix the folder, then run again")
    try:
        run_log.insert(con, replace(record, message=Published(counts, result.warnings + late).message
                                    or record.message))
    except Exception as exc:
        late.append(f"the run was not recorded in the warehouse's ops.pipeline_runs ({_reason(exc)}); "
                    "the serving file's pipeline_runs has it")
    result.warnings += late
    return result
