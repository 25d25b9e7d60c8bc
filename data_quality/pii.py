"""Personal data: keyed pseudonyms for published tables, and erasure requests.

* Pseudonyms are HMAC-SHA256 of the customer id with a secret key (not a plain hash, which anyone can
  recompute from a known id). The key comes from ``CRM_PSEUDONYM_KEY`` or, failing that, a key file
  created on the first run (``.pseudonym.key`` beside the warehouse, mode 0600).
* Erasure requests (customer ids, from ``--erase FILE`` or ``erasure_requests.csv`` in the source
  folder) accumulate in ``ops.erasure_requests``; every run removes those customers from the raw tables
  (so from everything built on them), from the kept serving versions, and from the kept run reports, logs and
  Great Expectations results (``scrub_reports``).
* Texts that are stored, published or logged (failure messages, the run log) pass ``scrub_text``: e-mail
  addresses, phone-like numbers, erased ids and rows of values quoted in a message are masked.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

ERASURE_SOURCE_FILE = "erasure_requests.csv"
PERSONAL_TABLES_WITH_CUSTOMER_ID = ("customers", "orders", "interactions")


def pseudonym_key(key_file: Path) -> bytes:
    """The HMAC key: ``CRM_PSEUDONYM_KEY``, else the key file (created with a random key if missing)."""
    if os.environ.get("CRM_PSEUDONYM_KEY"):
        return os.environ["CRM_PSEUDONYM_KEY"].encode()
    key_file = Path(key_file)
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return key_file.read_text().strip().encode()


def pseudonymise(ids, key: bytes) -> list[str]:
    return [hmac.new(key, str(i).encode(), hashlib.sha256).hexdigest()[:32] for i in ids]


def read_id_file(path: Path) -> list[str]:
    """Customer ids, one per line (a ``customer_id`` header line is allowed)."""
    ids = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        value = line.split(",")[0].strip().strip('"')
        if value and value.lower() != "customer_id":
            ids.append(value)
    return ids


def record_requests(con: duckdb.DuckDBPyConnection, ids: list[str], origin: str) -> int:
    con.execute("create schema if not exists ops")
    con.execute("create table if not exists ops.erasure_requests (customer_id varchar, origin varchar, "
                "recorded_at timestamp default current_timestamp)")
    new = [i for i in dict.fromkeys(ids)
           if not con.execute("select 1 from ops.erasure_requests where customer_id = ?", [i]).fetchall()]
    if new:
        con.executemany("insert into ops.erasure_requests (customer_id, origin) values (?, ?)", [[i, origin] for i in new])
    return len(new)


def erased_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    exists = con.execute("select count(*) from information_schema.tables where table_schema = 'ops' "
                         "and table_name = 'erasure_requests'").fetchall()[0][0]
    return [r[0] for r in con.execute("select customer_id from ops.erasure_requests").fetchall()] if exists else []


def rows_of(con: duckdb.DuckDBPyConnection, table: str, ids: list[str], column: str = "customer_id",
            delete: bool = False) -> int:
    """Rows of ``table`` whose ``trim(<column>)`` is one of ``ids``: counted, or deleted when ``delete``."""
    if not ids:
        return 0
    con.register("erase_ids", pa.table({"value": pa.array(ids, type=pa.string())}))
    try:
        where = f"where trim({column}) in (select value from erase_ids)"
        n = con.execute(f"select count(*) from {table} {where}").fetchall()[0][0]
        if delete and n:
            con.execute(f"delete from {table} {where}")
    finally:
        con.unregister("erase_ids")
    return n


def count_rows_of(warehouse, table: str, ids: list[str], column: str = "customer_id") -> int:
    """``rows_of``'s count in the warehouse of either engine (``orchestration/warehouse.py``)."""
    if not ids:
        return 0
    found = warehouse.arrow(f"select count(*) as n from {table} where trim({column}) in (select value from erase_ids)",
                            inputs={"erase_ids": pa.table({"value": pa.array(ids, type=pa.string())})})
    return int(found.column("n")[0].as_py())


def erase_from(con: duckdb.DuckDBPyConnection, table: str, ids: list[str], column: str = "customer_id") -> int:
    """Delete the customers' rows from ``table`` (matching ``trim(<column>)``); returns rows deleted."""
    return rows_of(con, table, ids, column, delete=True)


PROFILE_KEY_LABEL = b"crm-potential customer_profile key\n"


def profile_pseudonymise(ids, key: bytes) -> list[str]:
    """customer_profile's own pseudonyms (``profile_key``), keyed with a key derived from the pipeline's key
    (a hash of it, never stored or published): the profile cannot be joined to customer_scores' customer_key,
    and through it to customer_id, without the key."""
    return pseudonymise(ids, hashlib.sha256(PROFILE_KEY_LABEL + key).digest())


