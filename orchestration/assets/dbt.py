"""dbt models as Dagster assets; dbt tests become asset checks (errors stop the run)."""


import json
from typing import Any, Mapping

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from orchestration.dbt_project import dbt_project, ensure_manifest, step_target_path, warm_partial_parse
from orchestration.settings import PipelineSettings

ensure_manifest()


class CrmDbtTranslator(DagsterDbtTranslator):
    """Models are keyed ``<schema>/<model>`` and grouped by layer; sources keep ``raw/<entity>``."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id) or manifest["sources"].get(unique_id)
        if node["resource_type"] != "model":
            return spec
        layer = node["fqn"][1] if len(node["fqn"]) > 2 else "marts"
        return spec.replace_attributes(key=dg.AssetKey([node["schema"], node["name"]]), group_name=layer)


translator = CrmDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


ANALYTICS = "path:models/analytics"


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings):
    """``dbt build`` (models and their tests, in DAG order) with the run's as-of date and paths as vars."""
    with settings.warehouse() as con:
        windows = settings.resolve_windows(con)
    dbt_vars = settings.dbt_vars(windows, context.run_id)
    context.log.info(f"dbt build as of {windows.as_of.isoformat()} into {dbt_vars['warehouse_path']}")
    target = step_target_path(context.op_def.name)
    warm_partial_parse(context.op_def.name)
    yield from dbt.cli(["build", "--vars", json.dumps(dbt_vars)], context=context, target_path=target).stream()


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, dagster_dbt_translator=translator,
            exclude=ANALYTICS)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings):
    """Staging, quarantine, intermediate and marts: everything the models need."""
    yield from _build(context, dbt, settings)


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, dagster_dbt_translator=translator,
            select=ANALYTICS, name="dbt_analytics")
def dbt_analytics(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings):
    """The published analyst tables, built on the scores: customer_scores (typed, with its contract),
    segment_summary, lifecycle_funnel and campaign_effectiveness."""
    yield from _build(context, dbt, settings)
