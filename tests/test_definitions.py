"""The Dagster definitions load, and the graph has what the nightly job needs."""

from __future__ import annotations

import dagster as dg


def test_definitions_load_with_every_layer():
    from orchestration.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for expected in [
        "raw/customers", "raw/orders", "raw/interactions", "raw/campaigns",
        "staging/stg_customers", "staging/stg_orders", "marts/dim_customers", "marts/fct_orders",
        "marts/fct_interactions", "marts/customer_features", "scores/customer_scores", "serving/publication",
    ]:
        assert expected in keys
    job = defs.resolve_job_def("nightly")
    assert job.executor_def.name == "in_process"


def test_dbt_tests_are_asset_checks_and_scores_check_blocks():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    checks = {c.name: c for c in graph.asset_check_keys}
    assert "unique_customer_features_customer_id" in checks
    assert "assert_nothing_dated_after_as_of" in checks
    from orchestration.checks import asset_checks

    specs = [spec for check in asset_checks for spec in check.check_specs]
    assert specs and all(spec.blocking for spec in specs)


def test_nightly_schedule_at_two():
    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "nightly"
    assert isinstance(schedule, dg.ScheduleDefinition)


def test_every_asset_has_a_blocking_check_and_every_check_blocks():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    unchecked = [key.to_user_string() for key in graph.get_all_asset_keys()
                 if graph.get(key).is_materializable and key not in checked]
    assert unchecked == []
    not_blocking = [key.name for key in graph.asset_check_keys if not graph.get_check_spec(key).blocking]
    assert not_blocking == []


def test_the_contract_layer_is_the_first_dbt_step_and_keeps_its_asset_keys():
    """The checked and quarantine models build in their own step, before the as-of date is resolved from
    the rows they pass; the rest of dbt reads them, so Dagster runs that step first."""
    from data_quality.contract import ENTITIES
    from orchestration.assets.dbt import dbt_contract, dbt_models
    from orchestration.definitions import defs

    contract = {k.to_user_string() for k in dbt_contract.keys}
    assert contract == ({f"staging/stg_{e}_checked" for e in ENTITIES} | {f"quarantine/quarantine_{e}" for e in ENTITIES})
    assert dg.AssetKey(["staging", "stg_orders_checked"]) in dbt_models.asset_deps[dg.AssetKey(["staging", "stg_orders"])]
    assert not contract & {k.to_user_string() for k in dbt_models.keys}
    checks = {(c.asset_key.to_user_string(), c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    assert ("staging/stg_orders_checked", "contract_holds_stg_orders_checked_orders") in checks
    assert ("staging/stg_orders_checked", "amount_outliers_within_share") in checks  # blocks the steps after it
    assert ("marts/customer_features_history", "assert_model_inputs_are_finite") in checks
    assert not any(name == "gx_suite" and key.startswith("staging/") for key, name in checks)  # dbt holds staging
