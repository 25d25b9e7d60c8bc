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
                  shuffle_partitions: int | None = None):
    """The process's Spark session on this machine (``local[cores]``), its catalog and tables kept under ``folder``.

    A session that already exists in this process is returned as it is (Spark keeps one per process; its
    static settings cannot change once the JVM runs)."""
    from pyspark.sql import SparkSession

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cores = cores or os.cpu_count() or 2
    builder = (SparkSession.builder.master(f"local[{cores}]").appName("crm-potential")
               .config("spark.sql.warehouse.dir", str(folder / "spark-warehouse"))
               .config("spark.driver.memory", driver_memory)
               .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={folder / 'metastore'}")
               .config("spark.sql.shuffle.partitions", str(shuffle_partitions or 2 * cores)))
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
