"""The warehouse on Apache Spark (issue 18): ``orchestration/warehouse.py``'s interface over a Spark session.

Tables are the session catalog's (Parquet, as dbt-spark writes them with ``+file_format: parquet``). What Spark
does differently from DuckDB, and how it is met here:

* results come back as Arrow (``DataFrame.toArrow``, Spark 4); a stream is cut from one result, so it bounds the
  pieces the caller works on, not the driver's memory;
* Parquet tables have no ``delete``: ``replace_rows`` rewrites the (small) table from the rows it keeps plus the
  new ones, with the table's own schema;
* no transaction spans statements: ``swap`` drops the old table and renames the staged one, two catalog
  operations that readers may see between.
"""

from __future__ import annotations

from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc

from orchestration.warehouse import Warehouse, as_arrow, schema_of


def spark_ready(data) -> pa.Table:
    """A frame as Arrow types Spark takes: dictionaries (pandas categories) decoded, unsigned integers widened,
    nanosecond timestamps cut to Spark's microseconds."""
    table = as_arrow(data)
    fields = []
    for field in table.schema:
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_unsigned_integer(kind):
            kind = pa.int64()
        if pa.types.is_timestamp(kind) and kind.unit == "ns":
            kind = pa.timestamp("us", kind.tz)
        fields.append(field.with_type(kind))
    schema = pa.schema(fields)
    return table if schema == table.schema else table.cast(schema, safe=False)


class SparkWarehouse(Warehouse):
    engine = "spark"

    def __init__(self, session):
        self.session = session

    @property
    def rank_buckets(self):
        # a window without a partition is one task: as many buckets as a shuffle has partitions (Databricks
        # may say "auto": then the cores)
        setting = str(self.session.conf.get("spark.sql.shuffle.partitions", "")).strip()
        return max(int(setting) if setting.isdigit() else self.session.sparkContext.defaultParallelism, 1)

    def _sql(self, sql: str, params=()):
        return self.session.sql(sql, args=list(params)) if params else self.session.sql(sql)

    @contextmanager
    def _views(self, inputs):
        names = []
        try:
            for name, data in (inputs or {}).items():
                self.session.createDataFrame(spark_ready(data)).createOrReplaceTempView(name)
                names.append(name)
            yield
        finally:
            for name in names:
                self.session.catalog.dropTempView(name)

    def arrow(self, sql, params=(), inputs=None):
        with self._views(inputs):
            return self._sql(sql, params).toArrow()

    def stream(self, sql, params=(), rows=100_000):
        yield from self.arrow(sql, params).to_batches(max_chunksize=rows)

    def rows(self, sql, params=()):
        return [tuple(row) for row in self._sql(sql, params).collect()]

    def native(self, sql):
        return self._sql(sql)

    def execute(self, sql, params=(), inputs=None):
        with self._views(inputs):
            self._sql(sql, params).collect()

    def columns(self, table):
        return self.session.table(table).columns

    def tables(self, schema, *, views=False):
        if not self.session.catalog.databaseExists(schema):
            return []
        return sorted(t.name for t in self.session.catalog.listTables(schema)
                      if not t.isTemporary and (views or t.tableType != "VIEW"))

    def _create_schema(self, table: str) -> None:
        if schema_of(table):
            self.session.sql(f"create database if not exists {schema_of(table)}")

    def write(self, table, data, *, append=False):
        self._create_schema(table)
        frame = self.session.createDataFrame(spark_ready(data))
        if append:
            frame.select(*self.columns(table)).write.insertInto(table)
        else:
            frame.write.mode("overwrite").format("parquet").saveAsTable(table)

    def write_mapped(self, table, sql, params, fn, rows, on_batch=None, group=None):
        from pyspark.sql.pandas.types import from_arrow_schema

        # the output's columns and types, from fn on the first rows (here, on the driver)
        sample = fn(self.frame(f"select * from ({sql}) q limit 100", params))
        schema = from_arrow_schema(spark_ready(sample).schema)

        def mapped(batches):
            for batch in batches:
                yield fn(batch)

        self._create_schema(table)
        previous = self.session.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
        self.session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(rows))
        try:
            query = self._sql(sql, params)
            # applyInPandas passes the group's key too to a function of two arguments (a callable object's
            # `self` counts as one): a plain function of the frame hides the signature
            out = (query.mapInPandas(mapped, schema) if group is None
                   else query.groupBy(group).applyInPandas(lambda frame: fn(frame), schema))
            out.write.mode("overwrite").format("parquet").saveAsTable(table)
        finally:
            self.session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
        return int(self.scalar(f"select count(*) from {table}"))

    def create_table_as(self, table, sql, params=()):
        self._create_schema(table)
        self.session.sql(f"drop table if exists {table}")
        self._sql(f"create table {table} using parquet as {sql}", params)

    def replace_rows(self, table, data, where):
        schema = self.session.table(table).schema
        current = self.arrow(f"select * from {table}")
        drop = None
        for column, value in where.items():
            equal = pc.equal(current[column], pa.scalar(value, current.schema.field(column).type))
            drop = equal if drop is None else pc.and_(drop, equal)
        kept = current if drop is None else current.filter(pc.invert(pc.fill_null(drop, False)))
        added = spark_ready(data)
        added = pa.table({field.name: added[field.name].cast(field.type) if field.name in added.column_names
                          else pa.nulls(added.num_rows, field.type) for field in kept.schema})
        combined = pa.concat_tables([kept, added])
        self.session.createDataFrame(combined, schema=schema).write.mode("overwrite").format("parquet") \
            .saveAsTable(table)

    def swap(self, staged, table):
        self.session.sql(f"drop table if exists {table}")
        self.session.sql(f"alter table {staged} rename to {table}")
