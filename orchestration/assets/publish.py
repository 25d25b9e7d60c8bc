"""The publish asset: runs only after every upstream asset and blocking check of the run passed. Once the
serving file is swapped in it succeeds; what the publication left undone is logged as a warning and shown
in the ``warnings`` metadata (and in ``pipeline_runs.message``)."""


import json
from datetime import datetime
from pathlib import Path

import dagster as dg

from data_quality.contract import ENTITIES
from data_quality.pii import erased_ids, pseudonym_key
from data_quality.quarantine import quarantine_counts
from orchestration.assets.scoring import CUSTOMER_SCORES
from orchestration.dbt_project import layer_seconds
from orchestration.publication import WARNING_PREFIX, erased_keys, publish
from orchestration.score_history import Retention
from orchestration.source_database import commit_cursors
from orchestration.run_log import DBT_OTHER, RunRecord, asset_steps, table_rows
from orchestration.settings import PipelineSettings
from orchestration.warehouse import DuckDBWarehouse

PUBLICATION = dg.AssetKey(["serving", "publication"])
QUARANTINE_KEYS = [dg.AssetKey(["quarantine", f"quarantine_{entity}"]) for entity in ENTITIES]
PUBLISHED_MODEL_KEYS = [dg.AssetKey(["analytics", name]) for name in
                        ("customer_scores", "segment_summary", "lifecycle_funnel", "campaign_effectiveness")
                        ] + [dg.AssetKey(["marts", "customer_profile"])]


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list:
    """Every asset check evaluated in the run so far (``AssetCheckEvaluation``), from the event log."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=100_000)
    return [rec.event_log_entry.dagster_event.event_specific_data for rec in records.records]


def is_warning(evaluation) -> bool:
    """A check that failed with WARN severity (a stale source, say): it warns and does not stop the run, so it
    counts as passed (in ``pipeline_runs`` and the report)."""
    return not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN


def run_facts(context: dg.AssetExecutionContext, warehouse_path: str) -> dict:
    """Stage timings and check counts of this run so far, from the Dagster event log."""
    instance, run_id = context.instance, context.run_id
    stage_seconds = {}
    for stat in instance.get_run_step_stats(run_id):
        if stat.start_time and stat.end_time:
            stage_seconds[stat.step_key] = round(stat.end_time - stat.start_time, 3)
    for step in (s for s in asset_steps().values() if s.dbt and s.key in stage_seconds):
        # dbt's own time per layer, from its run_results.json (summed over the multi-layer steps; a one-layer
        # step, the analyst tables, under its own prefix)
        prefix = "dbt:" if step.stage == DBT_OTHER else f"dbt:{step.groups[0]}:"
        for layer, s in layer_seconds(warehouse_path, step.key).items():
            stage_seconds[f"{prefix}{layer}"] = round(stage_seconds.get(f"{prefix}{layer}", 0.0) + s, 3)
    evaluations = check_evaluations(instance, run_id)
    warned = [e for e in evaluations if is_warning(e)]  # its description goes into the run's message
    passed = sum(1 for e in evaluations if e.passed) + len(warned)
    failed = len(evaluations) - passed
    run = instance.get_run_by_id(run_id)
    started = instance.get_run_record_by_id(run_id).start_time if run else None
    return {
        "stage_seconds": stage_seconds,
        "checks_passed": passed,
        "checks_failed": failed,
        "started_at": datetime.utcfromtimestamp(started) if started else None,
        "warnings": [f"{e.check_name}: {e.description}" for e in warned],
    }


@dg.asset(
    key=PUBLICATION,
    deps=[CUSTOMER_SCORES, *PUBLISHED_MODEL_KEYS, *QUARANTINE_KEYS],
    group_name="publish",
    kinds={"duckdb"},
    description="The serving database (customer_scores, customer_profile, segment_summary, lifecycle_funnel, "
    "campaign_effectiveness, model_performance, pipeline_runs), replaced atomically; optionally also a PostgreSQL "
    "schema (swapped in one transaction) and a Parquet copy.",
)
def publication(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    facts = run_facts(context, settings.warehouse_path)
    if settings.engine == "spark":
        return _publish_on_spark(context, settings, facts)
    with settings.warehouse() as con:
        warehouse = DuckDBWarehouse(con)
        as_of = settings.run_windows(warehouse, context.run_id).as_of
        record = _run_record(context, settings, facts, as_of, warehouse)
        quarantined = record.quarantined_by_rule
        # once publish() returns, the file is swapped in: what it could not finish comes back as warnings
        published = publish(con, settings.serving_file, record, keep=settings.serving_versions,
                            pseudonym_key=pseudonym_key(settings.pseudonym_key_file),
                            storage_version=settings.serving_storage_version, target=settings.serving_target,
                            export_dir=Path(settings.export_parquet_dir) if settings.export_parquet_dir else None,
                            retention=Retention(settings.history_days, settings.history_months))
        if settings.source_database is not None:  # published: the night's read is now the database cursor
            commit_cursors(con, context.run_id)
    context.log.info(f"published {published.counts} to {settings.serving_display}")
    if published.latest_as_of != as_of.isoformat():
        context.log.info(f"the night of {as_of} is in the score history; the latest tables stay as of "
                         f"{published.latest_as_of}, a later night")
    for warning in published.warnings:
        context.log.warning(f"published, but {warning}")
    return dg.MaterializeResult(
        metadata={
            "serving_path": dg.MetadataValue.path(str(settings.serving_file.resolve())),
            **({"serving_target": settings.serving_target.display} if settings.serving_target else {}),
            **({"parquet_export": dg.MetadataValue.path(settings.export_parquet_dir)} if settings.export_parquet_dir
               else {}),
            "tables": dg.MetadataValue.json(published.counts),
            "as_of_date": as_of.isoformat(),
            "latest_as_of_date": published.latest_as_of,
            "rows_quarantined": dg.MetadataValue.json(quarantined),
            "warnings": dg.MetadataValue.json(published.warnings),
        }
    )


def _run_record(context: dg.AssetExecutionContext, settings: PipelineSettings, facts: dict, as_of,
                warehouse) -> RunRecord:
    """The run's ``pipeline_runs`` row, from the warehouse of the run's engine."""
    quarantined = quarantine_counts(warehouse)
    return RunRecord(
        run_id=context.run_id,
        as_of_date=as_of.isoformat(),
        started_at=facts["started_at"],
        status="success",
        published=True,
        source_dir=settings.source_display,
        parameters=settings.recorded_parameters(),
        rows_in={name: warehouse.scalar(f"select count(*) from raw.{name}") for name in ENTITIES},
        rows_out=warehouse.scalar("select count(*) from scores.customer_scores"),
        checks_passed=facts["checks_passed"],
        checks_failed=facts["checks_failed"],
        model_versions=json.loads(warehouse.scalar("select min(model_versions) from scores.customer_scores") or "{}"),
        stage_seconds=facts["stage_seconds"],
        rows_quarantined=sum(sum(rules.values()) for rules in quarantined.values()),
        quarantined_by_rule=quarantined,
        stage_rows=table_rows(warehouse),
        message=(WARNING_PREFIX + "; ".join(facts["warnings"]))[:4000] if facts["warnings"] else "",
    )


def _publish_on_spark(context: dg.AssetExecutionContext, settings: PipelineSettings, facts: dict) -> dg.MaterializeResult:
    """Write, audit and publish the release in the Spark catalog (``orchestration/publication_spark.py``)."""
    from orchestration.publication_spark import SERVING, publish_on_spark

    with settings.warehouse() as con, settings.open_warehouse() as warehouse:  # con: the erasure register, cursors
        as_of = settings.run_windows(warehouse, context.run_id).as_of
        record = _run_record(context, settings, facts, as_of, warehouse)
        counts = publish_on_spark(warehouse, record, keep=settings.serving_versions,
                                  erased=erased_keys(erased_ids(con), pseudonym_key(settings.pseudonym_key_file)),
                                  retention=Retention(settings.history_days, settings.history_months))
        if settings.source_database is not None:  # published: the night's read is now the database cursor
            commit_cursors(con, context.run_id)
    context.log.info(f"published {counts} to the Spark catalog's {SERVING} views")
    return dg.MaterializeResult(metadata={
        "serving": f"Spark catalog: {SERVING}.*", "tables": dg.MetadataValue.json(counts),
        "as_of_date": as_of.isoformat(), "rows_quarantined": dg.MetadataValue.json(record.quarantined_by_rule)})
