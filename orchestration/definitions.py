"""Dagster definitions: what ``dagster dev``, the schedule and ``crm-potential run`` all load."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.dbt import dbt_analytics, dbt_contract, dbt_models
from orchestration.assets.churn import customer_churn
from orchestration.assets.ingest import ingest_assets
from orchestration.assets.publish import publication
from orchestration.assets.report import report_complete, run_report
from orchestration.assets.scoring import customer_scores
from orchestration.assets.value_models import customer_value
from orchestration.checks import asset_checks
from orchestration.dbt_project import dbt_executable, dbt_project
from orchestration.dbt_resource import DbtCli
from orchestration.jobs import nightly_job, nightly_schedule, validate_job
from orchestration.partitions import NIGHTLY_PARTITIONS
from orchestration.sensors import failure_alerts
from orchestration.settings import PipelineSettings

ASSETS = [*ingest_assets, dbt_contract, dbt_models, customer_value, customer_churn, customer_scores, dbt_analytics,
          publication, run_report]

defs = dg.Definitions(
    # every asset is one night per partition (orchestration/partitions.py): the UI shows the nights, backfills run them
    assets=dg.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=NIGHTLY_PARTITIONS), ASSETS),
    asset_checks=[*asset_checks, report_complete],
    jobs=[nightly_job, validate_job],
    schedules=[nightly_schedule],
    sensors=[failure_alerts],
    resources={
        "settings": PipelineSettings.from_env(),
        "dbt": DbtCli(project_dir=dbt_project, dbt_executable=dbt_executable()),
    },
)
