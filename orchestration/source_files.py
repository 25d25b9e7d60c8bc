"""Find and load source files into the warehouse's ``raw`` schema with DuckDB's own readers.

Raw tables hold text only (identifiers like ``00017`` stay text; typing is dbt staging's job), every
contract column of the entity (missing optional ones as nulls), and two lineage columns:
``_source_file`` and ``_source_row``. Unknown extra columns are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from data_quality.contract import Entity

EXTENSIONS = (".csv", ".parquet")


class SourceError(Exception):
    """The source breaks the contract in a way that must stop the run; the message says how to fix it."""


@dataclass
class LoadResult:
    entity: str
    files: list[str]
    rows: int
    missing_optional_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    present: bool = True


def normalise_column(name: str) -> str:
    """``' Customer ID '`` -> ``customer_id``: trimmed, lower case, runs of non-alphanumerics as ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def find_files(source_dir: Path, entity: str) -> list[Path]:
    """``DIR/<entity>.csv|.parquet`` or ``DIR/<entity>/*.csv|*.parquet``; empty list when absent."""
    for ext in EXTENSIONS:
        candidate = source_dir / f"{entity}{ext}"
        if candidate.is_file():
            return [candidate]
    folder = source_dir / entity
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        kinds = {p.suffix.lower() for p in files}
        if len(kinds) > 1:
            raise SourceError(
                f"{entity}: the folder {folder} mixes CSV and Parquet files; keep one format per entity."
            )
        return files
    return []


def _reader_sql(files: list[Path]) -> str:
    paths = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"
    if files[0].suffix.lower() == ".parquet":
        return f"read_parquet({paths}, filename = true, union_by_name = true)"
    return (
        f"read_csv({paths}, header = true, all_varchar = true, delim = ',', quote = '\"', "
        "filename = true, union_by_name = true, auto_detect = true)"
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def load_entity(con: duckdb.DuckDBPyConnection, entity: Entity, source_dir: Path) -> LoadResult:
    """Load one entity into ``raw.<entity>``; raise ``SourceError`` when the contract is broken."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise SourceError(f"Source folder {source_dir} does not exist. Pass --source DIR (or CRM_SOURCE_DIR).")
    con.execute("create schema if not exists raw")
    table = f"raw.{entity.name}"
    files = find_files(source_dir, entity.name)
    if not files:
        if entity.required:
            raise SourceError(
                f"{entity.name}: required source file not found in {source_dir}. Expected "
                f"{entity.name}.csv, {entity.name}.parquet or a folder {entity.name}/ of .csv or .parquet files."
            )
        cols = ", ".join(f"cast(null as varchar) as {c}" for c in entity.columns)
        con.execute(
            f"create or replace table {table} as select {cols}, cast(null as varchar) as _source_file, "
            "cast(null as bigint) as _source_row limit 0"
        )
        return LoadResult(entity.name, [], 0, list(entity.optional_columns), [], present=False)

    names = ", ".join(str(p) for p in files)
    empty = [str(p) for p in files if p.stat().st_size == 0]
    if empty:
        raise SourceError(
            f"{entity.name} ({', '.join(empty)}): the file is empty (0 bytes). Export it again with a header row "
            f"({', '.join(entity.required_columns)}, ...) and data."
        )
    try:
        rel = con.sql(f"select * from {_reader_sql(files)}")
        found = [c for c in rel.columns if c != "filename"]
    except duckdb.Error as exc:
        raise SourceError(
            f"{entity.name}: cannot read {names}: {str(exc).splitlines()[0]}. The contract expects UTF-8 "
            "CSV with a header row and comma delimiter, or Parquet."
        ) from exc

    by_name: dict[str, str] = {}
    for original in found:
        by_name.setdefault(normalise_column(original), original)
    missing_required = [c for c in entity.required_columns if c not in by_name]
    if missing_required:
        hint = ""
        if len(found) == 1 and any(d in found[0] for d in (";", "\t", "|")):
            delim = next(d for d in (";", "\t", "|") if d in found[0])
            hint = f" The header looks {'tab' if delim == chr(9) else repr(delim)}-delimited; the contract expects commas."
        raise SourceError(
            f"{entity.name} ({names}): required column(s) {', '.join(missing_required)} missing. "
            f"Found columns: {', '.join(found) or '(none)'}. Add the column(s) to the file; names are "
            f"matched case-insensitively after trimming.{hint}"
        )
    select = []
    for col in entity.columns:
        if col in by_name:
            select.append(f"cast({_quote(by_name[col])} as varchar) as {col}")
        else:
            select.append(f"cast(null as varchar) as {col}")
    try:
        con.execute(
            f"create or replace table {table} as "
            f"select {', '.join(select)}, filename as _source_file, "
            f"row_number() over () as _source_row from {_reader_sql(files)}"
        )
    except duckdb.Error as exc:
        raise SourceError(
            f"{entity.name}: cannot read {names}: {str(exc).splitlines()[0]}. The contract expects UTF-8 "
            "CSV with a header row and comma delimiter, or Parquet."
        ) from exc
    rows = con.execute(f"select count(*) from {table}").fetchall()[0][0]
    if rows == 0 and entity.required:
        raise SourceError(
            f"{entity.name} ({names}): the file has a header but no rows. Export the {entity.name} again; "
            "the pipeline needs at least one."
        )
    ignored = sorted(set(by_name) - set(entity.columns))
    missing_optional = [c for c in entity.optional_columns if c not in by_name]
    return LoadResult(entity.name, [str(p) for p in files], rows, missing_optional, ignored)
