"""Loading source files into raw: discovery, normalised names, text ids, clear contract errors."""

from __future__ import annotations

import duckdb
import pytest

from data_quality.contract import CAMPAIGNS, CUSTOMERS, ORDERS
from orchestration.source_files import SourceError, load_entity, normalise_column


@pytest.mark.parametrize("raw, clean", [(" Customer ID ", "customer_id"), ("ORDERED_AT", "ordered_at"), ("amount", "amount")])
def test_normalise_column(raw, clean):
    assert normalise_column(raw) == clean


def test_ids_stay_text_and_names_are_matched_case_insensitively(tmp_path):
    (tmp_path / "customers.csv").write_text(" Customer_ID ,CREATED_AT,Shoe Size\n00017,2024-01-02,44\n")
    con = duckdb.connect()
    result = load_entity(con, CUSTOMERS, tmp_path)
    assert result.rows == 1
    assert con.execute("select customer_id, created_at from raw.customers").fetchone() == ("00017", "2024-01-02")
    assert "shoe_size" in result.ignored_columns
    assert "email" in result.missing_optional_columns
    cols = [r[0] for r in con.execute("describe raw.customers").fetchall()]
    assert cols == list(CUSTOMERS.columns) + ["_source_file", "_source_row"]


def test_missing_required_file_names_entity_and_fix(tmp_path):
    with pytest.raises(SourceError, match=r"orders: required source file not found in .*orders\.csv, orders\.parquet"):
        load_entity(duckdb.connect(), ORDERS, tmp_path)


def test_missing_required_column_names_file_and_column(tmp_path):
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at\nA,1,2024-01-01\n")
    with pytest.raises(SourceError, match=r"orders \(.*orders\.csv\): required column\(s\) amount missing"):
        load_entity(duckdb.connect(), ORDERS, tmp_path)


def test_optional_entity_absent_gives_empty_table_with_contract_columns(tmp_path):
    con = duckdb.connect()
    result = load_entity(con, CAMPAIGNS, tmp_path)
    assert not result.present and result.rows == 0
    assert [r[0] for r in con.execute("describe raw.campaigns").fetchall()][:6] == list(CAMPAIGNS.columns)


def test_folder_of_parquet_files(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    con = duckdb.connect()
    for i in range(2):
        con.execute(
            f"copy (select 'O{i}' as order_id, 17 as customer_id, timestamp '2024-01-0{i + 1}' as ordered_at, "
            f"12.5 as amount) to '{folder}/part{i}.parquet' (format parquet)"
        )
    result = load_entity(con, ORDERS, tmp_path)
    assert result.rows == 2 and len(result.files) == 2
    assert con.execute("select typeof(customer_id) from raw.orders limit 1").fetchone()[0] == "VARCHAR"


def test_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "customers.csv").write_text("")
    with pytest.raises(SourceError, match=r"customers \(.*customers\.csv\): the file is empty"):
        load_entity(duckdb.connect(), CUSTOMERS, tmp_path)
