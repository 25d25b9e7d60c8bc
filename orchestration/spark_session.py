"""The local Apache Spark session of the Spark engine (issue 18): one per process, created before dbt-spark's.

dbt-spark's ``session`` method calls ``SparkSession.builder.getOrCreate()`` for every statement, so the
session made here (with its warehouse folder, metastore and settings) is the one dbt's models run in, and the
one the Python steps read from. The settings make Spark compute what DuckDB computes:

* ``spark.sql.session.timeZone=UTC`` and ``spark.sql.timestampType=TIMESTAMP_NTZ``: timestamps are naive, in
  the run's time zone (``CRM_TIMEZONE``) as on DuckDB, never shifted by the machine's zone;
* ``spark.sql.ansi.enabled=false``: what dbt-spark forces anyway (a failed cast is null, as ``try_cast``);
* a Hive metastore (embedded Derby) in ``<folder>/metastore`` and tables in ``<folder>/spark-warehouse``, so
  the tables a night writes are there the next night, as the DuckDB file's are;
* few shuffle partitions: a local session on a few cores, not a cluster's defaults of 200.

Needs ``pyspark`` (the ``spark`` extra: ``make test-spark`` installs it into ``.venv-spark``) and Java 17.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.legacy.createHiveTableByDefault": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


def local_session(folder: Path | str, cores: int | None = None, driver_memory: str = "2g",
                  shuffle_partitions: int | None = None, master: str | None = None):
    """The process's Spark session on this machine (``local[cores]``; or on ``master``, a cluster, this process its
    driver), its catalog and tables kept under ``folder``.

    A session that already exists in this process is returned as it is (Spark keeps one per process; its
    static settings cannot change once the JVM runs)."""
    from pyspark.sql import SparkSession

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if not master:  # the Python workers of a local session run in this venv (the steps' code and libraries)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    cores = cores or os.cpu_count() or 2
    builder = (SparkSession.builder.master(master or f"local[{cores}]").appName("crm-potential")
               .config("spark.sql.warehouse.dir", str(folder / "spark-warehouse"))
               .config("spark.driver.memory", driver_memory)
               .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={folder / 'metastore'}"))
    if shuffle_partitions or not master:  # on a cluster, its own default (spark-defaults.conf) unless given
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions or 2 * cores))
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def local_path(path: str | Path) -> Path:
    """A local folder given as a path or as Spark writes one (``file:/x``, ``file:///x``): the path."""
    text = str(path)
    for prefix in ("file://", "file:"):
        if text.startswith(prefix):
            return Path(text[len(prefix):])
    return Path(text)


def dbt_sources(manifest: Path) -> list[tuple[str, str]]:
    """(schema, table) of every dbt source the project reads (raw text, pseudonyms, the run's scores)."""
    import json

    return sorted((source["schema"], source["name"]) for source in json.loads(manifest.read_text())["sources"].values())


def copy_sources(session, warehouse: Path | str, manifest: Path, skip: tuple[str, ...] = (),
                 staging: Path | str | None = None) -> list[tuple[str, str]]:
    """The dbt sources of a DuckDB warehouse (but those in the schemas ``skip``) copied into the session's catalog
    (``copy_tables``): what a Spark build of the project reads. Returns the tables copied."""
    tables = [(schema, table) for schema, table in dbt_sources(manifest) if schema not in skip]
    return copy_tables(session, warehouse, tables, staging)


def copy_tables(session, warehouse: Path | str, tables: list[tuple[str, str]],
                staging: Path | str | None = None) -> list[tuple[str, str]]:
    """Tables (schema, name) of a DuckDB warehouse copied into the session's catalog as Parquet tables (replacing
    them). Returns the tables copied.

    DuckDB writes each table as Parquet files under ``staging`` (by default ``landing/`` in the session's
    warehouse folder) and Spark's executors read them and write the catalog table: nothing passes through the
    driver's memory (``createDataFrame`` of an Arrow table did, and at a million customers that copy took longer
    than the models it fed). ``staging`` must be a folder the executors can read: on a cluster, shared storage.
    The staged files are removed once their table is written."""
    import shutil

    import duckdb

    staging = local_path(session.conf.get("spark.sql.warehouse.dir")) / "landing" if staging is None else local_path(staging)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for schema, table in tables:
            files = staging / schema / table
            shutil.rmtree(files, ignore_errors=True)
            files.mkdir(parents=True)
            con.execute(f"copy (select * from \"{schema}\".\"{table}\") to '{files}' "
                        "(format parquet, per_thread_output true, overwrite_or_ignore true)")
            session.sql(f"create database if not exists {schema}")
            session.read.parquet(str(files)).write.mode("overwrite").format("parquet").saveAsTable(f"{schema}.{table}")
            shutil.rmtree(files)
    return tables


def build_project(target: str, target_path: Path, dbt_vars: dict) -> tuple[bool, list[dict]]:
    """``dbt build`` of the whole project on a profile target (``duckdb`` or ``spark``), in this process:
    (dbt's success, the run's results). Artifacts and logs go to ``target_path``."""
    import json

    from dbt.cli.main import dbtRunner

    from orchestration.dbt_project import DBT_PROJECT_DIR

    result = dbtRunner().invoke([
        "build", "--target", target, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(target_path), "--log-path", str(target_path / "logs"), "--vars", json.dumps(dbt_vars),
        "--quiet"])
    return bool(result.success), json.loads((target_path / "run_results.json").read_text())["results"]
