"""Personal data: keyed pseudonyms for published tables, and erasure requests.

* Pseudonyms are HMAC-SHA256 of the customer id with a secret key (not a plain hash, which anyone can
  recompute from a known id). The key comes from ``CRM_PSEUDONYM_KEY`` or, failing that, a key file
  created on the first run (``.pseudonym.key`` beside the warehouse, mode 0600).
* Erasure requests (customer ids, from ``--erase FILE`` or ``erasure_requests.csv`` in the source
  folder) accumulate in ``ops.erasure_requests``; every run removes those customers from the raw tables
  (so from everything built on them) and from the kept serving versions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import duckdb
import pyarrow as pa

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


def erase_from(con: duckdb.DuckDBPyConnection, table: str, ids: list[str], column: str = "customer_id") -> int:
    """Delete the customers' rows from ``table`` (matching ``trim(<column>)``); returns rows deleted."""
    return rows_of(con, table, ids, column, delete=True)


def scrub_file(path: Path, ids: list[str], keys: list[str]) -> int:
    """Remove the customers from every table of a DuckDB file (kept versions): rows whose customer_id is
    one of ``ids`` or whose customer_key is one of their pseudonyms ``keys``."""
    if not ids:
        return 0
    removed = 0
    with duckdb.connect(str(path)) as con:
        for column, values in (("customer_id", ids), ("customer_key", keys)):
            tables = con.execute("select table_schema || '.' || table_name from information_schema.columns "
                                 "where column_name = ?", [column]).fetchall()
            for (table,) in tables:
                removed += erase_from(con, table, values, column)
    return removed
