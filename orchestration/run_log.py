"""``pipeline_runs``: one row per run, kept in the warehouse (``ops``) and published with each release."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

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

# Stages are derived from the asset graph: every step that materialises assets is a stage named after its assets'
# group (a new asset lands in its group's stage, or in a new stage, never in "checks"). Names where the group's
# name is not enough (several steps share the group) or a clearer word exists:
STAGE_NAMES = {"scores__customer_value": "value models", "scores__customer_churn": "churn model",
               "analytics": "dbt analyst tables", "serving__publication": "publish", "serving__run_report": "run report"}
# a dbt build over several layers (the contract and models steps) reports each layer from dbt's own timings
# (``dbt:<layer>`` entries, ``dbt_project.layer_seconds``); what remains of the steps is this stage
DBT_OTHER = "dbt other (start-up, parsing)"
CHECKS = "checks"


@dataclass(frozen=True)
class AssetStep:
    """One step of the nightly job that materialises assets (check-only steps are not among them)."""

    key: str  # the Dagster step (op) name
    assets: tuple[tuple[str, str], ...]  # (warehouse table ``schema.table``, group) of its assets, upstream first
    dbt: bool  # a dbt build

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(group for _, group in self.assets))

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(table for table, _ in self.assets)

    @property
    def stage(self) -> str:
        if self.dbt and len(self.groups) > 1:
            return DBT_OTHER
        return STAGE_NAMES.get(self.key) or STAGE_NAMES.get(self.groups[0], self.groups[0])

    def describe(self) -> str:
        """What the step builds, for the terminal's step line."""
        if self.dbt:
            return f"dbt build of {len(self.assets)} model(s) in {', '.join(self.groups)}, with their tests"
        if len(self.assets) == 1:
            return f"{self.tables[0]} ({self.groups[0]})"
        return f"{len(self.assets)} assets in {', '.join(self.groups)}"


def asset_steps(job=None) -> dict[str, AssetStep]:
    """The asset steps of ``job`` (default: the nightly job of ``orchestration.definitions``) in pipeline order
    (each after the steps whose assets it reads), from the asset graph."""
    if job is None:
        return _nightly_steps()
    from graphlib import TopologicalSorter

    graph = job.asset_layer.asset_graph
    keys = [key for key in graph.toposorted_asset_keys if graph.get(key).is_executable]
    step_of = {key: graph.get(key).assets_def.op.name for key in keys}
    after: dict[str, set[str]] = {}
    assets: dict[str, list[tuple[str, str]]] = {}
    dbt: dict[str, bool] = {}
    for key in keys:
        step, node = step_of[key], graph.get(key)
        after.setdefault(step, set()).update(step_of[p] for p in node.parent_keys if step_of.get(p, step) != step)
        assets.setdefault(step, []).append((".".join(key.path), node.group_name))
        dbt[step] = dbt.get(step, False) or "dbt" in (node.kinds or ())
    order = list(TopologicalSorter(after).static_order())
    rank: dict[str, int] = {}  # each group where the pipeline first builds it: a step lists its groups that way
    for step in order:
        for _, group in assets[step]:
            rank.setdefault(group, len(rank))
    return {step: AssetStep(step, tuple(sorted(assets[step], key=lambda a: rank[a[1]])), dbt[step]) for step in order}


@lru_cache(maxsize=1)
def _nightly_steps() -> dict[str, AssetStep]:
    from orchestration.definitions import defs
    from orchestration.jobs import NIGHTLY_JOB_NAME

    return asset_steps(defs.resolve_job_def(NIGHTLY_JOB_NAME))


def stage_of(step_key: str, steps: dict[str, AssetStep] | None = None) -> str:
    """The stage a Dagster step (or a ``dbt:<layer>`` entry) belongs to; check steps are the stage "checks"."""
    if step_key.startswith("dbt:"):
        return f"dbt {step_key[4:]}"
    step = (asset_steps() if steps is None else steps).get(step_key)
    return step.stage if step else CHECKS


