"""Find and load source files into the warehouse's ``raw`` schema with DuckDB's own readers.

Raw tables hold text only (identifiers like ``00017`` stay text; typing is dbt staging's job), every
contract column of the entity (missing optional ones as nulls), and two lineage columns:
``_source_file`` and ``_source_row`` (1, 2, ... over the loaded rows in file order, files in name order).
Unknown extra columns are left out.

A CSV line that is not a record (truncated, an extra field, bad quoting) is a row-level fault: it goes
to ``raw.<entity>_rejects`` with its file and line number (see ``REJECTS_COLUMNS``) and the quarantine
counts it toward the bad-row share; the file's other lines load (``orchestration/csv_records.py``).
File-level faults stop the run with a ``SourceError`` whose message names the file and the fix and never
quotes a value from the file (values may be e-mails, phones or names).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from data_quality.contract import Entity
from orchestration.csv_records import NotUtf8, Reject, read_csv_file, read_header
from orchestration.sql_quoting import quote_ident, quote_literal

EXTENSIONS = (".csv", ".parquet")
# raw.<entity>_rejects: one row per source line that could not be read as a record; always created.
REJECTS_COLUMNS = (("_source_file", "varchar"), ("_source_line", "bigint"), ("reject_reason", "varchar"),
                   ("raw_line", "varchar"))
_FILE_ROWS = "crm_file_rows"


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
    rejected_lines: int = 0
    rejects: list[str] = field(default_factory=list)  # the first few, as "file line N: reason"
    warnings: list[str] = field(default_factory=list)
    rows_read: int | None = None  # a database source: rows read this night (incremental: the changed keys' rows)
    mode: str = "files"  # files, or a database source's full / incremental read


def normalise_column(name: str) -> str:
    """``' Customer ID '`` -> ``customer_id``: trimmed, lower case, runs of non-alphanumerics as ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def rejects_table(entity: str) -> str:
    return f"raw.{entity}_rejects"


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


_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,40}")


def _looks_like_name(text: str) -> bool:
    return bool(_NAME_LIKE.fullmatch(text.strip())) and not re.search(r"\d{3}", text)


def _looks_like_value(text: str) -> bool:
    """An e-mail, a number, a date, a phone or a long id: what a header never holds."""
    text = text.strip()
    return "@" in text or bool(re.match(r"[0-9+(\-]", text)) or bool(re.search(r"\d{5}", text))


def describe_first_line(found: list[str]) -> str:
    """What a message may say about a file's first line: the fields that look like column names, never a
    value. A first line that looks like data (the header row is missing) is described by its width only."""
    if not any(f.strip() for f in found):
        return "The first line is empty: add a header row with the contract's column names."
    names = [f.strip() for f in found if _looks_like_name(f)]
    if any(_looks_like_value(f) for f in found) or len(names) * 2 < len(found):
        return (f"The first line looks like data, not a header ({len(found)} fields): add a header row with the "
                "contract's column names.")
    hidden = len(found) - len(names)
    return f"Found columns: {', '.join(names)}" + (f" (and {hidden} not shown)." if hidden else ".")


def _missing_columns_error(entity: Entity, path: Path, found: list[str], missing: list[str]) -> SourceError:
    fields, fix = found, " Add the column(s) to the file; names are matched case-insensitively after trimming."
    delim = next((d for d in (";", "\t", "|") if len(found) == 1 and d in found[0]), None)
    if delim:
        fields = found[0].split(delim)
        fix = (f" The header looks {'tab' if delim == chr(9) else repr(delim)}-delimited; the contract expects "
               "commas: export the file again with comma delimiters.")
    first_line = describe_first_line(fields)
    if "header row" in first_line and not delim:
        fix = ""
    return SourceError(f"{entity.name} ({path}): required column(s) {', '.join(missing)} missing. {first_line}{fix}")


