"""dbt models as Dagster assets; dbt tests become asset checks (errors stop the run).

The dbt project runs as three ``dbt build`` steps, each an ``@dbt_assets`` definition over one selection:

1. ``dbt_contract`` (tag ``contract``): every raw row typed and checked against the data contract
   (``staging/stg_*_checked``) and the rows that break it (``quarantine/*``), with their tests. None of it
   depends on the as-of date, so it runs first; then it resolves the run's as-of date and windows from the
   rows it passed (never from the raw rows) and records them in ``ops.run_windows``: every later step reads
   them from there (``PipelineSettings.run_windows``), so they are resolved once per run.
2. ``dbt_models``: the rest of staging, intermediate and marts, as of that date.
3. ``dbt_analytics`` (``models/analytics``): the published analyst tables, built on the Python scores.

The manifest they are defined from is prepared before the definitions load (``orchestration/dbt_project.py``);
under ``dagster dev`` ``prepare_if_dev`` parses a stale one here, as dagster-dbt intends.
"""


import json
from typing import Any, Mapping

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from ml.windows import Windows
from orchestration.dbt_project import dbt_project, require_manifest, step_target_path, warm_partial_parse
from orchestration.dbt_resource import SUBPROCESS_ENV, DbtCli
from orchestration.file_modes import private_files
from orchestration.settings import AS_OF_FROM_TAG, PipelineSettings

dbt_project.prepare_if_dev()  # parses only under `dagster dev`; elsewhere the manifest was prepared beforehand
MANIFEST = require_manifest()


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


CONTRACT = "tag:contract"
ANALYTICS = "path:models/analytics"


def _build(context: dg.AssetExecutionContext, dbt: DbtCli, settings: PipelineSettings, windows: Windows):
    """``dbt build`` (models and their tests, in DAG order) with the run's as-of date and paths as vars, on the
    profile target of the run's engine (``duckdb``, or ``spark``: dbt-spark in this process's session)."""
    dbt_vars = settings.dbt_vars(windows, context.run_id)
    target = step_target_path(settings.warehouse_path, context.op_def.name)
    args = ["build", "--vars", json.dumps(dbt_vars)]
    if settings.engine == "spark":
        if not dbt.runs_in_process():
            raise dg.Failure(f"CRM_ENGINE=spark runs dbt in the pipeline's process (its Spark session); unset "
                             f"{SUBPROCESS_ENV}")
        settings.spark_session()  # started first: dbt-spark's `session` method finds it and uses it
        args += ["--target", "spark"]
        context.log.info(f"dbt build as of {windows.as_of.isoformat()} on Spark")
    else:
        context.log.info(f"dbt build as of {windows.as_of.isoformat()} into {dbt_vars['warehouse_path']}")
    if not dbt.runs_in_process():  # a dbt subprocess parses on its own: give it the newest saved parse
        warm_partial_parse(settings.warehouse_path, context.op_def.name)
    # dbt writes the warehouse from a subprocess, which inherits the owner-only umask of private_files
    with private_files(settings.warehouse_path, settings.serving_file, extra_files=(settings.pseudonym_key_file,)):
        yield from dbt.cli(args, context=context, target_path=target).stream()


def _run_windows(context: dg.AssetExecutionContext, settings: PipelineSettings) -> Windows:
    with settings.open_warehouse() as warehouse:
        return settings.run_windows(warehouse, context.run_id)


@dbt_assets(manifest=MANIFEST, project=dbt_project, dagster_dbt_translator=translator,
            select=CONTRACT, name="dbt_contract")
def dbt_contract(context: dg.AssetExecutionContext, dbt: DbtCli, settings: PipelineSettings):
    """The contract layer: every raw row typed and checked (staging/stg_*_checked) and the rows that break
    the contract (quarantine/*), with their tests. The run's as-of date comes from the rows it passes."""
    with settings.open_warehouse() as warehouse:  # the models here read no window var (see its docstring)
        windows = settings.provisional_windows(warehouse)
    yield from _build(context, dbt, settings, windows)
    with settings.open_warehouse() as warehouse:  # the run's windows, once, from the rows that kept the contract
        windows = settings.record_windows(warehouse, context.run_id)
    context.log.info(f"as of {windows.as_of.isoformat()}; cutoffs {', '.join(d.isoformat() for d in windows.cutoffs())}")
    if context.has_partition_key and context.partition_key != windows.as_of.isoformat():
        if context.run.tags.get(AS_OF_FROM_TAG) == "settings":  # --as-of before the first night the UI lists
            context.log.info(f"as of {windows.as_of.isoformat()}, a date outside the nights the Dagster UI lists "
                             f"(CRM_PARTITIONS_START {settings.partitions_start} to today): this run is filed under "
                             f"the night of {context.partition_key}")
        else:
            context.log.warning(f"this run is filed under the night of {context.partition_key} but its data runs up "
                                f"to {windows.as_of.isoformat()} (its as-of date): give --as-of to run a given night")


@dbt_assets(manifest=MANIFEST, project=dbt_project, dagster_dbt_translator=translator,
            exclude=f"{CONTRACT} {ANALYTICS}")
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCli, settings: PipelineSettings):
    """Staging, intermediate and marts as of the run's as-of date: everything the models need."""
    yield from _build(context, dbt, settings, _run_windows(context, settings))


@dbt_assets(manifest=MANIFEST, project=dbt_project, dagster_dbt_translator=translator,
            select=ANALYTICS, name="dbt_analytics")
def dbt_analytics(context: dg.AssetExecutionContext, dbt: DbtCli, settings: PipelineSettings):
    """The published analyst tables, built on the scores: customer_scores (typed, with its contract),
    segment_summary, lifecycle_funnel and campaign_effectiveness."""
    yield from _build(context, dbt, settings, _run_windows(context, settings))
