"""``pipeline_runs``: one row per run, kept in the warehouse (``ops``) and published with each release."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import duckdb

DDL = """
create table if not exists ops.pipeline_runs (
    run_id varchar,
    as_of_date date,
    started_at timestamp,
    finished_at timestamp,
    status varchar,
    published boolean,
    source_dir varchar,
    parameters varchar,
    rows_in varchar,
    rows_out bigint,
    rows_quarantined bigint,
    checks_passed integer,
    checks_failed integer,
    model_versions varchar,
    stage_seconds varchar,
    message varchar,
    quarantined_by_rule varchar
)
"""

# columns added after the first release: existing tables get them on the next run
MIGRATIONS = ["alter table {table} add column if not exists quarantined_by_rule varchar"]
COLUMNS = [
    "run_id", "as_of_date", "started_at", "finished_at", "status", "published", "source_dir", "parameters",
    "rows_in", "rows_out", "rows_quarantined", "checks_passed", "checks_failed", "model_versions",
    "stage_seconds", "message", "quarantined_by_rule",
]


@dataclass
class RunRecord:
    run_id: str
    as_of_date: str | None
    started_at: datetime | None
    status: str  # success | failed
    published: bool
    source_dir: str
    parameters: dict = field(default_factory=dict)
    rows_in: dict = field(default_factory=dict)
    rows_out: int = 0
    rows_quarantined: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    model_versions: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    message: str = ""
    quarantined_by_rule: dict = field(default_factory=dict)
    finished_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))

    def row(self) -> list:
        d = asdict(self)
        return [
            d["run_id"], d["as_of_date"], d["started_at"], d["finished_at"], d["status"], d["published"],
            d["source_dir"], json.dumps(d["parameters"], sort_keys=True), json.dumps(d["rows_in"], sort_keys=True),
            d["rows_out"], d["rows_quarantined"], d["checks_passed"], d["checks_failed"],
            json.dumps(d["model_versions"], sort_keys=True), json.dumps(d["stage_seconds"], sort_keys=True),
            d["message"], json.dumps(d["quarantined_by_rule"], sort_keys=True),
        ]


def ensure_table(con: duckdb.DuckDBPyConnection, schema: str = "ops") -> None:
    con.execute(f"create schema if not exists {schema}")
    con.execute(DDL.replace("ops.", f"{schema}."))
    for migration in MIGRATIONS:
        con.execute(migration.format(table=f"{schema}.pipeline_runs"))


def insert(con: duckdb.DuckDBPyConnection, record: RunRecord, schema: str = "ops") -> None:
    ensure_table(con, schema)
    con.execute(f"delete from {schema}.pipeline_runs where run_id = ?", [record.run_id])
    con.execute(
        f"insert into {schema}.pipeline_runs ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})",
        record.row(),
    )
