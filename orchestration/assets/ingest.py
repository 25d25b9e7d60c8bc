"""Ingest assets: one per source entity, loading the source files into ``raw.<entity>``."""


from pathlib import Path

import dagster as dg

from data_quality.contract import ENTITIES, Entity
from orchestration.settings import PipelineSettings
from orchestration.source_files import SourceError, load_entity


def build_ingest_asset(entity: Entity) -> dg.AssetsDefinition:
    @dg.asset(
        key=["raw", entity.name],
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
            }
        )

    return _ingest


ingest_assets = [build_ingest_asset(entity) for entity in ENTITIES.values()]
