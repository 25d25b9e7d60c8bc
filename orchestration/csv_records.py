"""Read one CSV file into text rows and the lines that are not CSV records, with their line numbers.

A malformed line (truncated, an extra field, bad quoting) is a fault of that row, not of the file: it is
set aside with its line number and the rest of the file loads. DuckDB's reader does this fast
(``store_rejects``) with an explicit dialect and no sniffing, so a bad line cannot change how the other
lines are read. But a quote that is never closed makes any CSV parser swallow the lines after it (DuckDB
loses them without a trace in some cases), so every file is accounted for: physical lines = header +
loaded rows + line breaks inside loaded values + rejected lines + blank lines. When that does not add up,
or a rejected record spans several lines, the file is read again line by line in Python, where each
physical line is one record and a broken line cannot take its neighbours with it.

Bytes that are not UTF-8 are a fault of the whole file (its encoding), not of a row: quarantining only the
lines with accented names would drop a biased sample, so ``NotUtf8`` stops the file with the line number.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from orchestration.sql_quoting import quote_literal

MALFORMED = "malformed CSV line"
REASONS = {
    "MISSING COLUMNS": f"{MALFORMED}: too few fields (a truncated line?)",
    "TOO MANY COLUMNS": f"{MALFORMED}: too many fields (an unquoted comma?)",
    "UNQUOTED VALUE": f"{MALFORMED}: bad quoting (a quote not closed, or text after a closing quote)",
    "LINE SIZE OVER MAXIMUM": f"{MALFORMED}: longer than 2 MB",
}
UNREADABLE = f"{MALFORMED}: not a CSV record"
MAX_LINE_TEXT = 2000  # a rejected line is kept up to this many characters
_CHUNK = 1 << 22
_REJECTS = ("crm_reject_errors", "crm_reject_scans")


class NotUtf8(Exception):
    def __init__(self, path: Path, line: int):
        super().__init__(f"{path}: line {line} is not UTF-8")
        self.path, self.line = path, line


@dataclass(frozen=True)
class Reject:
    line: int  # physical line in the file, the header being line 1
    reason: str
    text: str


def column_names(width: int) -> list[str]:
    """The positional names the file's columns get in the rows table: ``c0``, ``c1``, ..."""
    return [f"c{i}" for i in range(width)]


def read_header(path: Path, limit: int = 1 << 20) -> list[str]:
    """The first line's fields (a UTF-8 byte-order mark dropped); ``NotUtf8`` when it is not UTF-8."""
    with open(path, "rb") as fh:
        first = fh.readline(limit)
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise NotUtf8(path, 1) from None
    return next(csv.reader([text]), [])


def read_csv_file(con: duckdb.DuckDBPyConnection, path: Path, width: int, table: str) -> list[Reject]:
    """Create temp table ``table`` (``c0``.. as text, ``_row`` = 1, 2, ... in file order) from the file's
    records; return the lines that were not loaded."""
    rejects = _read_with_duckdb(con, path, width, table)
    multi_line = any("\n" in r.text for r in rejects)
    rejects = _at_record_start(path, rejects)
    lines, blanks, at = _scan(path, [r.line for r in rejects])
    rejects = [Reject(at[r.line], r.reason, r.text) for r in rejects]
    bad_bytes = [r.line for r in rejects if r.reason == "INVALID ENCODING"]
    if bad_bytes:
        raise NotUtf8(path, min(bad_bytes))
    loaded = con.execute(f"select count(*) from {table}").fetchall()[0][0]
    accounted = 1 + loaded + len(rejects) + blanks
    if not multi_line and lines != accounted:
        accounted += _line_breaks_in_values(con, table, width)
    if multi_line or lines != accounted:
        return _read_line_by_line(con, path, width, table)
    return sorted(rejects, key=lambda r: r.line)


