"""Read a serving file the way BI tools do, with whatever DuckDB and SQLAlchemy this interpreter has; print JSON.

Run inside a client virtualenv (tests/test_bi_clients.py builds them from the requirements files beside this
script)::

    <venv>/bin/python tests/bi_clients/probe.py data/serving.duckdb examples/queries.sql

Two paths, as the tools take them: the plain ``duckdb`` client opened read-only (Metabase's and DBeaver's
drivers, the CLI), and SQLAlchemy through duckdb-engine (Superset: it lists the tables, reflects each table's
columns to add a dataset, then runs SQL). Every step is tried on its own and an error is reported in its
place, so a test can say WHICH table, column listing or query a client cannot read. Standard library, duckdb
and SQLAlchemy only: the script must run on every client version the tests pin.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path


def split_queries(text: str) -> dict[str, str]:
    """The named queries of examples/queries.sql (``-- name: x`` starts one), as tests/test_analyst_outputs.py
    splits them, without the trailing semicolon."""
    blocks = re.split(r"^-- name: ", text, flags=re.M)[1:]
    return {block.split("\n", 1)[0].strip(): block.split("\n", 1)[1].strip().rstrip(";") for block in blocks}


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def plain_client(path: str, queries: dict[str, str]) -> dict:
    """Tables (rows, column comments, table comment) and query row counts through ``duckdb.connect(read_only)``."""
    import duckdb

    try:
        con = duckdb.connect(path, read_only=True)
    except Exception as exc:
        return {"open": _error(exc)}
    try:
        tables: dict = {}
        for table, comment in con.execute("select table_name, comment from duckdb_tables() where not internal "
                                          "and database_name = current_database() and schema_name = 'main' "
                                          "order by table_name").fetchall():
            try:
                columns = con.execute("select column_name, comment from duckdb_columns() where table_name = ? "
                                      "and database_name = current_database() and schema_name = 'main' "
                                      "order by column_index", [table]).fetchall()
                rows = con.execute(f'select count(*) from main."{table}"').fetchall()[0][0]
                tables[table] = {"rows": rows, "comment": comment, "columns": dict(columns)}
            except Exception as exc:
                tables[table] = _error(exc)
        results = {}
        for name, sql in queries.items():
            try:
                results[name] = {"rows": len(con.execute(sql).fetchall())}
            except Exception as exc:
                results[name] = _error(exc)
        return {"tables": tables, "queries": results}
    finally:
        con.close()


def sqlalchemy_client(path: str, queries: dict[str, str]) -> dict:
    """What Superset does: ``inspect().get_table_names()``, ``get_columns(t)`` for each, then SQL per table and
    per example query."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
        table_names = sa.inspect(engine).get_table_names()
    except Exception as exc:
        return {"open": _error(exc)}
    try:
        tables: dict = {}
        for table in table_names:
            entry: dict = {}
            try:  # a fresh inspector per table: reflection caches, and one failure must not hide the next table's
                entry["columns"] = {c["name"]: {"type": type(c["type"]).__name__, "comment": c.get("comment")}
                                    for c in sa.inspect(engine).get_columns(table)}
            except Exception as exc:
                entry["columns"] = _error(exc)
            try:
                with engine.connect() as con:
                    entry["rows"] = con.execute(sa.text(f'select count(*) from "{table}"')).scalar()
            except Exception as exc:
                entry["rows"] = _error(exc)
            tables[table] = entry
        results = {}
        for name, sql in queries.items():
            try:
                with engine.connect() as con:
                    results[name] = {"rows": len(con.exec_driver_sql(sql).fetchall())}  # raw, as SQL Lab sends it
            except Exception as exc:
                results[name] = _error(exc)
        return {"table_names": table_names, "tables": tables, "queries": results}
    finally:
        engine.dispose()


def probe(path: str, queries_file: str) -> dict:
    queries = split_queries(Path(queries_file).read_text())
    report = {"versions": {"python": sys.version.split()[0], **{p: _version(p) for p in
                                                                  ("duckdb", "duckdb-engine", "sqlalchemy")}}}
    # one after the other: DuckDB refuses a second connection to a file open with another configuration
    report["duckdb"] = plain_client(path, queries)
    report["sqlalchemy"] = sqlalchemy_client(path, queries)
    return report


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: probe.py SERVING_FILE QUERIES_SQL")
    print(json.dumps(probe(sys.argv[1], sys.argv[2]), indent=1, default=str))
