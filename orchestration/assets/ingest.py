"""Ingest assets: one per source entity, loading the source files into ``raw.<entity>``."""


from functools import partial
from pathlib import Path

import dagster as dg

from data_quality.contract import ENTITIES, Entity
from data_quality.pii import (
    ERASURE_SOURCE_FILE, PERSONAL_TABLES_WITH_CUSTOMER_ID, erase_from, erased_ids, pseudonym_key,
    pseudonym_rows, pseudonymise, read_id_file, record_requests,
)
from orchestration.settings import PipelineSettings
from orchestration.postgres_url import DatabaseError
from orchestration.source_database import erase_from_mirror, load_entity_from_database
from orchestration.source_files import LoadResult, SourceError, erase_from_rejects, load_entity, rejects_table

ERASURE_REQUESTS = dg.AssetKey(["raw", "erasure_requests"])
CUSTOMER_PSEUDONYMS = dg.AssetKey(["ops", "customer_pseudonyms"])


@dg.asset(key=ERASURE_REQUESTS, group_name="ingest", kinds={"duckdb"},
          description="Customer ids to erase (--erase FILE and erasure_requests.csv in the source), accumulated in "
          "ops.erasure_requests and applied to every raw table on every run; also removed from stored run messages "
          "and from the kept run reports, run logs and Great Expectations results.")
