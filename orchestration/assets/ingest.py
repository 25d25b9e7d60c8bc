"""Ingest assets: one per source entity, loading the source files into ``raw.<entity>``."""


from pathlib import Path

import dagster as dg
import pyarrow as pa

from data_quality.contract import ENTITIES, Entity
from data_quality.pii import (
    ERASURE_SOURCE_FILE, PERSONAL_TABLES_WITH_CUSTOMER_ID, erase_from, erased_ids, pseudonym_key, pseudonymise,
    read_id_file, record_requests,
)
from orchestration.settings import PipelineSettings
from orchestration.source_files import SourceError, load_entity

ERASURE_REQUESTS = dg.AssetKey(["raw", "erasure_requests"])
CUSTOMER_PSEUDONYMS = dg.AssetKey(["ops", "customer_pseudonyms"])


@dg.asset(key=ERASURE_REQUESTS, group_name="ingest", kinds={"duckdb"},
          description="Customer ids to erase (--erase FILE and erasure_requests.csv in the source), accumulated in "
          "ops.erasure_requests and applied to every raw table on every run.")
def erasure_requests(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    files = [Path(settings.erase_file)] if settings.erase_file else []
    files += [p for p in [Path(settings.source_dir) / ERASURE_SOURCE_FILE] if p.exists()]
    with settings.warehouse() as con:
        added = 0
        for path in files:
            if not path.exists():
                raise dg.Failure(description=f"erasure file {path} does not exist (--erase / CRM_ERASE_FILE)")
            added += record_requests(con, read_id_file(path), str(path))
        total = len(erased_ids(con))
    if added:
        context.log.info(f"erasure: {added} new customer id(s) recorded ({total} in all)")
    return dg.MaterializeResult(metadata={"new_requests": added, "total_requests": total})


def build_ingest_asset(entity: Entity) -> dg.AssetsDefinition:
    @dg.asset(
        key=["raw", entity.name],
        deps=[ERASURE_REQUESTS] if entity.name in PERSONAL_TABLES_WITH_CUSTOMER_ID else [],
        group_name="ingest",
        kinds={"duckdb"},
        description=(
            f"Source `{entity.name}` files loaded as text into `raw.{entity.name}` "
            f"({'required' if entity.required else 'optional'}; key `{entity.key}`)."
        ),
    )
    def _ingest(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
        try:
            with settings.warehouse() as con:
                result = load_entity(con, entity, Path(settings.source_dir))
                erased = (erase_from(con, f"raw.{entity.name}", erased_ids(con))
                          if entity.name in PERSONAL_TABLES_WITH_CUSTOMER_ID else 0)
        except SourceError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        context.log.info(
            f"ingest {entity.name}: {result.rows:,} rows"
            + (f" from {len(result.files)} file(s)" if result.present else " (optional file absent: empty table)")
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows,
                "files": dg.MetadataValue.json(result.files),
                "present": result.present,
                "missing_optional_columns": dg.MetadataValue.json(result.missing_optional_columns),
                "ignored_columns": dg.MetadataValue.json(result.ignored_columns),
                "rows_erased": erased,
            }
        )

    return _ingest


@dg.asset(key=CUSTOMER_PSEUDONYMS, deps=[dg.AssetKey(["raw", "customers"])], group_name="ingest", kinds={"duckdb"},
          description="customer_id -> customer_key, a keyed pseudonym (HMAC-SHA256) for de-identified tables.")
def customer_pseudonyms(settings: PipelineSettings) -> dg.MaterializeResult:
    key = pseudonym_key(settings.pseudonym_key_file)
    with settings.warehouse() as con:
        ids = [r[0] for r in con.execute(
            "select distinct trim(customer_id) from raw.customers where nullif(trim(customer_id), '') is not null"
        ).fetchall()]
        con.register("pseudonyms_df", pa.table({"customer_id": ids, "customer_key": pseudonymise(ids, key)}))
        con.execute("create schema if not exists ops")
        con.execute("create or replace table ops.customer_pseudonyms as select * from pseudonyms_df")
        con.unregister("pseudonyms_df")
    return dg.MaterializeResult(metadata={"dagster/row_count": len(ids)})


ingest_assets = [erasure_requests, *[build_ingest_asset(entity) for entity in ENTITIES.values()], customer_pseudonyms]