def read_error(entity: Entity, names: str, exc: Exception) -> SourceError:
    # the first line of DuckDB's message names the problem; the lines after it may quote the data
    return SourceError(
        f"{entity.name}: cannot read {names}: {str(exc).splitlines()[0][:300]}. The contract expects UTF-8 "
        "CSV with a header row and comma delimiter, or Parquet."
    )


def _is_empty(path: Path) -> bool:
    """0 bytes, or nothing but a byte-order mark and line breaks."""
    size = path.stat().st_size
    return size == 0 or (size <= 8 and not path.read_bytes().replace(b"\xef\xbb\xbf", b"").strip())


def select_contract(entity: Entity, by_name: dict[str, str]) -> str:
    """Every contract column as text (``by_name``: contract name -> quoted source column), missing ones null."""
    return ", ".join(f"cast({by_name[c]} as varchar) as {c}" if c in by_name else f"cast(null as varchar) as {c}"
                     for c in entity.columns)


def create_tables(con: duckdb.DuckDBPyConnection, entity: Entity) -> None:
    con.execute("create schema if not exists raw")
    cols = ", ".join(f"{c} varchar" for c in entity.columns)
    con.execute(f"create or replace table raw.{entity.name} ({cols}, _source_file varchar, _source_row bigint)")
    con.execute(f"create or replace table {rejects_table(entity.name)} "
                f"({', '.join(f'{c} {t}' for c, t in REJECTS_COLUMNS)})")


def csv_headers(entity: Entity, files: list[Path]) -> dict[Path, tuple[int, dict[str, str]]]:
    """Every file's header (its width, and contract name -> positional column ``c<i>``), read before any row so
    that a missing column stops the run before anything loads."""
    headers = {}
    for path in files:
        try:
            found = read_header(path)
        except NotUtf8 as exc:
            raise _not_utf8(entity, exc) from exc
        by_name: dict[str, str] = {}
        for i, original in enumerate(found):
            by_name.setdefault(normalise_column(original), f"c{i}")
        missing = [c for c in entity.required_columns if c not in by_name]
        if missing:
            raise _missing_columns_error(entity, path, found, missing)
        headers[path] = (len(found), by_name)
    return headers


def read_csv_rows(con, entity: Entity, path: Path, width: int, by_name: dict[str, str]) -> tuple[str, list[Reject]]:
    """One CSV file's records into the temp table ``crm_file_rows``: (the query of its rows as the contract's
    text columns, ``_source_file`` and ``_row`` = 1, 2, ... in the file, the lines that are not records)."""
    try:
        rejects = read_csv_file(con, path, width, _FILE_ROWS)
    except NotUtf8 as exc:
        raise _not_utf8(entity, exc) from exc
    except duckdb.Error as exc:
        raise read_error(entity, str(path), exc) from exc
    return f"select {select_contract(entity, by_name)}, {quote_literal(path)} as _source_file, _row from {_FILE_ROWS}", rejects


def parquet_columns(con, entity: Entity, files: list[Path]) -> dict[str, str]:
    """Contract name -> quoted source column over the files' columns (by name, the first spelling wins); a
    missing required column stops the run before anything loads."""
    paths = "[" + ", ".join(quote_literal(p) for p in files) + "]"
    names = ", ".join(str(p) for p in files)
    try:
        found = con.sql(f"select * from read_parquet({paths}, union_by_name = true)").columns
    except duckdb.Error as exc:
        raise read_error(entity, names, exc) from exc
    by_name: dict[str, str] = {}
    for original in found:
        by_name.setdefault(normalise_column(original), quote_ident(original))
    missing = [c for c in entity.required_columns if c not in by_name]
    if missing:
        raise _missing_columns_error(entity, Path(names), found, missing)
    return by_name