def stage_tables(steps: dict[str, AssetStep]) -> dict[str, tuple[str, ...]]:
    """Stage -> the tables whose rows it reports, in pipeline order. The multi-layer dbt steps appear as their
    layers (``dbt <group>``), then dbt's tests and what remains of them (``DBT_OTHER``)."""
    stages: dict[str, list[str]] = {}
    dbt_steps = [key for key, step in steps.items() if step.stage == DBT_OTHER]
    for key, step in steps.items():
        if step.stage != DBT_OTHER:
            stages.setdefault(step.stage, []).extend(step.tables)
            continue
        for table, group in step.assets:
            stages.setdefault(f"dbt {group}", []).append(table)
        if key == dbt_steps[-1]:
            stages.setdefault("dbt tests", [])
            stages.setdefault(DBT_OTHER, [])
    return {stage: tuple(tables) for stage, tables in stages.items()}


def stage_summary(stage_seconds: dict[str, float], stage_rows: dict[str, int],
                  steps: dict[str, AssetStep] | None = None) -> list[tuple[str, float, int | None]]:
    """(stage, seconds, rows) in pipeline order. The multi-layer dbt steps' seconds are split into their layers
    (from dbt's own node timings, ``dbt:<layer>`` entries) and what remains (start-up and parsing)."""
    steps = asset_steps() if steps is None else steps
    seconds: dict[str, float] = {}
    # ``dbt:<layer>`` entries split the multi-layer steps; a one-layer step's (``dbt:analytics:<layer>``) are
    # recorded for the run log only: that step is a stage of its own
    layers = {k: v for k, v in stage_seconds.items() if k.startswith("dbt:") and k.count(":") == 1}
    dbt_layers = sum(layers.values())
    for key, value in stage_seconds.items():
        if key.startswith("dbt:") and key not in layers:
            continue
        stage = stage_of(key, steps)
        seconds[stage] = seconds.get(stage, 0.0) + value
    if DBT_OTHER in seconds:
        seconds[DBT_OTHER] -= dbt_layers
    out = []
    tables = stage_tables(steps)
    for stage in [*tables, *(s for s in seconds if s not in tables)]:  # then checks and anything unforeseen
        if stage not in seconds:
            continue
        present = [n for t, n in stage_rows.items() if t in tables.get(stage, ())]
        out.append((stage, max(seconds[stage], 0.0), sum(present) if present else None))
    return out


def table_rows(warehouse, schemas=("raw", "staging", "quarantine", "intermediate", "marts", "scores",
                                   "analytics")) -> dict[str, int]:
    """Rows per table of the warehouse layers (one ``count(*)`` per table; ``orchestration/warehouse.py``). The
    names are the pipeline's own (dbt models, ``raw.<entity>``): plain identifiers both engines read."""
    return {f"{schema}.{table}": int(warehouse.scalar(f"select count(*) from {schema}.{table}"))
            for schema in sorted(schemas) for table in warehouse.tables(schema)}


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
    con.execute("update ops.pipeline_runs set message = ? where run_id = ?", [with_warning(found[0][0], warning), run_id])
    return True


def with_warning(message: str | None, warning: str) -> str:
    """A published run's message with one more ``warning: ...`` (status stays ``success``)."""
    previous = message or ""
    return ((previous + "; " if previous.startswith("warning: ") else "warning: ") + warning)[:4000]


def insert(con: duckdb.DuckDBPyConnection, record: RunRecord, schema: str = "ops") -> None:
    """Write the run's row (replacing an earlier one of the same run). ``schema`` is ours (``ops`` or the
    release's ``next_release.main``), never input; every value is a parameter."""
    ensure_table(con, schema)
    con.execute(f"delete from {schema}.pipeline_runs where run_id = ?", [record.run_id])
    con.execute(
        f"insert into {schema}.pipeline_runs ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})",
        record.row(),
    )
