"""Source files loaded straight into the Spark catalog (issue 18): one Spark task per file, each reading its file as
``orchestration/source_files.py`` does on DuckDB, so that the raw tables, the rejected lines and the messages are
the same on both engines.

The driver reads only what decides whether the night may start: the files' names, CSV headers and Parquet
footers (a missing column stops the run before any task starts). Each executor task then reads one file with an
in-memory DuckDB (``read_csv_rows`` / ``parquet_rows_sql``: the same reader, reject reasons and line accounting)
and emits Arrow batches: the file's rows (numbered 1, 2, ... in the file), its rejected lines, one row of counts,
or the file's error. Erased customers' rows and rejected lines are left out in the task, after the rows are
numbered (as DuckDB deletes them after loading). The tasks' output is written once as a landing table; the raw
tables are made from it in Spark, each file's rows numbered on after the files before it.

Parallelism is one task per file: a folder of files (``orders/part-*.csv``) loads on as many cores as it has
files, a single large file in one task. Files must be at a path every executor reads (shared storage on a
cluster, as for the Spark catalog).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from data_quality.contract import ENTITIES, Entity
from orchestration.csv_records import Reject
from orchestration.source_files import (
    REJECTS_COLUMNS, LoadResult, SourceError, csv_headers, loaded, nothing_to_read, parquet_columns, parquet_rows_sql,
    read_csv_rows, read_error, rejected_line_names, rejects_table, source_files,
)

_BATCH = 100_000


def _landing_schema(entity: Entity) -> pa.Schema:
    """One schema for everything a task emits; ``_kind`` says which: row, reject, erased_reject (an erased
    customer's rejected line: its number and reason only), file (counts) or error."""
    return pa.schema([("_kind", pa.string()), ("_file", pa.int64()),
                      *[(c, pa.string()) for c in entity.columns],
                      ("_source_file", pa.string()), ("_row", pa.int64()), ("_source_line", pa.int64()),
                      ("reject_reason", pa.string()), ("raw_line", pa.string()),
                      ("_count", pa.int64()), ("_rejected", pa.int64()), ("_erased", pa.int64())])


def _batch(schema: pa.Schema, kind: str, index: int, n: int, **columns) -> pa.RecordBatch:
    arrays = {"_kind": pa.array([kind] * n, pa.string()), "_file": pa.array([index] * n, pa.int64())}
    return pa.RecordBatch.from_arrays(
        [columns[f.name].cast(f.type) if f.name in columns else arrays.get(f.name, pa.nulls(n, f.type))
         for f in schema], schema=schema)


def read_file(entity_name: str, index: int, path: str, header: tuple, erased: list[str]):
    """One file's landing batches (runs in an executor). ``header``: ("csv", width, by_name) or ("parquet",
    by_name). A file-level fault is emitted as an ``error`` row with the message ``SourceError`` would carry."""
    import duckdb
    from pyspark import TaskContext

    task = TaskContext.get()  # DuckDB uses the task's cores (spark.task.cpus), not the executor's
    con = duckdb.connect(config={"threads": task.cpus()} if task is not None else {})
    try:
        yield from _read_file(con, ENTITIES[entity_name], index, path, header, erased)
    finally:
        con.close()


def _read_file(con, entity: Entity, index: int, path: str, header: tuple, erased: list[str]):
    import duckdb

    schema = _landing_schema(entity)
    try:
        if header[0] == "csv":
            sql, rejects = read_csv_rows(con, entity, Path(path), header[1], header[2])
        else:
            sql, rejects = parquet_rows_sql(con, entity, Path(path), header[1]), []
        con.execute(f"create temp table crm_file as {sql}")
    except SourceError as exc:
        yield _batch(schema, "error", index, 1, reject_reason=pa.array([str(exc)]))
        return
    except duckdb.Error as exc:  # a Parquet file's rows are read here
        yield _batch(schema, "error", index, 1, reject_reason=pa.array([str(read_error(entity, path, exc))]))
        return
    rows = con.execute("select count(*) from crm_file").fetchall()[0][0]
    where = ""
    if erased:
        con.register("crm_erased", pa.table({"value": pa.array(erased, pa.string())}))
        where = "where not coalesce(trim(customer_id) in (select value from crm_erased), false)"
    wanted = set(erased)
    kept, gone = [], []  # gone: erased customers' lines, their numbers and reasons only, for the load's report
    for r in rejects:
        (gone if wanted and rejected_line_names(r.text, wanted) else kept).append(r)
    reader = con.sql(f"select * from crm_file {where}").to_arrow_reader(_BATCH)
    left = 0
    for batch in reader:
        left += batch.num_rows
        yield _batch(schema, "row", index, batch.num_rows, **{c: batch.column(c) for c in batch.schema.names})
    yield _batch(schema, "file", index, 1, _count=pa.array([rows]), _rejected=pa.array([len(rejects)]),
                 _erased=pa.array([rows - left + len(rejects) - len(kept)]))
    if kept:
        yield _batch(schema, "reject", index, len(kept), _source_file=pa.array([path] * len(kept)),
                     _source_line=pa.array([r.line for r in kept]), reject_reason=pa.array([r.reason for r in kept]),
                     raw_line=pa.array([r.text for r in kept]))
    if gone:
        yield _batch(schema, "erased_reject", index, len(gone), _source_file=pa.array([path] * len(gone)),
                     _source_line=pa.array([r.line for r in gone]), reject_reason=pa.array([r.reason for r in gone]))


def _empty_tables(warehouse, entity: Entity) -> None:
    warehouse.write(f"raw.{entity.name}", pa.table({**{c: pa.array([], pa.string()) for c in entity.columns},
                                                    "_source_file": pa.array([], pa.string()),
                                                    "_source_row": pa.array([], pa.int64())}))
    kinds = {"varchar": pa.string(), "bigint": pa.int64()}
    warehouse.write(rejects_table(entity.name), pa.table({c: pa.array([], kinds[t]) for c, t in REJECTS_COLUMNS}))


def load_entity_on_spark(warehouse, entity: Entity, source_dir: Path, erased: list[str] = ()) -> tuple[LoadResult, int]:
    """Load one entity into ``raw.<entity>`` and ``raw.<entity>_rejects`` of the Spark catalog (``warehouse``: a
    ``SparkWarehouse``), leaving out the rows and rejected lines of the customers in ``erased``: (what
    ``load_entity`` returns on DuckDB, its counts taken before erasure as there; the rows and lines erased).
    ``SourceError`` as there."""
    source_dir = Path(source_dir)
    files, empty, warnings = source_files(entity, source_dir)
    if not files:
        _empty_tables(warehouse, entity)
        return nothing_to_read(entity, empty, warnings), 0
    if files[0].suffix.lower() == ".parquet":
        import duckdb

        with duckdb.connect() as con:
            by_name = parquet_columns(con, entity, files)
        headers = {p: ("parquet", by_name) for p in files}
    else:
        headers = {p: ("csv", width, by_name) for p, (width, by_name) in csv_headers(entity, files).items()}
    columns = {c for header in headers.values() for c in header[-1]}
    plan = [(str(p), header) for p, header in headers.items()]
    name, ids = entity.name, sorted({i.strip() for i in erased if i is not None})

    def read(batches):
        for batch in batches:
            for index in batch.column("id").to_pylist():
                yield from read_file(name, index, *plan[index], ids)

    from pyspark.sql.pandas.types import from_arrow_schema

    session = warehouse.session
    landing = f"raw._landing_{name}"
    warehouse.execute("create database if not exists raw")
    (session.range(0, len(plan), 1, len(plan)).mapInArrow(read, from_arrow_schema(_landing_schema(entity)))
     .write.mode("overwrite").format("parquet").saveAsTable(landing))
    try:
        errors = warehouse.rows(f"select reject_reason from {landing} where _kind = 'error' order by _file limit 1")
        if errors:
            raise SourceError(errors[0][0])
        warehouse.create_table_as(f"raw.{name}", f"""
            with offsets as (
                select _file, coalesce(sum(_count) over (order by _file rows between unbounded preceding and 1 preceding),
                                       0) as _offset
                from {landing} where _kind = 'file'
            )
            select {', '.join(f'l.{c}' for c in entity.columns)}, l._source_file, l._row + o._offset as _source_row
            from {landing} l join offsets o on l._file = o._file where l._kind = 'row'""")
        warehouse.create_table_as(rejects_table(name), f"select {', '.join(c for c, _ in REJECTS_COLUMNS)} "
                                                       f"from {landing} where _kind = 'reject'")
        rows, rejected, erased_n = warehouse.rows(
            f"select coalesce(sum(_count), 0), coalesce(sum(_rejected), 0), coalesce(sum(_erased), 0) "
            f"from {landing} where _kind = 'file'")[0]
        first = warehouse.rows(f"select _source_file, _source_line, reject_reason from {landing} "
                               "where _kind in ('reject', 'erased_reject') order by _file, _source_line limit 10")
    finally:
        warehouse.execute(f"drop table if exists {landing}")
    first_rejects = [(f, Reject(int(line), reason, "")) for f, line, reason in first]
    return loaded(entity, files, int(rows), columns, int(rejected), first_rejects, warnings), int(erased_n)
