"""Run parameters from env vars, CLI flags and Dagster run config; ingest assets in a real Dagster run."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from orchestration.assets.ingest import ingest_assets
from orchestration.cli import build_parser, main
from orchestration.settings import PipelineSettings, SettingsError


def test_env_vars_then_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_SOURCE_DIR", "/data/crm")
    monkeypatch.setenv("CRM_CHURN_HORIZON_DAYS", "60")
    monkeypatch.setenv("CRM_WAREHOUSE", str(tmp_path / "w.duckdb"))
    s = PipelineSettings.from_env(clv_horizon_days=180)
    assert (s.source_dir, s.churn_horizon_days, s.clv_horizon_days) == ("/data/crm", 60, 180)
    assert s.serving_file == tmp_path / "serving.duckdb"  # beside the warehouse by default
    assert PipelineSettings.from_env(churn_horizon_days=30).churn_horizon_days == 30


def test_the_spark_folder_is_a_local_path_however_it_is_written(tmp_path):
    """``CRM_SPARK_DIR`` as a path or as Spark writes one (``spark.sql.warehouse.dir`` says ``file:/...``): DuckDB
    stages the landed tables there and the session keeps its metastore there, so it must be the path itself."""
    for given in (str(tmp_path), f"file:{tmp_path}", f"file://{tmp_path}"):
        assert PipelineSettings(spark_dir=given).spark_folder == tmp_path
    assert PipelineSettings(warehouse_path=str(tmp_path / "w.duckdb")).spark_folder == tmp_path / "spark"


def test_bad_values_are_clear_errors(monkeypatch):
    monkeypatch.setenv("CRM_CLV_HORIZON_DAYS", "a year")
    with pytest.raises(SettingsError, match="CRM_CLV_HORIZON_DAYS='a year' is not a number"):
        PipelineSettings.from_env()
    monkeypatch.delenv("CRM_CLV_HORIZON_DAYS")
    with pytest.raises(SettingsError, match="as_of_date must be YYYY-MM-DD"):
        PipelineSettings.from_env(as_of_date="30/06/2026")


def test_cli_rejects_bad_as_of_with_exit_2(capsys, tmp_path):
    assert main(["run", "--source", str(tmp_path), "--as-of", "yesterday"]) == 2
    assert "crm-potential run: error: argument --as-of: must be a date YYYY-MM-DD, got 'yesterday'" in \
        capsys.readouterr().err


def test_help_explains_every_parameter():
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for flag in ("--source", "--as-of", "--warehouse", "--serving", "--churn-horizon-days", "--clv-horizon-days",
                 "CRM_SOURCE_DIR", "CRM_AS_OF_DATE", "run config"):
        assert flag in text


def test_ingest_assets_with_partial_run_config(small_sample, tmp_path):
    # run config replaces the resource's configured values; fields it leaves out take their defaults
    run_config = {"source_dir": str(small_sample), "warehouse_path": str(tmp_path / "w.duckdb")}
    result = dg.materialize(
        ingest_assets,
        resources={"settings": PipelineSettings.from_env(source_dir="/does/not/exist")},
        run_config={"resources": {"settings": {"config": run_config}}},
    )
    assert result.success
    counts = {
        m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value
        for m in result.asset_materializations_for_node("raw__orders") + result.asset_materializations_for_node("raw__customers")
    }
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert counts["raw/orders"] == con.execute("select count(*) from raw.orders").fetchone()[0] > 0
        assert counts["raw/customers"] == con.execute("select count(*) from raw.customers").fetchone()[0] > 0


def test_ingest_failure_names_the_problem(tmp_path):
    settings = PipelineSettings.from_env(source_dir=str(tmp_path), warehouse_path=str(tmp_path / "w.duckdb"))
    result = dg.materialize(ingest_assets, resources={"settings": settings}, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    texts = " ".join(e.event_specific_data.user_failure_data.description for e in failures)
    assert "customers: required source file not found" in texts


def test_cli_rejects_an_unknown_time_zone_with_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_TIMEZONE", "Europe/Atlantis")
    assert main(["run", "--source", str(tmp_path)]) == 2
    assert "timezone (CRM_TIMEZONE) must be an IANA time zone name such as UTC or Europe/Berlin" in capsys.readouterr().err


def test_model_steps_connect_with_their_own_duckdb_memory_limit(monkeypatch, tmp_path):
    """DuckDB caches what it read up to its limit: the model steps' connection gets the smaller, separate limit,
    so a limit raised for dbt does not take the models' room."""
    monkeypatch.setenv("CRM_DUCKDB_MEMORY_LIMIT", "5GB")
    monkeypatch.setenv("CRM_MODELS_DUCKDB_MEMORY_LIMIT", "700MB")
    settings = PipelineSettings.from_env(warehouse_path=str(tmp_path / "w.duckdb"))
    limits = {}
    for for_models in (False, True):
        with settings.warehouse(for_models=for_models) as con:
            limits[for_models] = con.execute("select current_setting('memory_limit')").fetchone()[0]
    assert limits[False].startswith("4.6") and limits[True].startswith("667"), limits


def test_every_number_setting_reads_from_its_environment_variable_as_a_number(monkeypatch):
    """A new int or float setting must be parsed from its CRM_* variable as one (the field definitions read the
    environment while the class is built, so the table of number fields is kept by hand: this catches a miss)."""
    import typing

    from orchestration.settings import ENV_VARS, env_values

    numbers = {name: kind for name, field in PipelineSettings.model_fields.items() if name in ENV_VARS
               for kind in [typing.get_origin(field.annotation) or field.annotation] if kind in (int, float)}
    assert "scoring_batch_rows" in numbers and "max_drift_psi" in numbers
    for name, kind in numbers.items():
        monkeypatch.setenv(ENV_VARS[name], "7")
        assert type(env_values()[name]) is kind, name