def erasure_requests(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    from data_quality.pii import scrub_reports, scrub_run_messages

    files = [Path(settings.erase_file)] if settings.erase_file else []
    if settings.source_database is None:  # a source folder may carry its own erasure requests
        files += [p for p in [Path(settings.source_dir) / ERASURE_SOURCE_FILE] if p.exists()]
    with settings.warehouse() as con:
        added = 0
        for path in files:
            if not path.exists():
                raise dg.Failure(description=f"erasure file {path} does not exist (--erase / CRM_ERASE_FILE)")
            added += record_requests(con, read_id_file(path), str(path))
        ids = erased_ids(con)
        messages = scrub_run_messages(con, ids)  # failures stored before, published with the next good run
    total = len(ids)
    # kept files written by earlier runs (a run's own files never hold an erased customer: erasure comes first)
    scrubbed = {"files": 0, "rows": 0}
    if ids:
        needles = ids + pseudonymise(ids, pseudonym_key(settings.pseudonym_key_file))
        logs = Path(settings.warehouse_path).resolve().parent / "logs"
        for folder in (settings.reports_dir, settings.gx_dir, logs):
            done = scrub_reports(folder, needles, exclude={f"run_{context.run_id}.log"})
            scrubbed = {k: scrubbed[k] + done[k] for k in scrubbed}
    if added:
        context.log.info(f"erasure: {added} new customer id(s) recorded ({total} in all)")
    if scrubbed["files"] or messages:
        context.log.info(f"erasure: erased customers removed from {scrubbed['files']} kept report/log file(s) "
                         f"({scrubbed['rows']} table row(s)) and {messages} stored run message(s)")
    return dg.MaterializeResult(metadata={"new_requests": added, "total_requests": total,
                                          "kept_files_scrubbed": scrubbed["files"],
                                          "report_rows_removed": scrubbed["rows"],
                                          "run_messages_scrubbed": messages})


def build_ingest_asset(entity: Entity) -> dg.AssetsDefinition:
    @dg.asset(
        key=["raw", entity.name],
        deps=[ERASURE_REQUESTS] if entity.name in PERSONAL_TABLES_WITH_CUSTOMER_ID else [],
        group_name="ingest",
        kinds={"duckdb"},
        description=(
            f"Source `{entity.name}` files loaded as text into `raw.{entity.name}` "
            f"({'required' if entity.required else 'optional'}; key `{entity.key}`); malformed CSV lines, with "
            f"file and line number, into `raw.{entity.name}_rejects`."
        ),
    )
    def _ingest(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
        try:
            if settings.engine == "spark" and settings.source_database is None:
                result, erased = _load_files_on_spark(settings, entity)
            else:
                result, erased = _load_into_duckdb(settings, entity, context.run_id)
        except (SourceError, DatabaseError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if result.rows_read is not None:
            context.log.info(f"ingest {entity.name}: {result.rows:,} rows ({result.mode} read: {result.rows_read:,} "
                             f"rows from {result.files[0]})" if result.present
                             else f"ingest {entity.name}: optional table absent: empty table")
        else:
            context.log.info(
                f"ingest {entity.name}: {result.rows:,} rows"
                + (f" from {len(result.files)} file(s)" if result.present else " (optional file absent: empty table)")
            )
        if result.rejected_lines:  # line numbers and reasons only: the lines themselves may hold personal data
            context.log.warning(
                f"ingest {entity.name}: {result.rejected_lines:,} malformed CSV line(s) set aside in "
                f"{rejects_table(entity.name)} and counted as quarantined rows: {'; '.join(result.rejects[:5])}"
                + (" ..." if result.rejected_lines > 5 else "")
            )
        for warning in result.warnings:
            context.log.warning(warning)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows,
                "files": dg.MetadataValue.json(result.files),
                "present": result.present,
                "missing_optional_columns": dg.MetadataValue.json(result.missing_optional_columns),
                "ignored_columns": dg.MetadataValue.json(result.ignored_columns),
                "rows_erased": erased,
                "rows_read": result.rows if result.rows_read is None else result.rows_read,
                "read_mode": result.mode,
                "rejected_lines": result.rejected_lines,
                "rejects": dg.MetadataValue.json(result.rejects),
                "warnings": dg.MetadataValue.json(result.warnings),
            }
        )

    return _ingest


def _load_into_duckdb(settings: PipelineSettings, entity: Entity, run_id: str) -> tuple[LoadResult, int]:
    """Files or the source database into the DuckDB file, erased customers deleted after. On Spark (a database
    source: one connection reads it) the landed tables are then copied into the Spark catalog."""
    with settings.warehouse() as con:
        database = settings.source_database
        if database is not None:
            result = load_entity_from_database(con, entity, database, run_id=run_id,
                                               full_refresh=settings.full_refresh)
        else:
            result = load_entity(con, entity, Path(settings.source_dir))
        erased = 0
        if entity.name in PERSONAL_TABLES_WITH_CUSTOMER_ID:
            ids = erased_ids(con)
            erased = erase_from(con, f"raw.{entity.name}", ids) + erase_from_rejects(con, entity.name, ids)
            erase_from_mirror(con, entity.name, ids)  # a database source's merged history
    if settings.engine == "spark":
        from orchestration.spark_session import copy_tables

        with settings.open_warehouse() as warehouse:
            copy_tables(warehouse.session, settings.warehouse_path,
                        [("raw", entity.name), ("raw", f"{entity.name}_rejects")], settings.spark_folder / "landing")
    return result, erased


def _load_files_on_spark(settings: PipelineSettings, entity: Entity) -> tuple[LoadResult, int]:
    """Files straight into the Spark catalog, a task per file, erased customers left out in the tasks."""
    from orchestration.source_files_spark import load_entity_on_spark

    ids = []
    if entity.name in PERSONAL_TABLES_WITH_CUSTOMER_ID:
        with settings.warehouse() as con:  # the erasure register stays in the DuckDB file
            ids = erased_ids(con)
    with settings.open_warehouse() as warehouse:
        return load_entity_on_spark(warehouse, entity, Path(settings.source_dir), ids)


@dg.asset(key=CUSTOMER_PSEUDONYMS, deps=[dg.AssetKey(["raw", "customers"])], group_name="ingest", kinds={"duckdb"},
          description="customer_id -> customer_key (in customer_scores) and profile_key (in customer_profile): two "
          "keyed pseudonyms (HMAC-SHA256) that cannot be derived from each other without the key.")
def customer_pseudonyms(settings: PipelineSettings) -> dg.MaterializeResult:
    """customer_key lets the CRM act on customer_scores; profile_key keys the de-identified customer_profile.
    profile_key is keyed with a key of its own, derived from the pipeline's key (a hash, never published), so
    that the profile cannot be joined back to customer_scores, and through it to customer_id, in the serving
    file. Computed where the ids are (on Spark, in the executors)."""
    fn = partial(pseudonym_rows, key=pseudonym_key(settings.pseudonym_key_file))
    with settings.open_warehouse() as warehouse:
        rows = warehouse.write_mapped(
            "ops.customer_pseudonyms", "select distinct trim(customer_id) as customer_id from raw.customers "
            "where nullif(trim(customer_id), '') is not null", (), fn, rows=PSEUDONYM_BATCH)
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})


PSEUDONYM_BATCH = 200_000


ingest_assets = [erasure_requests, *[build_ingest_asset(entity) for entity in ENTITIES.values()], customer_pseudonyms]
