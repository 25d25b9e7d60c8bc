"""The warehouse as the Python steps see it: one small interface, a DuckDB implementation here and a Spark one in
``orchestration/warehouse_spark.py`` (issue 18).

Steps hand it portable SQL (what both engines run: standard functions, ``string`` rather than ``varchar``, ``?``
parameters) and frames. What differs between the engines lives behind it: how a result comes back as Arrow, how a
frame becomes a table, how one run's rows of a log table are replaced, how a staged table takes a table's place.
It is not an ORM: a step still writes its own queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import duckdb
import pandas as pd
import pyarrow as pa

Data = pd.DataFrame | pa.Table


class Warehouse:
    """What every engine provides; ``frame``, ``scalar`` and ``batches`` are the same everywhere."""

    engine: str
    # buckets a rank over every row is cut into (ml/ranks.py): 1 where the engine runs such a window in parallel
    rank_buckets: int = 1

    def arrow(self, sql: str, params: Sequence = (), inputs: Mapping[str, pa.Table] | None = None) -> pa.Table:
        """The query's result. ``inputs``: tables the query reads by name, visible to this query only."""
        raise NotImplementedError

    def stream(self, sql: str, params: Sequence = (), rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        """The query's result in record batches of at most about ``rows`` rows (the engine may hand out smaller
        ones), never all of it at once where the engine can avoid it."""
        raise NotImplementedError

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def native(self, sql: str):
        """The query as the engine's own data frame, for a library that runs on the engine itself (Great
        Expectations validates a Spark DataFrame with its Spark engine, where the data is): pandas on DuckDB."""
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence = (), inputs: Mapping[str, pa.Table] | None = None) -> None:
        """A statement (DDL, or DML the engine supports on its tables); ``inputs`` as for ``arrow``."""
        raise NotImplementedError

    def columns(self, table: str) -> list[str]:
        raise NotImplementedError

    def tables(self, schema: str, *, views: bool = False) -> list[str]:
        """The names of the tables in ``schema`` (and its views, with ``views``), sorted; none when it does not
        exist."""
        raise NotImplementedError

    def write(self, table: str, data: Data, *, append: bool = False) -> None:
        """``data`` as ``table`` (created or replaced, its schema created when missing), or appended to it."""
        raise NotImplementedError

    def write_mapped(self, table: str, sql: str, params: Sequence, fn: Callable[[pd.DataFrame], pd.DataFrame],
                     rows: int, on_batch: Callable[[int], None] | None = None, group: str | None = None) -> int:
        """``fn`` applied to the query's rows, about ``rows`` at a time, written as ``table``; returns the rows
        written. Where the data is: DuckDB streams the batches through this process (``on_batch(rows done)``
        after each); Spark runs ``fn`` on its executors (``mapInPandas``), so no row passes through the driver.
        ``fn`` must depend on each row alone and carry everything it needs (it is pickled to the executors).
        With ``group`` (a column of the query), a row's result may depend on the rows that share its value:
        ``fn`` gets whole groups, one or several (Spark: ``groupBy(group).applyInPandas``, one group a call),
        their rows in no particular order."""
        raise NotImplementedError

    def create_table_as(self, table: str, sql: str, params: Sequence = ()) -> None:
        """The query's rows as ``table`` (created or replaced, its schema created when missing), where the data is."""
        raise NotImplementedError

    def replace_rows(self, table: str, data: Data, where: Mapping[str, object]) -> None:
        """Delete the rows of ``table`` whose columns equal ``where``'s values, then add ``data``'s rows (matched to
        the table's columns by name; a column ``data`` lacks is null). For small log tables (a run's rows)."""
        raise NotImplementedError

    def swap(self, staged: str, table: str) -> None:
        """``staged`` (a table in the same schema) becomes ``table``; the old ``table`` is dropped."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the same on every engine
    def frame(self, sql: str, params: Sequence = (), inputs: Mapping[str, pa.Table] | None = None) -> pd.DataFrame:
        return self.arrow(sql, params, inputs).to_pandas()

    def scalar(self, sql: str, params: Sequence = ()):
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def batches(self, sql: str, params: Sequence, size: int, group: str | None = None) -> Iterator[pd.DataFrame]:
        """The query's rows, in order, as frames of about ``size`` rows (the engine's batches regrouped). With
        ``group`` (a column), ordered by it and cut only between groups: a frame holds whole groups."""
        if group is not None:
            sql = f"select * from ({sql}) q order by {group}"
        pending, rows = [], 0
        for batch in self.stream(sql, params, size):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= size:
                table = pa.Table.from_batches(pending)
                cut = rows if group is None else _last_group_start(table.column(group).to_pandas())
                if cut:
                    yield table.slice(0, cut).to_pandas()
                    pending, rows = table.slice(cut).to_batches(), rows - cut
        if rows:
            yield pa.Table.from_batches(pending).to_pandas()


def _last_group_start(keys: pd.Series) -> int:
    """Where the run of the last key begins (keys sorted): 0 when the frame is one group."""
    other = (keys != keys.iloc[-1]).to_numpy().nonzero()[0]
    return int(other[-1]) + 1 if len(other) else 0


def as_arrow(data: Data) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)


def schema_of(table: str) -> str | None:
    """``schema`` of ``schema.table`` (None for a bare name)."""
    parts = table.split(".")
    return parts[-2] if len(parts) > 1 else None


class DuckDBWarehouse(Warehouse):
    """The embedded default: a DuckDB connection (``PipelineSettings.warehouse``), or an in-memory one.

    Every read runs on a cursor of its own (its own query state), so a stream may stay open while other queries
    run. ``con`` is the connection itself, for the steps that still speak DuckDB directly."""

    engine = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    @contextmanager
    def _cursor(self, inputs: Mapping[str, pa.Table] | None = None):
        cursor = self.con.cursor()
        try:
            for name, data in (inputs or {}).items():
                cursor.register(name, data)
            yield cursor
        finally:
            cursor.close()

    def arrow(self, sql, params=(), inputs=None):
        with self._cursor(inputs) as cursor:
            return cursor.sql(sql, params=list(params) or None).to_arrow_table()

    def stream(self, sql, params=(), rows=100_000):
        with self._cursor() as cursor:
            yield from cursor.sql(sql, params=list(params) or None).to_arrow_reader(rows)

    def rows(self, sql, params=()):
        return self.con.execute(sql, list(params) or None).fetchall()

    def native(self, sql):
        return self.frame(sql)

    def execute(self, sql, params=(), inputs=None):
        if inputs:
            with self._cursor(inputs) as cursor:
                cursor.execute(sql, list(params) or None)
            return
        self.con.execute(sql, list(params) or None)

    def columns(self, table):
        return self.con.sql(f"select * from {table} limit 0").columns

    def tables(self, schema, *, views=False):
        found = ("select table_name from duckdb_tables() where database_name = current_database() and "
                 "schema_name = $schema")
        if views:
            found += (" union select view_name from duckdb_views() where database_name = current_database() and "
                      "schema_name = $schema and not internal")
        return [r[0] for r in self.con.execute(f"select * from ({found}) names order by 1",
                                               {"schema": schema}).fetchall()]

    def _create_schema(self, table: str) -> None:
        if schema_of(table):
            self.con.execute(f"create schema if not exists {schema_of(table)}")

    def write(self, table, data, *, append=False):
        self._create_schema(table)
        self.con.register("_write_data", data)  # as given: DuckDB reads pandas' types as it always has
        try:
            self.con.execute(f"insert into {table} by name select * from _write_data" if append
                             else f"create or replace table {table} as select * from _write_data")
        finally:
            self.con.unregister("_write_data")

    def write_mapped(self, table, sql, params, fn, rows, on_batch=None, group=None):
        done = 0
        for number, batch in enumerate(self.batches(sql, params, rows, group)):
            out = fn(batch)
            self.write(table, out, append=number > 0)
            done += len(out)
            if on_batch is not None:
                on_batch(done)
        if not done:  # no rows: the table, empty, with the columns fn gives
            self.write(table, fn(self.arrow(f"select * from ({sql}) q limit 0", params).to_pandas()))
        return done

    def create_table_as(self, table, sql, params=()):
        self._create_schema(table)
        self.con.execute(f"create or replace table {table} as {sql}", list(params) or None)

    @contextmanager
    def _transaction(self):
        self.con.execute("begin")
        try:
            yield
            self.con.execute("commit")
        except BaseException:
            self.con.execute("rollback")
            raise

    def replace_rows(self, table, data, where):
        condition = " and ".join(f"{column} = ?" for column in where)
        with self._transaction():
            self.con.execute(f"delete from {table} where {condition}", list(where.values()))
            if len(data):
                self.write(table, data, append=True)

    def swap(self, staged, table):
        with self._transaction():
            self.con.execute(f"drop table if exists {table}")
            self.con.execute(f"alter table {staged} rename to {table.split('.')[-1]}")

    @classmethod
    def in_memory(cls) -> "DuckDBWarehouse":
        return cls(duckdb.connect())
