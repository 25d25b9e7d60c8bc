"""Loading the source: files against a PostgreSQL database, full and incremental (``make bench``, section ``source``).

A throw-away PostgreSQL server (the tests' ``tests/postgres_server.py``) is loaded once with the generated source
(``crm-potential generate --out postgresql://...``'s code path, typed tables). Then the ingest step alone (every
contract entity into ``raw``, exactly what the ingest assets call) runs in a subprocess whose process tree is
sampled for peak memory, with the pipeline's default DuckDB memory limit (3GB), in three ways: the same source as Parquet files (the baseline); a full read from the
database into a fresh warehouse; an incremental read after 1 % of the customers changed and 1 % more orders
arrived, from a copy of the warehouse the full read left (its cursors committed, as after a published night).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline_bench import _fmt_bytes, sampled  # noqa: E402

LOAD = r"""
import json, sys, time
import duckdb
from data_quality.contract import ENTITIES
from orchestration.source_database import DatabaseSource, commit_cursors, load_entity_from_database
from orchestration.source_files import load_entity
from orchestration.postgres_url import is_database_url
source, warehouse = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
read = {}
with duckdb.connect(warehouse, config={"memory_limit": "3GB"}) as con:  # the pipeline's default limit
    for entity in ENTITIES.values():
        if is_database_url(source):
            r = load_entity_from_database(con, entity, DatabaseSource.parse(source), run_id="bench")
        else:
            r = load_entity(con, entity, source)
        read[entity.name] = r.rows if r.rows_read is None else r.rows_read
    if is_database_url(source):
        commit_cursors(con, "bench")
print(json.dumps({"seconds": time.perf_counter() - t0, "read": read}))
"""


def _measured(args: list[str], env: dict | None = None) -> tuple[dict, float, int]:
    """Run ``python -c ...`` in a subprocess whose process tree is sampled: (its JSON line, wall s, peak bytes)."""
    done, started, finished, sampler = sampled([sys.executable, "-c", *args], cwd=ROOT, env=env,
                                               stderr=subprocess.PIPE)
    if done.returncode:
        raise RuntimeError(f"{args[1:]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), finished - started, sampler.window(started, finished)[1]


def _load(source: str, warehouse: Path, env: dict) -> dict:
    result, wall, peak = _measured([LOAD, source, str(warehouse)], env)
    return {**result, "wall": wall, "peak": peak}


READ = r"""
import json, sys, time
which, uri, sql = sys.argv[1:4]
t0 = time.perf_counter()
if which == "adbc":
    import adbc_driver_postgresql.dbapi as pg
    with pg.connect(uri) as con, con.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