def pseudonym_rows(ids: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """``ops.customer_pseudonyms``' rows for a frame of ``customer_id``: both keyed pseudonyms of each id."""
    values = ids["customer_id"].tolist()
    return ids[["customer_id"]].assign(customer_key=pseudonymise(values, key),
                                       profile_key=profile_pseudonymise(values, key))


# --- no personal data in messages, logs and kept files ----------------------------------------------------
#
# Messages should never quote values from the source (they name files, columns, rules and counts). This scrub is
# the second line of defence for every text that is stored or published (``pipeline_runs.message``, the run log,
# the CLI's failure lines): e-mail addresses, phone-like digit runs, the ids it is given (erased customers) and
# comma-separated lists that look like a row of data rather than a list of column names are masked.

EMAIL_MASK, NUMBER_MASK, ID_MASK = "<e-mail>", "<number>", "<id>"
_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]++@[\w-]+(?:\.[\w-]+)+")
# a run of digits and phone punctuation holding 7+ digits, not glued to a word, a path or a uuid
_PHONE = re.compile(r"(?<![\w./:#-])(?:\+|\(\+?)?\d[\d ()./-]{5,}\d(?![\w/-])")
_DATE_TOKEN = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}|\d{1,2}")
# a token as it appears in text: word characters joined by single - . @ + (ids, keys, e-mails)
_TOKEN = re.compile(r"[A-Za-z0-9_]+(?:[-.@+][A-Za-z0-9_]+)*")
_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")
# a list item: anything up to the next comma, without a sentence boundary (". ", "; ", ": ") or newline; a list
# starts where a line or a sentence part starts (possessive items and fixed starts keep the scan linear)
_ITEM = r"(?:(?![.;:](?:\s|$))[^,\n])++"
_LIST = re.compile(rf"(?:^|(?<=[.;:]\s)){_ITEM}(?:, {_ITEM}){{2,}}", re.M)
_NAME_LIKE = re.compile(r"[A-Z][a-z'’-]+(?: [A-Z][a-z'’-]+)+")
_NUMBER_LIKE = re.compile(r"[-+]?\d[\d.,:/ -]*")


def looks_like_column_name(text: str) -> bool:
    """A header cell that may be quoted in a message: an identifier (``customer_id``, ``Amount EUR``), not a
    value (numbers, dates, e-mails, phones, "Firstname Lastname")."""
    text = text.strip()
    return (0 < len(text) <= 64 and bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?: [A-Za-z0-9_]+){0,4}", text))
            and not _NAME_LIKE.fullmatch(text))


def column_names_for_message(names: list[str], limit: int = 12) -> str:
    """The names to quote in a message: those that look like column names (at most ``limit``), and a count of
    the others ("3 cells that look like values: is the header row missing?")."""
    names = [str(n) for n in names]
    shown = [n.strip() for n in names if looks_like_column_name(n)]
    values = len(names) - len(shown)
    text = ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")
    if values:
        text += (("; " if shown else "") + f"{values} cell(s) that look like values, not shown "
                 "(is the header row missing?)")
    return text


def _mask_phone(match: re.Match) -> str:
    text = match.group()
    if sum(c.isdigit() for c in text) < 7 or all(_DATE_TOKEN.fullmatch(t) for t in text.split()):
        return text  # a date, a timestamp's date and hour, a short number
    return NUMBER_MASK


def _id_pattern(ids) -> set[str]:
    return {str(i).strip() for i in ids if str(i).strip()}


def _mask_lists(text: str) -> str:
    """Comma-separated lists that read as a row of data (an item was masked, or a person's name among mostly
    numbers, dates and names) become ``<N values not shown>``; lists of column names, dates and our own phrases
    stay."""

    def one(match: re.Match) -> str:
        items = match.group().split(", ")
        masked = any(m in item for item in items for m in (EMAIL_MASK, NUMBER_MASK, ID_MASK))
        names = sum(bool(_NAME_LIKE.fullmatch(i.strip())) for i in items)
        value_like = names + sum(bool(_NUMBER_LIKE.fullmatch(i.strip())) for i in items)
        if not masked and not (names and value_like * 2 >= len(items)):
            return match.group()
        lead = match.group()[: len(match.group()) - len(match.group().lstrip())]
        return f"{lead}<{len(items)} values not shown>"

    return _LIST.sub(one, text)


