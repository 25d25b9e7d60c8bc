"""The nightly job on Apache Spark computes what it computes on DuckDB (issue 18).

One real nightly run of the small sample on DuckDB is the reference. (1) With edge-case orders added to its raw
orders, its dbt sources are copied into a local Spark session's catalog and the same dbt project is built there
with dbt-spark (``--target spark``, the same vars): every model's table must equal DuckDB's (the same columns and
kinds of types, the same rows, floats within 1e-9). (2) The value, churn and scoring steps run on both engines:
their tables must be equal (floats within 1e-6). (3) ``crm-potential run --engine spark`` on the same source: every
table, the published views and the score history equal the DuckDB night's; then a failing gate, a past night, a
second release with an erased customer, rollbacks and a release that fails its audit. (4) The GX suites fail
alike on a Spark DataFrame and on pandas.

Runs under ``make test-spark`` (the ``spark`` marker; ``.venv-spark`` holds pyspark and dbt-spark, Java 17 from
Debian), not under ``make test``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.conftest import require, run_args

pytestmark = pytest.mark.spark

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"


def _java_found() -> bool:
    return shutil.which("java") is not None


@pytest.fixture(scope="module")
def duckdb_run(small_sample, tmp_path_factory) -> Path:
    """A real nightly run of the small sample on DuckDB: the reference."""
    from orchestration.cli import main

    work = tmp_path_factory.mktemp("duckdb_run")
    assert main(run_args(small_sample, work)) == 0
    return work


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    require(_java_found(), "Java (a JDK or JRE 17)", "run `make test-spark`, which installs Debian's default-jre-headless")
    require(importlib.util.find_spec("pyspark") is not None, "pyspark (the spark extra)",
            "run `make test-spark`, which installs it into .venv-spark")
    from orchestration.spark_session import local_session

    session = local_session(tmp_path_factory.mktemp("spark"), cores=2, shuffle_partitions=2)
    yield session
    session.stop()


# Orders whose text tests the engines' parsers where they differ most: zones and offsets, the other date shapes,
# texts one engine's cast would read and the contract refuses, odd numbers, and a date before the customer's
# created_at (a reason with an apostrophe). (ordered_at, amount)
EDGE_ORDERS = [
    ("2026-03-01T10:00:00Z", "10.00"), ("2026-03-01 10:00:00 Z", "10.5"), ("2026-03-01 10:00:00+02:00", "3.0"),
    ("2026-03-01 10:00:00-0500", " 12.50 "), ("2026-03-01 10:00:00+02", "1e3"), ("2026-03-01 23:30:00 UTC", "7"),
    ("2026-03-01 10:00:00.123456", "8"), ("2026-03-01", "9"), ("2026/03/01", "11"), ("01.03.2026", "12"),
    ("2026", "5"), ("2026-3-1", "5"), ("03/04/2026", "5"), ("not a date", "5"), ("", "5"),
    ("2026-03-01", "NaN"), ("2026-03-01", "1e400"), ("2026-03-01", "abc"), ("2026-03-01", "-0"),
    ("1990-01-01", "5"),
]


def _dbt(target: str, work_dir: Path, dbt_vars: dict) -> list[dict]:
    """``dbt build`` of the whole project on ``target``; every node must succeed. Returns the run's results."""
    from orchestration.spark_session import build_project

    success, results = build_project(target, work_dir, dbt_vars)
    failed = [(r["unique_id"], r["status"], (r.get("message") or "")[:300]) for r in results
              if r["status"] not in ("success", "pass")]
    assert success and not failed, failed
    return results


@pytest.fixture(scope="module")
def reference(duckdb_run, tmp_path_factory) -> tuple[Path, dict]:
    """The DuckDB run's warehouse with the edge-case orders added to its raw orders, rebuilt by dbt on DuckDB."""
    folder = tmp_path_factory.mktemp("reference")
    warehouse = folder / "warehouse.duckdb"
    shutil.copyfile(duckdb_run / "warehouse.duckdb", warehouse)
    with duckdb.connect(str(warehouse)) as con:
        customer = con.execute("select min(customer_id) from raw.customers").fetchall()[0][0]
        con.executemany("insert into raw.orders values (?, ?, ?, ?, 'completed', 'EUR', 'home', '1', 'online', 'edge', ?)",
                        [(f"EDGE-{i:03d}", customer, at, amount, 900_000 + i) for i, (at, amount) in enumerate(EDGE_ORDERS)])
    from orchestration.dbt_project import run_vars

    dbt_vars = {**run_vars(duckdb_run / "warehouse.duckdb"), "warehouse_path": str(warehouse)}
    _dbt("duckdb", folder / "target", dbt_vars)
    from orchestration.dbt_in_process import release_warehouse

    release_warehouse()
    return warehouse, dbt_vars


