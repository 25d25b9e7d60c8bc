"""Atomic publication of the serving database.

The new serving file is written beside the old one under a temporary name, closed (checkpointed,
no WAL left), then renamed over the old one with ``os.replace``. Readers that hold the old file open
keep reading the old publication; a reader that connects after the rename sees the new one; nobody
ever sees a half-written file. A failure before the rename leaves the old file untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

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
    "customer_scores": "select * from scores.customer_scores order by potential_rank",
    "model_performance": "select * from ops.model_performance",
}


def ensure_ops_tables(con: duckdb.DuckDBPyConnection) -> None:
    run_log.ensure_table(con)
    con.execute(MODEL_PERFORMANCE_DDL)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def publish(con: duckdb.DuckDBPyConnection, serving_path: Path, record: run_log.RunRecord) -> dict[str, int]:
    """Build the new serving file from the warehouse ``con`` and swap it in; returns rows per table."""
    serving_path = Path(serving_path).resolve()
    serving_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = serving_path.with_name(f".{serving_path.name}.{record.run_id}.tmp")
    _remove(tmp)
    ensure_ops_tables(con)
    counts: dict[str, int] = {}
    con.execute(f"attach '{tmp}' as next_release")
    try:
        for name, sql in PUBLISHED_TABLES.items():
            con.execute(f"create table next_release.main.{name} as {sql}")
            counts[name] = con.execute(f"select count(*) from next_release.main.{name}").fetchall()[0][0]
        con.execute("create table next_release.main.pipeline_runs as select * from ops.pipeline_runs")
        run_log.insert(con, record, schema="next_release.main")
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
    os.chmod(tmp, 0o644)  # readable by the BI group, writable only by the pipeline
    os.replace(tmp, serving_path)
    dir_fd = os.open(serving_path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    run_log.insert(con, record)
    return counts
