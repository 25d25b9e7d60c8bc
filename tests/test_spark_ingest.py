"""Source files land straight in the Spark catalog as they land in the DuckDB file (issue 18).

A source folder with the faults ingest must survive (malformed lines, an unclosed quote that sends a file to the
line-by-line reader, a byte-order mark, CRLF, blank lines and a value with a line break, headers in another order
and case, Parquet files with different columns, an empty optional file, an absent one, erased customers in rows
and in rejected lines) is loaded by ``load_entity`` on DuckDB (then erased, as the ingest asset does) and by
``load_entity_on_spark`` (one Spark task per file): the raw tables, the rejects tables and what the loads report
must be equal. The file-level faults stop both with the same message.

Runs under ``make test-spark`` (the ``spark`` marker).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil

import duckdb
import pytest

from data_quality.contract import CAMPAIGNS, CUSTOMERS, ENTITIES, INTERACTIONS, ORDERS
from data_quality.pii import erase_from
from orchestration.source_files import SourceError, erase_from_rejects, load_entity, rejects_table
from tests.conftest import require

pytestmark = pytest.mark.spark

ERASED = ["00018", "C9"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    require(shutil.which("java") is not None, "Java (a JDK or JRE 17)", "run `make test-spark`")
    require(importlib.util.find_spec("pyspark") is not None, "pyspark (the spark extra)", "run `make test-spark`")
    from orchestration.spark_session import local_session
    from orchestration.warehouse_spark import SparkWarehouse

    session = local_session(tmp_path_factory.mktemp("spark_ingest"), cores=2, shuffle_partitions=2)
    yield SparkWarehouse(session)
    session.stop()


def _faulty_source(folder):
    orders = folder / "orders"
    orders.mkdir(parents=True)
    (orders / "part-1.csv").write_text(
        "order_id,customer_id,ordered_at,amount\n"
        "A1,00017,2024-01-01,10.00\n"
        "A2,00017,2024-01-0\n"                    # truncated
        "A3,00018,2024-01-02,12.50,oops\n"        # an extra field, an erased customer
        "A4,00019,2024-01-03,\"7\"x\n"            # text after a closing quote
        "A5,00018,2024-01-04,\"1,5\"\n"           # erased
        "A6,00017,2024-01-05,3\n")
    lines = ["Amount, Customer ID ,ORDER_ID,Ordered At,channel"] + [f"{i}.5,{i:05d},B{i},2024-02-01,web" for i in range(40)]
    lines[7] = '6.5,00006,B6,"2024-02-01,web'   # a quote never closed: the file is read line by line
    (orders / "part-2.csv").write_text("\n".join(lines) + "\n")
    (orders / "part-3.csv").write_bytes(
        b"\xef\xbb\xbforder_id,customer_id,ordered_at,amount,status\r\n"
        b"C1,00020,2024-03-01,\"1\r\n0\",completed\r\n"
        b"\r\n"
        b"C2,00021,2024-03-02\r\n"
        b"C3,00018,2024-03-03,4,completed")
    customers = folder / "customers"
    customers.mkdir()
    with duckdb.connect() as con:
        con.execute(f"copy (select i as customer_id, date '2024-01-01' + cast(i as integer) as created_at, 'n' || i as full_name "
                    f"from range(15, 25) t(i)) to '{customers}/a.parquet' (format parquet)")
        con.execute(f"copy (select 'C' || i as \"Customer_ID\", '2024-02-01' as created_at, 'x@y.z' as email, "
                    f"i as extra from range(5, 12) t(i)) to '{customers}/b.parquet' (format parquet)")
    (folder / "interactions.csv").write_bytes(b"")


def _load_on_duckdb(source, entity):
    con = duckdb.connect()
    result = load_entity(con, entity, source)
    erased = 0
    if "customer_id" in entity.columns:
        erased = erase_from(con, f"raw.{entity.name}", ERASED) + erase_from_rejects(con, entity.name, ERASED)
    return con, result, erased


def _table(reader, table):
    return sorted(reader(f"select * from {table}"), key=repr)


def test_files_land_in_spark_as_they_land_in_duckdb(warehouse, tmp_path):
    from orchestration.source_files_spark import load_entity_on_spark

    _faulty_source(tmp_path)
    for entity in (ORDERS, CUSTOMERS, INTERACTIONS, CAMPAIGNS):
        con, ours, erased = _load_on_duckdb(tmp_path, entity)
        theirs, erased_on_spark = load_entity_on_spark(warehouse, entity, tmp_path, ERASED)
        assert dataclasses.asdict(theirs) == dataclasses.asdict(ours), entity.name
        assert erased_on_spark == erased, entity.name
        for table in (f"raw.{entity.name}", rejects_table(entity.name)):
            assert warehouse.columns(table) == [d[0] for d in con.sql(f"select * from {table}").description], table
            assert _table(warehouse.rows, table) == _table(lambda q: con.execute(q).fetchall(), table), table
        con.close()
    # the faults were there to be found: the line-by-line file, rejects, erased rows and lines, Parquet's union
    assert warehouse.scalar("select count(*) from raw.orders_rejects") == 4
    assert warehouse.scalar("select max(_source_row) from raw.orders") == 3 + 39 + 2 - 1  # the last row: erased
    assert warehouse.scalar("select count(*) from raw.orders where customer_id = '00018'") == 0
    assert warehouse.scalar("select count(*) from raw.customers where email is not null") == 7
    assert warehouse.tables("raw") == sorted(
        t for name in ENTITIES for t in (name, f"{name}_rejects"))  # no landing table left


@pytest.mark.parametrize("fault", ["not_utf8", "missing_column", "every_line_malformed"])
def test_a_file_level_fault_stops_spark_ingest_with_duckdbs_message(warehouse, tmp_path, fault):
    from orchestration.source_files_spark import load_entity_on_spark

    folder = tmp_path / "orders"
    folder.mkdir()
    (folder / "a.csv").write_text("order_id,customer_id,ordered_at,amount\nA1,00017,2024-01-01,10.00\n")
    if fault == "not_utf8":
        (folder / "b.csv").write_bytes(b"order_id,customer_id,ordered_at,amount\nB1,0001\xe9,2024-01-01,1\n")
    elif fault == "missing_column":
        (folder / "b.csv").write_text("order_id,customer_id,amount\nB1,00017,1\n")
    else:
        (folder / "a.csv").write_text("order_id,customer_id,ordered_at,amount\nA1,00017\nA2,1,2,3,4\n")
    with pytest.raises(SourceError) as on_duckdb:
        load_entity(duckdb.connect(), ORDERS, tmp_path)
    with pytest.raises(SourceError) as on_spark:
        load_entity_on_spark(warehouse, ORDERS, tmp_path)
    assert str(on_spark.value) == str(on_duckdb.value)
    assert "landing" not in " ".join(warehouse.tables("raw"))


def test_a_first_night_that_fails_is_in_the_run_log_the_first_release_will_publish(warehouse):
    from orchestration import run_log
    from orchestration.publication_spark import RELEASES, RUN_LOG, record_run

    # nothing published yet (the JVM's metastore outlives an earlier module's session: start from none)
    warehouse.execute(f"drop database if exists {RELEASES} cascade")
    record_run(warehouse, run_log.RunRecord(run_id="first-night", as_of_date=None, started_at=None, status="failed",
                                            published=False, source_dir="test", message="the orders are missing"))
    assert warehouse.rows(f"select run_id, status, message from {RUN_LOG}") == [
        ("first-night", "failed", "the orders are missing")]


def test_a_source_database_lands_through_the_duckdb_file_into_spark(warehouse, postgres, small_sample, tmp_path,
                                                                    monkeypatch):
    """A database source is read through one connection into the DuckDB file (its mirror and cursors live there)
    and the night's raw tables are copied into the catalog: the same rows in both."""
    import dagster as dg

    from orchestration.assets.ingest import ingest_assets
    from orchestration.settings import PipelineSettings
    from orchestration.source_database import DatabaseSource, write_source
    from tests.postgres_server import PASSWORD

    monkeypatch.setenv("CRM_SOURCE_PASSWORD", PASSWORD)
    url = postgres.url(query="schema=crm")
    write_source(small_sample, DatabaseSource.parse(url), [ORDERS])
    settings = PipelineSettings(source_dir=url, warehouse_path=str(tmp_path / "warehouse.duckdb"), engine="spark",
                                spark_dir=str(warehouse.session.conf.get("spark.sql.warehouse.dir")).rsplit("/", 1)[0])
    orders = [a for a in ingest_assets if dg.AssetKey(["raw", "orders"]) in a.keys]
    erasure = [a for a in ingest_assets if dg.AssetKey(["raw", "erasure_requests"]) in a.keys]
    assert dg.materialize([*erasure, *orders], resources={"settings": settings}).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        for table in ("raw.orders", "raw.orders_rejects"):
            assert _table(warehouse.rows, table) == _table(lambda q: con.execute(q).fetchall(), table), table
    assert warehouse.scalar("select count(*) from raw.orders") > 100