@pytest.fixture(scope="module")
def spark_build(reference, spark, tmp_path_factory) -> list[dict]:
    """The reference's dbt sources (raw text, pseudonyms, the run's scores) copied into Spark, then the same
    ``dbt build`` on Spark."""
    from orchestration.dbt_project import dbt_project
    from orchestration.spark_session import copy_sources

    warehouse, dbt_vars = reference
    assert len(copy_sources(spark, warehouse, dbt_project.manifest_path)) == 6
    return _dbt("spark", tmp_path_factory.mktemp("spark_target"), dbt_vars)


def _kind(arrow_type) -> str:
    import pyarrow as pa

    for kind, test in (("bool", pa.types.is_boolean), ("int", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("decimal", pa.types.is_decimal), ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
                       ("date", pa.types.is_date), ("timestamp", pa.types.is_timestamp)):
        if test(arrow_type):
            return kind
    return str(arrow_type)


def _rows(table, run_id: str | None = None) -> list[tuple]:
    """Rows as tuples of plain values, sorted (nulls first), floats kept for a tolerant comparison; ``run_id`` (and
    its 8-character short form) in a text replaced by ``RUN``."""
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = list(zip(*columns))
    if run_id:
        rows = [tuple(v.replace(run_id, "RUN").replace(run_id[:8], "RUN") if isinstance(v, str) else v for v in row)
                for row in rows]
    key = lambda row: tuple((v is None, "" if v is None else (round(v, 6) if isinstance(v, float) else v))  # noqa: E731
                            for v in row)
    return sorted(rows, key=key)


def _same(a, b, rel: float = 1e-9) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return a == b


def _table_differences(name: str, ours, theirs, run_ids: tuple[str, str] = (None, None), rel: float = 1e-9) -> list:
    """How two Arrow tables differ (nothing when equal): columns, kinds of types, row counts, then the first rows
    that differ, floats within ``rel``."""
    if ours.column_names != theirs.column_names:
        return [(name, "columns", ours.column_names, theirs.column_names)]
    kinds = [(c, _kind(ours.schema.field(c).type), _kind(theirs.schema.field(c).type))
             for c in ours.column_names if _kind(ours.schema.field(c).type) != _kind(theirs.schema.field(c).type)]
    if kinds:
        return [(name, "types", kinds)]
    if ours.num_rows != theirs.num_rows:
        return [(name, "rows", ours.num_rows, theirs.num_rows)]
    for row_a, row_b in zip(_rows(ours, run_ids[0]), _rows(theirs, run_ids[1])):
        unlike = [(c, a, b) for c, a, b in zip(ours.column_names, row_a, row_b) if not _same(a, b, rel)]
        if unlike:
            return [(name, "values", unlike[:5])]
    return []


def test_every_model_built_on_spark_equals_duckdb(reference, spark, spark_build):
    # (schema, table) of every model, from Spark's relation names (`analytics`.`customer_scores`)
    models = [tuple(r["relation_name"].replace("`", "").split(".")[-2:]) for r in spark_build
              if r["unique_id"].startswith("model.")]
    assert len(models) >= 25, models  # contract, quarantine, staging, intermediate, marts and analytics models
    tests = [r for r in spark_build if r["unique_id"].startswith("test.")]
    assert len(tests) >= 50 and all(r["status"] == "pass" for r in tests)

    differences = []
    with duckdb.connect(str(reference[0]), read_only=True) as con:
        for schema, name in models:
            ours = con.sql(f'select * from "{schema}"."{name}"').to_arrow_table()
            differences += _table_differences(name, ours, spark.table(f"{schema}.{name}").toArrow())
    assert not differences, "\n".join(map(str, differences))


def test_the_edge_cases_are_read_alike_and_quarantined_alike(reference, spark, spark_build):
    """The comparison above covers the edge-case orders; this says they reached both sides of the contract, and
    that Spark keeps the apostrophe of "the customer's created_at" (it reads 'a''b' as 'ab')."""
    query = ("select source_row, rule from quarantine.quarantine_orders where source_file = 'edge' "
             "order by source_row, rule")
    theirs = [tuple(r) for r in spark.sql(query).collect()]
    with duckdb.connect(str(reference[0]), read_only=True) as con:
        ours = con.execute(query).fetchall()
        kept = con.execute("select count(*) from staging.stg_orders_checked where order_id like 'EDGE-%' "
                           "and reject_reason is null").fetchall()[0][0]
    assert theirs == ours
    assert 5 <= len({row for row, _ in ours}) < len(EDGE_ORDERS) and kept >= 5, (ours, kept)
    assert any("customer's" in rule for _, rule in theirs), theirs


def _model_steps(settings) -> str:
    """The value, churn and scoring steps materialised with ``settings``; returns the run id."""
    import dagster as dg

    from orchestration.assets.churn import customer_churn
    from orchestration.assets.scoring import customer_scores
    from orchestration.assets.value_models import customer_value

    result = dg.materialize([customer_value, customer_churn, customer_scores], resources={"settings": settings},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return result.run_id


MODEL_TABLES = ("scores.customer_value", "scores.customer_churn", "scores.customer_scores", "ops.model_performance")


def test_the_model_steps_on_spark_write_what_they_write_on_duckdb(reference, duckdb_run, spark, spark_build, tmp_path):
    """The value, churn and scoring steps read and write through the warehouse interface: with
    ``engine="spark"`` they read the marts dbt built on Spark and write their tables into Spark's catalog. The same
    three steps on a copy of the DuckDB reference (each side training its models in a registry of its own) must
    write the same tables: the same columns and rows, floats within 1e-6, texts equal once each run's id is
    replaced by the same word. Last night's segments come from the publication: DuckDB's serving file, and on
    Spark the view ``serving.customer_scores`` (here a table of the same rows, for this test only)."""
    from orchestration.settings import PipelineSettings
    from orchestration.warehouse_spark import spark_ready

    with duckdb.connect(str(duckdb_run / "serving.duckdb"), read_only=True) as con:
        last_night = con.sql("select * from customer_scores").to_arrow_table()
    spark.sql("create database if not exists serving")
    spark.createDataFrame(spark_ready(last_night)).write.mode("overwrite").format("parquet") \
        .saveAsTable("serving.customer_scores")
    sides = {}
    try:
        for engine in ("duckdb", "spark"):
            folder = tmp_path / engine
            folder.mkdir()
            shutil.copyfile(reference[0], folder / "warehouse.duckdb")
            shutil.copyfile(duckdb_run / "serving.duckdb", folder / "serving.duckdb")  # last night's segments
            settings = PipelineSettings(engine=engine, warehouse_path=str(folder / "warehouse.duckdb"),
                                        serving_path=str(folder / "serving.duckdb"),
                                        model_registry_dir=str(folder / "models"),
                                        spark_dir=str(Path(spark.conf.get("spark.sql.warehouse.dir")).parent))
            sides[engine] = _model_steps(settings), folder
    finally:
        spark.sql("drop table if exists serving.customer_scores")
    (duck_run, duck_folder), (spark_run, _) = sides["duckdb"], sides["spark"]

    def read(engine: str, table: str):
        run = spark_run if engine == "spark" else duck_run
        query = f"select * from {table}" + (f" where run_id = '{run}'" if table.startswith("ops.") else "")
        if engine == "spark":
            return spark.sql(query).toArrow()
        with duckdb.connect(str(duck_folder / "warehouse.duckdb"), read_only=True) as con:
            return con.sql(query).to_arrow_table()

    differences = []
    for table in MODEL_TABLES:
        ours = read("duckdb", table)
        assert ours.num_rows > 0, table
        differences += _table_differences(table, ours, read("spark", table), (duck_run, spark_run), rel=1e-6)
    assert not differences, "\n".join(map(str, differences))
    assert read("spark", "scores.customer_scores").column("previous_potential_rank").null_count == 0


def test_a_night_on_spark_equals_the_duckdb_night_and_publishes_in_the_catalog(small_sample, duckdb_run, spark,
                                                                               tmp_path, capsys, monkeypatch):
    """``crm-potential run --engine spark`` on the same source: ingest lands the files in the Spark catalog (a task
    per file) and keys the pseudonyms there, the three dbt steps build on Spark in this process, the model
    steps and the checks read and write there, publication writes, audits and publishes a release in the Spark
    catalog, and the run report reads it there. Every model's table, the scores, the run's model_performance rows
    and the published views must equal the DuckDB night's (the same pseudonym key; each side trains in its own
    registry). Then: a night whose gate fails publishes nothing, a second release, a rollback to the first (the
    CLI's), and a release that fails its audit and changes nothing readers see."""
    from orchestration.cli import main

    shutil.copyfile(duckdb_run / ".pseudonym.key", tmp_path / ".pseudonym.key")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    monkeypatch.setenv("CRM_SPARK_DIR", str(Path(spark.conf.get("spark.sql.warehouse.dir")).parent))
    capsys.readouterr()
    assert main(run_args(small_sample, tmp_path, "--engine", "spark")) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert not (tmp_path / "serving.duckdb").exists()  # published in the catalog, not in a file
    run_id = spark.sql("select run_id from serving.pipeline_runs where published").collect()[0][0]
    customers = spark.sql("select count(*) from serving.customer_scores").collect()[0][0]
    assert f"Published {customers:,} customer scores" in said and run_id in said and "serving.* of the Spark" in said
    report = (tmp_path / "reports" / f"run_{run_id}.html").read_text(encoding="utf-8")
    assert "Top customers" in report and "first publication kept here" in report  # read from the catalog
    with duckdb.connect(str(duckdb_run / "warehouse.duckdb"), read_only=True) as con:
        duck_run = con.execute("select run_id from ops.pipeline_runs where published").fetchall()[0][0]
        tables = [tuple(r) for r in con.execute(
            "select table_schema, table_name from information_schema.tables where table_schema in "
            "('raw', 'staging', 'quarantine', 'intermediate', 'marts', 'analytics', 'scores') "
            "or (table_schema, table_name) = ('ops', 'customer_pseudonyms')").fetchall()]
    assert len(tables) >= 39 and ("raw", "orders_rejects") in tables
    differences = []
    for schema, name in tables:
        query = f"select * from {schema}.{name}"
        with duckdb.connect(str(duckdb_run / "warehouse.duckdb"), read_only=True) as con:
            ours = con.sql(query).to_arrow_table()
        theirs = spark.sql(query).toArrow()
        differences += _table_differences(f"{schema}.{name}", ours, theirs, (duck_run, run_id), rel=1e-6)
    performance = "select * from ops.model_performance where run_id = '{}'"
    with duckdb.connect(str(duckdb_run / "warehouse.duckdb"), read_only=True) as con:
        ours = con.sql(performance.format(duck_run)).to_arrow_table()
    differences += _table_differences("ops.model_performance", ours, spark.sql(performance.format(run_id)).toArrow(),
                                      (duck_run, run_id), rel=1e-6)
    # what readers see: the serving views equal the DuckDB night's serving file
    from orchestration.publication import PUBLISHED_TABLES
    from orchestration.score_history import HISTORY_TABLES

    for name in (*PUBLISHED_TABLES, *HISTORY_TABLES):
        query = f"select * from {name}" + (" where run_id = '{}'" if name == "model_performance" else "")
        with duckdb.connect(str(duckdb_run / "serving.duckdb"), read_only=True) as con:
            ours = con.sql(query.format(duck_run)).to_arrow_table()
        theirs = spark.sql(query.replace(" from ", " from serving.", 1).format(run_id)).toArrow()
        differences += _table_differences(f"serving.{name}", ours, theirs, (duck_run, run_id), rel=1e-6)
    assert not differences, "\n".join(map(str, differences))
    # the next night's row-count band compares with this night's source, read from the catalog's run log
    from orchestration.checks import _last_published_rows_in
    from orchestration.settings import PipelineSettings
    from orchestration.warehouse_spark import SparkWarehouse

    rows_in = json.loads(_last_published_rows_in(PipelineSettings(engine="spark"), SparkWarehouse(spark)))
    assert rows_in["orders"] == spark.sql("select count(*) from raw.orders").collect()[0][0] > 0

    # a gate that fails on Spark (the churn model's AUC floor) stops the night before publication
    monkeypatch.setenv("CRM_MIN_CHURN_AUC", "0.999")
    assert main(run_args(small_sample, tmp_path, "--engine", "spark")) == 1
    assert "nothing was published" in capsys.readouterr().err
    assert spark.sql("select release from serving_releases.current").collect()[0][0] == run_id
    failed = spark.sql("select run_id, status from serving_releases.pipeline_runs_log where not published").collect()
    assert [r.status for r in failed] == ["failed"]  # in the run log the next release publishes
    monkeypatch.delenv("CRM_MIN_CHURN_AUC")

    _releases_switch_roll_back_and_refuse_a_bad_one(spark, run_id, tmp_path, capsys)


def _releases_switch_roll_back_and_refuse_a_bad_one(spark, first: str, work: Path, capsys) -> None:
    import dataclasses

    from orchestration import run_log
    from orchestration.cli import main
    from orchestration.publication_spark import (PublicationError, current_release, publish_on_spark, releases,
                                                 rollback_to)
    from orchestration.warehouse_spark import SparkWarehouse

    warehouse = SparkWarehouse(spark)
    rows, as_of, victim = spark.sql("select count(*), min(as_of_date), min(customer_id) from serving.customer_scores"
                                    ).collect()[0]
    record = run_log.RunRecord(run_id="second-release", as_of_date=as_of.isoformat(), started_at=None,
                               status="success", published=True, source_dir="test")
    with pytest.raises(PublicationError, match="older than the published one"):  # no backfill on Spark yet
        publish_on_spark(warehouse, dataclasses.replace(record, as_of_date="2020-01-31"), keep=2)
    # the same night again, one customer erased meanwhile: the kept first release loses that customer's rows
    counts = publish_on_spark(warehouse, record, keep=2, erased={"customer_id": [victim]})
    assert current_release(warehouse) == "second-release" and counts["customer_scores"] == rows
    assert counts["customer_scores_history"] == rows - 1  # tonight's night replaced, the erased customer left out
    for release, expected in ((first, rows - 1), ("second-release", rows)):  # tonight's rows: erased at ingest
        kept = spark.sql(f"select count(*), count_if(customer_id = '{victim}') from serving_releases.customer_scores "
                         f"where release = '{release}'").collect()[0]
        assert tuple(kept) == (expected, 0 if release == first else 1)
    assert not spark.sql(f"select * from serving_releases.customer_scores_history where customer_id = '{victim}'").count()
    assert {r for r, _, _ in releases(warehouse)} == {first, "second-release"}
    rollback = ["rollback", "--engine", "spark", "--warehouse", str(work / "warehouse.duckdb")]
    assert main([*rollback, "--list"]) == 0 and "(current)" in capsys.readouterr().out
    assert main(rollback) == 0 and current_release(warehouse) == first  # the newest before the current
    assert first in capsys.readouterr().out
    assert rollback_to(warehouse, "second") == "second-release"
    assert rollback_to(warehouse, first[:8]) == first and current_release(warehouse) == first
    assert spark.sql("select count(*) from serving.pipeline_runs").collect()[0][0] == 1  # the first release's log
    # a release whose customer_scores holds a customer twice fails its audit; readers keep the first release
    spark.sql("insert into analytics.customer_scores select * from analytics.customer_scores limit 1")
    bad = dataclasses.replace(record, run_id="third-release")
    with pytest.raises(PublicationError, match="appear more than once"):
        publish_on_spark(warehouse, bad, keep=2)
    assert current_release(warehouse) == first
    assert spark.sql("select count(*) from serving.customer_scores").collect()[0][0] == rows - 1  # scrubbed above
    assert "third-release" not in {r for r, _, _ in releases(warehouse)}
    assert not spark.sql("select * from serving_releases.customer_scores where release = 'third-release'").count()


def dg_instance():
    import dagster as dg

    return dg.DagsterInstance.ephemeral()


def test_great_expectations_on_spark_dataframes_finds_what_it_finds_on_pandas(duckdb_run, spark, tmp_path):
    """On Spark the GX suites validate Spark DataFrames with GX's Spark engine (where the data is). The published
    scores pass on both engines; with one customer twice and a churn probability of 1.5 both fail, alike."""
    from datetime import datetime

    import pyarrow as pa

    from data_quality.gx_gate import validate
    from data_quality.suites import COLUMNS, SUITES
    from orchestration.warehouse_spark import spark_ready

    with duckdb.connect(str(duckdb_run / "serving.duckdb"), read_only=True) as con:
        good = con.sql(f"select {', '.join(COLUMNS['customer_scores'])} from customer_scores").to_arrow_table()
    first = good.slice(0, 1)
    wrong = first.set_column(first.column_names.index("churn_probability"), "churn_probability",
                             pa.array([1.5], pa.float64()))
    bad = pa.concat_tables([good, wrong])
    outcomes = {}
    for name, table in (("good", good), ("bad", bad)):
        suite = lambda: SUITES["customer_scores"](good.num_rows, datetime(2026, 11, 30))  # noqa: E731
        on_pandas = validate(tmp_path / "gx", "customer_scores", table.to_pandas(), suite())
        on_spark = validate(tmp_path / "gx", "customer_scores", spark.createDataFrame(spark_ready(table)), suite())
        outcomes[name] = on_pandas, on_spark
    (pandas_good, spark_good), (pandas_bad, spark_bad) = outcomes["good"], outcomes["bad"]
    assert pandas_good.success and spark_good.success and spark_good.evaluated == pandas_good.evaluated
    assert not pandas_bad.success and not spark_bad.success
    assert sorted(spark_bad.failures) == sorted(pandas_bad.failures), (spark_bad.failures, pandas_bad.failures)
    assert any("churn_probability" in f for f in spark_bad.failures) and any("unique(customer_id)" in f for f in spark_bad.failures)
