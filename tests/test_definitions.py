"""The Dagster definitions load, and the graph has what the nightly job needs."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from orchestration.dbt_project import ensure_manifest, manifest_is_stale
from orchestration.settings import PROJECT_ROOT


@pytest.fixture(scope="module", autouse=True)
def manifest():
    """The definitions are built from the dbt manifest, which is prepared before they load (as the CLI does)."""
    return ensure_manifest()


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
    # stopped unless switched on (issue 16): an open UI never launches a night by surprise
    from orchestration.jobs import default_schedule_status

    expected = dg.DefaultScheduleStatus.RUNNING if os.environ.get("CRM_SCHEDULE_ENABLED") == "1" \
        else dg.DefaultScheduleStatus.STOPPED
    assert schedule.default_status == expected
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_SCHEDULE_ENABLED", "1")
        assert default_schedule_status() == dg.DefaultScheduleStatus.RUNNING
        mp.setenv("CRM_SCHEDULE_ENABLED", "0")
        assert default_schedule_status() == dg.DefaultScheduleStatus.STOPPED
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


_watching: list[list[str]] = []  # while it holds a list, the audit hook below notes every subprocess started


def _note_subprocesses(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and _watching:
        _watching[-1].append(str(args[1]))


sys.addaudithook(_note_subprocesses)


def test_loading_the_definitions_never_parses_dbt_nor_loads_the_model_libraries(manifest, monkeypatch):
    """dagster-dbt's convention: the manifest is prepared beforehand (``crm-potential run``/``manifest``, a
    deployment's ``dagster-dbt project prepare-and-package``); only ``dagster dev`` parses while loading, and only a
    stale manifest. And scikit-learn and matplotlib load when a model or report step runs, not with the definitions."""
    from orchestration.dbt_project import dbt_project

    stat = manifest.stat()
    old = 946684800  # 2000-01-01: older than every model, so stale
    os.utime(manifest, (stat.st_atime, old))
    try:
        assert manifest_is_stale()
        # other test workers may re-parse the (shared, now stale) manifest meanwhile: so what this process and its
        # child start is watched (an audit hook sees every subprocess, dbt parse included), not the manifest's time
        code = ("import sys; started = []\n"
                "sys.addaudithook(lambda event, args: started.append(str(args[1])) if event == 'subprocess.Popen' "
                "else None)\n"
                "import orchestration.definitions\n"
                "print(sorted(m for m in ('sklearn', 'matplotlib', 'great_expectations', 'scipy') if m in sys.modules))\n"
                "print(started)")
        environ = {k: v for k, v in os.environ.items() if k != "DAGSTER_IS_DEV_CLI"}
        loaded = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=environ, capture_output=True,
                                text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        libraries, started = loaded.stdout.strip().splitlines()
        assert libraries == "[]"
        # loaded from the stale manifest: no dbt parse on import (libraries probe the platform with `file`, `ldconfig`)
        assert "dbt" not in started, started
        monkeypatch.delenv("DAGSTER_IS_DEV_CLI", raising=False)
        _watching.clear()
        _watching.append([])
        try:
            dbt_project.prepare_if_dev()  # what orchestration/assets/dbt.py calls: outside `dagster dev`, nothing
        finally:
            started_here = _watching.pop()
        assert not [cmd for cmd in started_here if "dbt" in cmd], started_here
        monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")  # as `dagster dev` sets it
        os.utime(manifest, (stat.st_atime, old))  # stale again: another worker's run may have re-parsed meanwhile
        _watching.append([])
        try:
            dbt_project.prepare_if_dev()
        finally:
            started_here = _watching.pop()
        # under `dagster dev` the stale manifest is fresh afterwards. Another worker's fixture may see it stale in the
        # same instant and parse first: then this process waits on the update guard and finds it fresh, parsing nothing
        # (so a parse in this process is not required: the manifest's freshness is what `dagster dev` needs)
        assert manifest.stat().st_mtime > old and not manifest_is_stale(), started_here
    finally:
        if manifest.stat().st_mtime == old:
            os.utime(manifest, (stat.st_atime, stat.st_mtime))


def test_every_asset_step_reports_under_a_stage_and_a_new_asset_gets_its_own():
    """Stages come from the asset graph's groups: no asset step's time lands in "checks", check steps do, and an
    asset added in a new group is a stage of that name (with its rows) without any list to update."""
    from dagster._core.execution.api import create_execution_plan

    from orchestration.definitions import defs
    from orchestration.run_log import CHECKS, DBT_OTHER, asset_steps, stage_of, stage_summary

    job = defs.resolve_job_def("nightly")
    steps = asset_steps(job)
    plan_steps = [step.key for step in create_execution_plan(job).get_all_steps_in_topo_order()]
    asset_step_keys = [key for key in plan_steps if key in steps]
    assert len(steps) == len(asset_step_keys) == 14 and set(steps) <= set(plan_steps)
    assert [stage_of(k, steps) for k in asset_step_keys].count(CHECKS) == 0
    assert {stage_of(k, steps) for k in plan_steps if k not in steps} == {CHECKS}  # the checks, and only them
    assert {stage_of(k, steps) for k in ("dbt_contract", "dbt_models")} == {DBT_OTHER}
    assert [stage_of(k, steps) for k in ("raw__orders", "scores__customer_value", "scores__customer_churn",
                                         "scores__customer_scores", "dbt_analytics", "serving__run_report")] == [
        "ingest", "value models", "churn model", "scoring", "dbt analyst tables", "run report"]
    order = list(steps)
    assert order.index("dbt_contract") < order.index("dbt_models") < order.index("scores__customer_value")

    @dg.asset(key=["scores", "next_purchase_day"], group_name="timing", deps=[dg.AssetKey(["scores", "customer_scores"])])
    def next_purchase_day() -> None:
        """An asset a later change might add."""

    grown = dg.Definitions.merge(defs, dg.Definitions(assets=[next_purchase_day])).resolve_job_def("nightly")
    more = asset_steps(grown)
    assert stage_of("scores__next_purchase_day", more) == "timing"
    table = stage_summary({"scores__next_purchase_day": 2.5, "dbt_models": 10.0, "dbt:staging": 1.0, "dbt:marts": 2.0,
                           "dbt:tests": 3.0, "raw__orders_row_count_within_band": 0.5},
                          {"scores.next_purchase_day": 7, "staging.stg_orders": 11, "marts.customer_features": 13}, more)
    assert table == [("dbt staging", 1.0, 11), ("dbt marts", 2.0, 13), ("dbt tests", 3.0, None),
                     (DBT_OTHER, 4.0, None), ("timing", 2.5, 7), (CHECKS, 0.5, None)]


def test_the_dbt_resource_runs_no_version_subprocess_and_builds_no_adapter(tmp_path):
    """``DbtCli`` replaces two private hooks of dagster-dbt (orchestration/dbt_resource.py): if an upgrade
    renames them, the override would silently stop saving anything, so their existence is checked here."""
    from importlib.metadata import version

    from dagster_dbt import DbtCliResource

    from orchestration.dbt_project import dbt_executable, dbt_project
    from orchestration.dbt_resource import DbtCli
    from orchestration.definitions import defs

    for hook in ("_cli_version", "_initialize_dbt_core_adapter"):
        assert hasattr(DbtCliResource, hook), f"dagster-dbt no longer has {hook}: review orchestration/dbt_resource.py"
    failing = tmp_path / "dbt"  # an executable that fails: `dbt --version` through it would raise
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    resource = DbtCli(project_dir=dbt_project, dbt_executable=str(failing))
    assert str(resource._cli_version) == version("dbt-core")  # the installed package's, no subprocess
    assert resource._initialize_dbt_core_adapter(["build"]) is None
    assert isinstance(defs.resources["dbt"], DbtCli)
    assert dbt_executable().endswith("dbt")