def parquet_rows_sql(con, entity: Entity, path: Path, by_name: dict[str, str]) -> str:
    """The query of one Parquet file's rows as the contract's text columns, ``_source_file`` and ``_row`` = 1, 2,
    ... in the file; a column another file of the entity has and this one lacks is null."""
    reader = f"read_parquet({quote_literal(path)})"
    try:
        here = {quote_ident(c) for c in con.sql(f"select * from {reader}").columns}
    except duckdb.Error as exc:
        raise read_error(entity, str(path), exc) from exc
    mapped = {name: column for name, column in by_name.items() if column in here}
    return (f"select {select_contract(entity, mapped)}, {quote_literal(path)} as _source_file, "
            f"row_number() over () as _row from {reader}")


def _load_csv(con, entity: Entity, files: list[Path]) -> tuple[set[str], list[tuple[str, Reject]]]:
    headers = csv_headers(entity, files)
    rejects: list[tuple[str, Reject]] = []
    offset = 0
    for path, (width, by_name) in headers.items():
        sql, file_rejects = read_csv_rows(con, entity, path, width, by_name)
        con.execute(f"insert into raw.{entity.name} select * exclude (_row), {offset} + _row from ({sql})")
        offset += con.execute(f"select count(*) from {_FILE_ROWS}").fetchall()[0][0]
        con.execute(f"drop table {_FILE_ROWS}")
        rejects += [(str(path), r) for r in file_rejects]
    return {c for _, by_name in headers.values() for c in by_name}, rejects


def _not_utf8(entity: Entity, exc: NotUtf8) -> SourceError:
    return SourceError(
        f"{entity.name} ({exc.path}): line {exc.line} is not UTF-8 text; the whole file is probably in another "
        "encoding. Export it again as UTF-8 (the contract expects UTF-8 CSV with a header row and comma delimiter)."
    )


def _load_parquet(con, entity: Entity, files: list[Path]) -> set[str]:
    """File by file, rows numbered on across the files (as the CSV files, and as Spark's ingest reads them)."""
    by_name = parquet_columns(con, entity, files)
    offset = 0
    for path in files:
        sql = parquet_rows_sql(con, entity, path, by_name)
        try:
            con.execute(f"insert into raw.{entity.name} select * exclude (_row), {offset} + _row from ({sql})")
        except duckdb.Error as exc:
            raise read_error(entity, str(path), exc) from exc
        offset = con.execute(f"select count(*) from raw.{entity.name}").fetchall()[0][0]
    return set(by_name)


def _store_rejects(con, entity: str, rejects: list[tuple[str, Reject]]) -> None:
    if not rejects:
        return
    con.register("crm_rejects", pa.table({
        "_source_file": pa.array([f for f, _ in rejects], type=pa.string()),
        "_source_line": pa.array([r.line for _, r in rejects], type=pa.int64()),
        "reject_reason": pa.array([r.reason for _, r in rejects], type=pa.string()),
        "raw_line": pa.array([r.text for _, r in rejects], type=pa.string()),
    }))
    try:
        con.execute(f"insert into {rejects_table(entity)} select * from crm_rejects")
    finally:
        con.unregister("crm_rejects")


def missing_file(entity: Entity, source_dir: Path) -> SourceError:
    return SourceError(f"{entity.name}: required source file not found in {source_dir}. Expected {entity.name}.csv, "
                       f"{entity.name}.parquet or a folder {entity.name}/ of .csv or .parquet files.")


def source_files(entity: Entity, source_dir: Path) -> tuple[list[Path], list[Path], list[str]]:
    """(the entity's files to read, its empty files, warnings); ``SourceError`` for the faults found before
    reading: no source folder, a required entity without files, a required entity's empty file."""
    if not source_dir.is_dir():
        raise SourceError(f"Source folder {source_dir} does not exist. Pass --source DIR (or CRM_SOURCE_DIR).")
    files = find_files(source_dir, entity.name)
    if not files and entity.required:
        raise missing_file(entity, source_dir)
    empty = [p for p in files if _is_empty(p)]
    if empty and entity.required:
        raise SourceError(
            f"{entity.name} ({', '.join(map(str, empty))}): the file is empty (0 bytes). Export it again with a "
            f"header row ({', '.join(entity.required_columns)}, ...) and data."
        )
    warnings = [f"{entity.name} ({p}): the file is empty (0 bytes); read as no rows. If {entity.name} should "
                "not be empty, export it again." for p in empty]
    return [p for p in files if p not in empty], empty, warnings