else:
    import connectorx as cx
    table = cx.read_sql(uri, sql, return_type="arrow")
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": table.num_rows}))
"""


def _read_table(which: str, uri: str, sql: str) -> dict:
    """One reader library reading a whole table into an Arrow table, in a subprocess (peak memory sampled)."""
    result, wall, peak = _measured([READ, which, uri, sql])
    return {**result, "wall": wall, "peak": peak}


def _change(server, customers: int) -> None:
    """1 % of the customers change (a new city, updated now), 1 % more orders arrive (copies dated the next day)."""
    n = max(1, customers // 100)
    with server.connect() as con:
        con.execute("update crm.customers set city = 'Moved', updated_at = timestamp '2026-10-01 09:00:00' "
                    "where customer_id in (select customer_id from crm.customers order by customer_id limit %s)", [n])
        con.execute("insert into crm.orders select 'NEW-' || order_id, customer_id, timestamp '2026-10-01 12:00:00', "
                    "amount, status, currency, product_category, quantity, sales_channel "
                    "from crm.orders order by order_id limit %s", [n])
        con.execute("analyze")


def section(size: int, repeats: int, generated, work: Path) -> list[str]:
    from data_quality.contract import ENTITIES
    from orchestration.source_database import DatabaseSource, write_source
    from tests.postgres_server import PASSWORD, PostgresServer

    folder = generated(size)
    work.mkdir(parents=True, exist_ok=True)
    server = PostgresServer().start()
    env = {**os.environ, "CRM_SOURCE_PASSWORD": PASSWORD}
    try:
        url = server.url(query="schema=crm")
        print(f"source: loading {size:,} customers into PostgreSQL ...", flush=True)
        os.environ["CRM_SOURCE_PASSWORD"] = PASSWORD
        t0 = time.perf_counter()
        counts = write_source(folder, DatabaseSource.parse(url), ENTITIES.values())
        written = time.perf_counter() - t0
        with server.connect() as con:
            con.execute("analyze")
        results: dict[str, list[dict]] = {"files": [], "full": [], "incremental": []}
        for i in range(repeats):
            print(f"source: run {i + 1}/{repeats}: files, database full ...", flush=True)
            for mode, source in (("files", str(folder)), ("full", url)):
                target = work / f"{mode}.duckdb"
                target.unlink(missing_ok=True)
                results[mode].append(_load(source, target, env))
        readers: dict[str, list[dict]] = {"adbc": [], "connectorx": []}
        uri = server.url(password=True)
        for i in range(repeats):
            print(f"source: run {i + 1}/{repeats}: ADBC against connectorx on the orders table ...", flush=True)
            for which in readers:
                readers[which].append(_read_table(which, uri, "select * from crm.orders"))
        base = work / "full.duckdb"  # the last full read: cursors committed, as after a published night
        _change(server, size)
        for i in range(repeats):
            print(f"source: run {i + 1}/{repeats}: database incremental (1 % changed) ...", flush=True)
            target = work / "incremental.duckdb"
            shutil.copyfile(base, target)
            results["incremental"].append(_load(url, target, env))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    baseline = med([r["wall"] for r in results["files"]])
    lines = ["## Loading the source: files against PostgreSQL",
             "", f"{size:,} customers ({', '.join(f'{k} {v:,}' for k, v in counts.items())} rows), the ingest step alone "
             f"(every entity into `raw`) in a subprocess; medians of {repeats}. Writing the source into PostgreSQL "
             f"first (`generate --out postgresql://...`'s code path): {written:.1f} s. Throw-away PostgreSQL 15 on "
             "the same 2 cores (fsync off), loopback.", "",
             "| read | rows read | wall (s) | ratio to files | peak memory |", "|---|---|---|---|---|"]
    labels = {"files": "Parquet files (baseline)", "full": "PostgreSQL, full",
              "incremental": "PostgreSQL, incremental (1 % of customers changed, 1 % new orders)"}
    for mode, runs in results.items():
        wall = med([r["wall"] for r in runs])
        read = sum(runs[-1]["read"].values())
        lines.append(f"| {labels[mode]} | {read:,} | {wall:.1f} | {wall / baseline:.2f}x | "
                     f"{_fmt_bytes(med([r['peak'] for r in runs]))} |")
    orders = readers["adbc"][-1]["rows"]
    adbc_wall = med([r["wall"] for r in readers["adbc"]])
    lines += ["", f"The reader library, alone: the orders table ({orders:,} rows, 9 columns) into one Arrow table, "
              "in a subprocess (import and connect included); medians of {repeats}:".replace("{repeats}", str(repeats)),
              "", "| library | wall (s) | ratio to ADBC | peak memory |", "|---|---|---|---|"]
    for which, label in (("adbc", "ADBC PostgreSQL driver (used)"), ("connectorx", "connectorx")):
        wall = med([r["wall"] for r in readers[which]])
        lines.append(f"| {label} | {wall:.1f} | {wall / adbc_wall:.2f}x | {_fmt_bytes(med([r['peak'] for r in readers[which]]))} |")
    last = results["incremental"][-1]["read"]
    lines += ["", "Rows read by the incremental night per entity: " + ", ".join(f"{k} {v:,}" for k, v in last.items())
              + " (customers: every row of a changed customer; interactions and campaigns: the rows at the cursor).",
              ""]
    return lines
