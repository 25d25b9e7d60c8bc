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
    quarantined_by_rule varchar,
    stage_rows varchar
)
"""

# columns added after the first release: existing tables get them on the next run
MIGRATIONS = ["alter table {table} add column if not exists quarantined_by_rule varchar",
              "alter table {table} add column if not exists stage_rows varchar"]
COLUMNS = [
    "run_id", "as_of_date", "started_at", "finished_at", "status", "published", "source_dir", "parameters",
    "rows_in", "rows_out", "rows_quarantined", "checks_passed", "checks_failed", "model_versions",
    "stage_seconds", "message", "quarantined_by_rule", "stage_rows",
]

# stage -> (Dagster step keys that belong to it, warehouse tables whose rows it reports)
STAGES = {
    "ingest": (("raw__", "ops__customer_pseudonyms"), ("raw.",)),
    "dbt staging": (("dbt:staging",), ("staging.stg_customers", "staging.stg_orders", "staging.stg_interactions",
                                       "staging.stg_campaigns")),
    "dbt quarantine": (("dbt:quarantine",), ("quarantine.",)),
    "dbt intermediate": (("dbt:intermediate",), ("intermediate.",)),
    "dbt marts": (("dbt:marts",), ("marts.customer_features_history", "marts.customer_outcomes")),
    "dbt tests": (("dbt:tests",), ()),
    "dbt other (start-up, parsing)": (("dbt_models", "dbt_contract"), ()),
    "value models": (("scores__customer_value",), ("scores.customer_value",)),
    "churn model": (("scores__customer_churn",), ("scores.customer_churn",)),
    "scoring": (("scores__customer_scores",), ("scores.customer_scores",)),
    "dbt analyst tables": (("dbt_analytics",), ("analytics.",)),
    "publish": (("serving__publication",), ()),
    "run report": (("serving__run_report",), ()),
}
ASSET_STEPS = {"raw__customers", "raw__orders", "raw__interactions", "raw__campaigns", "raw__erasure_requests",
               "ops__customer_pseudonyms", "dbt_contract", "dbt_models", "dbt_analytics", "scores__customer_value",
               "scores__customer_churn", "scores__customer_scores", "serving__publication", "serving__run_report"}


def stage_of(step_key: str) -> str:
    """The stage a Dagster step (or a ``dbt:<layer>`` entry) belongs to; checks are a stage of their own."""
    if not step_key.startswith("dbt:") and step_key not in ASSET_STEPS:
        return "checks"
    for stage, (prefixes, _) in STAGES.items():
        if any(step_key.startswith(p) for p in prefixes):
            return stage
    return "other"


def stage_summary(stage_seconds: dict[str, float], stage_rows: dict[str, int]) -> list[tuple[str, float, int | None]]:
    """(stage, seconds, rows) in pipeline order. The dbt step's seconds are split into its layers (from
    dbt's own node timings, ``dbt:<layer>`` entries) and what remains (start-up and parsing)."""
    seconds: dict[str, float] = {}
    dbt_layers = sum(v for k, v in stage_seconds.items() if k.startswith("dbt:") and not k.startswith("dbt:analytics"))
    for key, value in stage_seconds.items():
        if key.startswith("dbt:analytics"):
            continue
        stage = stage_of(key)
        seconds[stage] = seconds.get(stage, 0.0) + (value - dbt_layers if key == "dbt_models" else value)
    out = []
    for stage in [*STAGES, "checks", "other"]:
        if stage not in seconds:
            continue
        tables = STAGES.get(stage, ((), ()))[1]
        rows = sum(n for t, n in stage_rows.items() if any(t == p or (p.endswith(".") and t.startswith(p))
                                                         for p in tables)) if tables else None
        out.append((stage, max(seconds[stage], 0.0), rows))
    return out


def table_rows(con: duckdb.DuckDBPyConnection, schemas=("raw", "staging", "quarantine", "intermediate", "marts",
                                                            "scores", "analytics")) -> dict[str, int]:
    """Rows per table of the warehouse layers (one ``count(*)`` per table)."""
    found = con.execute(
        "select schema_name, table_name from duckdb_tables() "
        f"where database_name = current_database() and schema_name in ({', '.join('?' * len(schemas))})",
        list(schemas)).fetchall()
    return {f"{schema}.{table}": int(con.execute(f"select count(*) from {_ident(schema, table)}").fetchall()[0][0])
            for schema, table in sorted(found)}


def _ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


@dataclass
class RunRecord:
    run_id: str
    as_of_date: str | None
    started_at: datetime | None
    status: str  # success | failed (a success whose message starts with "warning: " left something undone)
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
    stage_rows: dict = field(default_factory=dict)
    finished_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))

    def row(self) -> list:
        d = asdict(self)
        return [
            d["run_id"], d["as_of_date"], d["started_at"], d["finished_at"], d["status"], d["published"],
            d["source_dir"], json.dumps(d["parameters"], sort_keys=True), json.dumps(d["rows_in"], sort_keys=True),
            d["rows_out"], d["rows_quarantined"], d["checks_passed"], d["checks_failed"],
            json.dumps(d["model_versions"], sort_keys=True), json.dumps(d["stage_seconds"], sort_keys=True),
            d["message"], json.dumps(d["quarantined_by_rule"], sort_keys=True), json.dumps(d["stage_rows"], sort_keys=True),
        ]


def ensure_table(con: duckdb.DuckDBPyConnection, schema: str = "ops") -> None:
    con.execute(f"create schema if not exists {schema}")
    con.execute(DDL.replace("ops.", f"{schema}."))
    for migration in MIGRATIONS:
        con.execute(migration.format(table=f"{schema}.pipeline_runs"))


def add_warning(con: duckdb.DuckDBPyConnection, run_id: str, warning: str) -> bool:
    """Note on a published run's row (``ops.pipeline_runs``) that something after its publication failed:
    the status stays ``success``, the message gains ``warning: <warning>``. False when the run has no row."""
    ensure_table(con)
    found = con.execute("select message from ops.pipeline_runs where run_id = ?", [run_id]).fetchall()
    if not found:
        return False
    previous = found[0][0] or ""
    message = (previous + "; " if previous.startswith("warning: ") else "warning: ") + warning
    con.execute("update ops.pipeline_runs set message = ? where run_id = ?", [message[:4000], run_id])
    return True


def insert(con: duckdb.DuckDBPyConnection, record: RunRecord, schema: str = "ops") -> None:
    """Write the run's row (replacing an earlier one of the same run). ``schema`` is ours (``ops`` or the
    release's ``next_release.main``), never input; every value is a parameter."""
    ensure_table(con, schema)
    con.execute(f"delete from {schema}.pipeline_runs where run_id = ?", [record.run_id])
    con.execute(
        f"insert into {schema}.pipeline_runs ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})",
        record.row(),
    )