def nothing_to_read(entity: Entity, empty: list[Path], warnings: list[str]) -> LoadResult:
    """The result of an optional entity without files (absent) or with empty files only."""
    return LoadResult(entity.name, [str(p) for p in empty], 0, list(entity.optional_columns), [],
                      present=bool(empty), warnings=warnings)


def loaded(entity: Entity, files: list[Path], rows: int, columns: set[str], rejected: int,
           first_rejects: list[tuple[str, Reject]], warnings: list[str]) -> LoadResult:
    """What a load read (``first_rejects``: the first few rejected lines, in file and line order), or the
    ``SourceError`` of a required entity that loaded no row."""
    names = ", ".join(str(p) for p in files)
    if rows == 0 and entity.required:
        if rejected:
            first = first_rejects[0][1]
            raise SourceError(
                f"{entity.name} ({names}): none of the {rejected:,} data line(s) is a CSV record with the "
                f"header's fields (line {first.line}: {first.reason}); they are in {rejects_table(entity.name)}. "
                "Export the file again as comma-delimited CSV, one record per line."
            )
        raise SourceError(
            f"{entity.name} ({names}): the file has a header but no rows. Export the {entity.name} again; "
            "the pipeline needs at least one."
        )
    return LoadResult(
        entity.name, [str(p) for p in files], rows,
        [c for c in entity.optional_columns if c not in columns], sorted(columns - set(entity.columns)),
        rejected_lines=rejected, warnings=warnings,
        rejects=[f"{Path(f).name} line {r.line}: {r.reason}" for f, r in first_rejects[:10]],
    )


def load_entity(con: duckdb.DuckDBPyConnection, entity: Entity, source_dir: Path) -> LoadResult:
    """Load one entity into ``raw.<entity>`` (and its malformed lines into ``raw.<entity>_rejects``); raise
    ``SourceError`` when the contract is broken at the file level."""
    source_dir = Path(source_dir)
    create_tables(con, entity)
    files, empty, warnings = source_files(entity, source_dir)
    if not files:
        return nothing_to_read(entity, empty, warnings)
    rejects: list[tuple[str, Reject]] = []
    if files[0].suffix.lower() == ".parquet":
        columns = _load_parquet(con, entity, files)
    else:
        columns, rejects = _load_csv(con, entity, files)
    _store_rejects(con, entity.name, rejects)
    rows = con.execute(f"select count(*) from raw.{entity.name}").fetchall()[0][0]
    return loaded(entity, files, rows, columns, len(rejects), rejects[:10], warnings)


def rejected_line_names(text: str | None, wanted: set[str]) -> bool:
    """Whether a rejected line holds one of ``wanted`` as one of its fields (read as CSV, or split at commas)."""
    fields = {f.strip().strip('"').strip() for f in next(csv.reader([text or ""]), [])}
    fields |= {f.strip() for f in (text or "").split(",")}
    return bool(fields & wanted)


def erase_from_rejects(con: duckdb.DuckDBPyConnection, entity: str, ids: list[str]) -> int:
    """Delete rejected lines that hold an erased customer id as one of their fields; returns lines deleted.

    A malformed line's fields cannot be mapped to columns reliably, so any field counts (a line whose
    order id equals an erased customer id goes too: erasure errs on the side of forgetting)."""
    wanted = {i.strip() for i in ids}
    if not wanted:
        return 0
    lines = con.execute(f"select _source_file, _source_line, raw_line from {rejects_table(entity)}").fetchall()
    doomed = [(source_file, line) for source_file, line, text in lines if rejected_line_names(text, wanted)]
    if doomed:
        con.executemany(f"delete from {rejects_table(entity)} where _source_file = ? and _source_line = ?", doomed)
    return len(doomed)
