"""Atomic publication of the serving database.

The new serving file is written beside the old one under a temporary name, closed (checkpointed,
no WAL left), then renamed over the old one with ``os.replace``. Readers that hold the old file open
keep reading the old publication; a reader that connects after the rename sees the new one; nobody
ever sees a half-written file. A failure before the rename leaves the old file untouched.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import duckdb

from data_quality.pii import erased_ids, pseudonymise, scrub_file
from orchestration import run_log

MODEL_PERFORMANCE_DDL = """
create table if not exists ops.model_performance (
    run_id varchar,
    as_of_date date,
    model_name varchar,
    model_version varchar,
    task varchar,
    metric varchar,
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
    "customer_profile": "select * from marts.customer_profile order by customer_key",
    "segment_summary": "select * from analytics.segment_summary order by segment_type, cut_type, cut_value, segment",
    "lifecycle_funnel": "select * from analytics.lifecycle_funnel order by period_end, from_stage, to_stage_order",
    "campaign_effectiveness": "select * from analytics.campaign_effectiveness order by campaign_id, segment",
    "model_performance": "select * from ops.model_performance",
}
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
            "status": "success or failed.",
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
            "message": "The error of a failed run; empty for a successful one.",
            "quarantined_by_rule": "JSON: quarantined rows per source entity and contract rule.",
            "stage_rows": "JSON: rows per warehouse table when the run published.",
        }),
}


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_ops_tables(con: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Write ``OPS_DOCS`` as table and column comments on the release's operational tables."""
    written = 0
    for table, (description, columns) in OPS_DOCS.items():
        con.execute(f"comment on table {catalog}.main.{table} is {_quoted(description)}")
        written += 1
        present = {c for (c,) in con.execute(
            "select column_name from duckdb_columns() "
            "where database_name = ? and schema_name = 'main' and table_name = ?", [catalog, table]).fetchall()}
        for column, comment in columns.items():
            if column in present:
                con.execute(f'comment on column {catalog}.main.{table}."{column}" is {_quoted(comment)}')
                written += 1
    return written


def copy_comments(con: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Carry the table and column descriptions dbt persisted in the warehouse over to the new release."""
    quoted = _quoted
    copied = 0
    for table, schema in DOCUMENTED_IN.items():
        where = "database_name = current_database() and schema_name = ? and table_name = ? and comment is not null"
        for (comment,) in con.execute(f"select comment from duckdb_tables() where {where}", [schema, table]).fetchall():
            con.execute(f"comment on table {catalog}.main.{table} is {quoted(comment)}")
            copied += 1
        for column, comment in con.execute(f"select column_name, comment from duckdb_columns() where {where}",
                                           [schema, table]).fetchall():
            con.execute(f'comment on column {catalog}.main.{table}."{column}" is {quoted(comment)}')
            copied += 1
    return copied


def ensure_ops_tables(con: duckdb.DuckDBPyConnection) -> None:
    run_log.ensure_table(con)
    con.execute(MODEL_PERFORMANCE_DDL)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def versions_dir(serving_path: Path) -> Path:
    return Path(serving_path).resolve().parent / ".serving-versions"


def _published_run_id(path: Path) -> str:
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return con.execute("select run_id from pipeline_runs where published order by finished_at desc limit 1").fetchall()[0][0]
    except (duckdb.Error, IndexError):
        return "unknown"


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


def list_versions(serving_path: Path) -> list[Path]:
    """Kept publications, newest first."""
    folder = versions_dir(serving_path)
    return sorted(folder.glob(f"{Path(serving_path).stem}.*.duckdb"), reverse=True) if folder.exists() else []


def replace_atomically(source: Path, serving_path: Path) -> None:
    os.chmod(source, 0o644)  # readable by the BI group, writable only by the pipeline
    os.replace(source, serving_path)
    dir_fd = os.open(serving_path.parent, os.O_RDONLY)
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
                  or (run_id is not None and v.stem.endswith(f".{run_id}"))]
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


def publish(con: duckdb.DuckDBPyConnection, serving_path: Path, record: run_log.RunRecord, keep: int = 3,
            pseudonym_key: bytes | None = None) -> dict[str, int]:
    """Build the new serving file from the warehouse ``con`` and swap it in; returns rows per table."""
    serving_path = Path(serving_path).resolve()
    serving_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in serving_path.parent.glob(f".{serving_path.name}.*.tmp*"):  # left by a killed run
        stale.unlink()
    tmp = serving_path.with_name(f".{serving_path.name}.{record.run_id}.tmp")
    ensure_ops_tables(con)
    counts: dict[str, int] = {}
    con.execute(f"attach '{tmp}' as next_release")
    try:
        for name, sql in PUBLISHED_TABLES.items():
            con.execute(f"create table next_release.main.{name} as {sql}")
            counts[name] = con.execute(f"select count(*) from next_release.main.{name}").fetchall()[0][0]
        copy_comments(con, "next_release")
        con.execute("create table next_release.main.pipeline_runs as select * from ops.pipeline_runs")
        run_log.insert(con, record, schema="next_release.main")
        comment_ops_tables(con, "next_release")
        counts["pipeline_runs"] = con.execute("select count(*) from next_release.main.pipeline_runs").fetchall()[0][0]
        con.execute("detach next_release")
    except BaseException:
        try:
            con.execute("detach next_release")
        except duckdb.Error:
            pass
        _remove(tmp)
        raise
    if tmp.with_name(tmp.name + ".wal").exists():  # DETACH checkpoints; a WAL here would be a bug
        raise RuntimeError(f"{tmp}.wal left behind after detach; refusing to publish a partial file")
    keep_version(serving_path, keep)
    replace_atomically(tmp, serving_path)
    run_log.insert(con, record)
    erased = erased_ids(con)
    keys = pseudonymise(erased, pseudonym_key) if erased and pseudonym_key else []
    for version in list_versions(serving_path):  # erasure reaches the kept publications too
        scrub_file(version, erased, keys)
    return counts