def scrub_text(text: str | None, ids=()) -> str:
    """``text`` without personal data: e-mail addresses, phone-like digit runs (7+ digits; dates and times
    stay), the given ``ids`` (erased customers, their pseudonyms) as whole tokens, and comma-separated lists
    that look like a row of values. For anything stored, published or logged."""
    if not text:
        return text or ""
    text = _EMAIL.sub(EMAIL_MASK, str(text))
    needles = _id_pattern(ids)
    if needles:
        text = _TOKEN.sub(lambda m: ID_MASK if m.group() in needles else m.group(), text)
    text = _PHONE.sub(_mask_phone, text)
    return _mask_lists(text)


def scrub_run_messages(con: duckdb.DuckDBPyConnection, ids=()) -> int:
    """Scrub the stored messages of ``ops.pipeline_runs`` (failures recorded before an erasure, or before
    this scrub existed); they are published with the next good run. Returns rows changed."""
    exists = con.execute("select count(*) from information_schema.tables where table_schema = 'ops' "
                         "and table_name = 'pipeline_runs'").fetchall()[0][0]
    if not exists:
        return 0
    changed = 0
    for run_id, message in con.execute("select run_id, message from ops.pipeline_runs "
                                       "where message is not null and message <> ''").fetchall():
        clean = scrub_text(message, ids)
        if clean != message:
            con.execute("update ops.pipeline_runs set message = ? where run_id = ?", [clean, run_id])
            changed += 1
    return changed


ERASED_MARK = "[erased]"
SCRUBBED_SUFFIXES = (".html", ".htm", ".json", ".log", ".txt", ".md", ".csv")
_ROW = re.compile(r"<tr\b.*?</tr>", re.S | re.I)


def _scrub_kept_text(text: str, needles: set[str], html_rows: bool) -> tuple[str, int]:
    """(text without the needles, table rows removed). Needles are matched as whole tokens (one pass over the
    text, whatever their number); the rare id that is not a token (a space, a slash) as a substring, HTML-escaped
    too. Inline images (``data:`` URIs) are left untouched."""
    removed = 0
    odd = sorted({v for n in needles if not _TOKEN.fullmatch(n) for v in (n, html.escape(n))}, key=len, reverse=True)
    odd_re = re.compile("|".join(map(re.escape, odd))) if odd else None

    def hit(part: str) -> bool:
        return any(m.group() in needles for m in _TOKEN.finditer(part)) or bool(odd_re and odd_re.search(part))

    def mention(part: str) -> str:
        part = _TOKEN.sub(lambda m: ERASED_MARK if m.group() in needles else m.group(), part)
        return odd_re.sub(ERASED_MARK, part) if odd_re else part

    def row(match: re.Match) -> str:
        nonlocal removed
        if hit(_DATA_URI.sub("", match.group())):
            removed += 1
            return ""
        return match.group()

    out, last = [], 0
    for uri in [*_DATA_URI.finditer(text), None]:
        end = uri.start() if uri else len(text)
        part = text[last:end]
        if html_rows:
            part = _ROW.sub(row, part)
        out.append(mention(part))
        if uri:
            out.append(uri.group())
            last = uri.end()
    return "".join(out), removed


def scrub_reports(folder: Path, ids, marker: str = ".erasure-applied", exclude=frozenset()) -> dict[str, int]:
    """Remove erased customers from the files kept under ``folder`` (run reports, quality pages, logs, Great
    Expectations results): HTML table rows naming one of ``ids`` are dropped, other mentions become
    ``[erased]``. Each changed file is written anew and renamed over the old one (a reader holding the old one
    keeps it whole). PNG figures are left: they are aggregates (distributions, ROC, calibration, deciles) and
    name no customer.

    ``ids`` only grow, so a marker file records how many were applied; with the same count nothing is read
    again. ``exclude``: file names to leave alone (the current run's log, still being written).
    Returns ``{"files": changed files, "rows": table rows removed}``."""
    folder = Path(folder)
    needles = _id_pattern(ids)
    done = {"files": 0, "rows": 0}
    mark = folder / marker
    applied = len(needles)
    if not needles or not folder.is_dir():
        return done
    if mark.exists() and mark.read_text().strip() == str(applied):
        return done
    for path in sorted(folder.rglob("*")):
        if (path.is_symlink() or not path.is_file() or path.suffix.lower() not in SCRUBBED_SUFFIXES
                or path.name in exclude):
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        clean, rows = _scrub_kept_text(text, needles, html_rows=path.suffix.lower() in (".html", ".htm"))
        if clean == text:
            continue
        tmp = path.with_name(f".{path.name}.scrub.tmp")
        tmp.write_text(clean, encoding="utf-8", errors="surrogateescape")
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
        done["files"] += 1
        done["rows"] += rows
    mark.write_text(str(applied))
    return done