def _read_with_duckdb(con, path: Path, width: int, table: str) -> list[Reject]:
    """Rejects carry DuckDB's byte position in ``line`` until ``_scan`` turns it into a line number."""
    cols = column_names(width)
    for name in _REJECTS:
        con.execute(f"drop table if exists {name}")
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in cols) + "}"
    con.execute(
        f"create or replace temp table {table} as select {', '.join(cols)}, row_number() over () as _row "
        f"from read_csv({quote_literal(path)}, header = true, auto_detect = false, delim = ',', quote = '\"', "
        f"escape = '\"', columns = {columns}, store_rejects = true, rejects_table = '{_REJECTS[0]}', "
        f"rejects_scan = '{_REJECTS[1]}')"
    )
    rows = con.execute(
        f"select line_byte_position, min(cast(error_type as varchar)), any_value(csv_line) from {_REJECTS[0]} "
        "group by line_byte_position order by line_byte_position"
    ).fetchall()
    for name in _REJECTS:
        con.execute(f"drop table if exists {name}")
    return [Reject(int(pos), REASONS.get(kind, kind if kind == "INVALID ENCODING" else UNREADABLE),
                   (text or "").strip("\r\n")[:MAX_LINE_TEXT]) for pos, kind, text in rows]


def _at_record_start(path: Path, rejects: list[Reject]) -> list[Reject]:
    """DuckDB's position is about one byte before the line it reports, and before any blank lines that
    precede it; find the rejected text itself near there, so that the line number is the record's own."""
    found = []
    with open(path, "rb") as fh:
        for r in rejects:
            start = max(r.line - 1, 0)
            prefix = r.text.encode("utf-8", "replace")[:64]
            fh.seek(max(start - 16, 0))
            window = fh.read(16 + 64 + 2 * len(prefix))
            hit = window.find(prefix) if prefix else -1
            found.append(Reject(max(start - 16, 0) + hit if hit >= 0 else start, r.reason, r.text))
    return found


def _scan(path: Path, positions: list[int]) -> tuple[int, int, dict[int, int]]:
    """One pass over the bytes: physical lines, blank lines (which CSV readers skip) and the line number
    of each byte position."""
    wanted = sorted(set(positions))
    at: dict[int, int] = {}
    newlines = blanks = offset = 0
    last, i = b"", 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            while i < len(wanted) and wanted[i] < offset + len(chunk):
                at[wanted[i]] = newlines + chunk[: wanted[i] - offset].count(b"\n") + 1
                i += 1
            joined = last + chunk  # a blank line is a line break followed by [\r]\n, maybe across chunks
            blanks += len(re.findall(rb"\n(?=\r?\n)", joined)) - len(re.findall(rb"\n(?=\r?\n)", last))
            newlines += chunk.count(b"\n")
            offset += len(chunk)
            last = chunk[-2:]
            ends_with_newline = chunk.endswith(b"\n")
    for pos in wanted[i:]:
        at[pos] = newlines + 1
    lines = newlines + (0 if offset == 0 or ends_with_newline else 1)
    return lines, blanks, at


def _line_breaks_in_values(con, table: str, width: int) -> int:
    parts = " + ".join(f"coalesce(length({c}) - length(replace({c}, chr(10), '')), 0)" for c in column_names(width))
    return int(con.execute(f"select coalesce(sum({parts}), 0) from {table}").fetchall()[0][0])


def _read_line_by_line(con, path: Path, width: int, table: str) -> list[Reject]:
    """Each physical line is one record: parsed alone, it is loaded when it has the header's fields."""
    values: list[list[str | None]] = [[] for _ in range(width)]
    rejects: list[Reject] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1:
                continue
            raw = raw.rstrip(b"\r\n")
            if not raw:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise NotUtf8(path, number) from None
            try:
                fields = next(csv.reader([text], strict=True))
            except csv.Error:
                rejects.append(Reject(number, REASONS["UNQUOTED VALUE"], text[:MAX_LINE_TEXT]))
                continue
            if len(fields) == width + 1 and fields[-1] == "":  # a trailing comma, as DuckDB accepts it
                fields.pop()
            if len(fields) != width:
                kind = "MISSING COLUMNS" if len(fields) < width else "TOO MANY COLUMNS"
                rejects.append(Reject(number, REASONS[kind], text[:MAX_LINE_TEXT]))
                continue
            for column, value in zip(values, fields):
                column.append(value if value != "" else None)
    cols = column_names(width)
    rows = pa.table({**{c: pa.array(v, type=pa.string()) for c, v in zip(cols, values)},
                     "_row": pa.array(range(1, len(values[0]) + 1) if width else [], type=pa.int64())})
    con.register("crm_line_rows", rows)
    try:
        con.execute(f"create or replace temp table {table} as select * from crm_line_rows")
    finally:
        con.unregister("crm_line_rows")
    return rejects
