"""Row-level faults stay row-level: malformed CSV lines are set aside with their file and line number while
the rest of the file loads; file-level faults stop with a message that quotes no value from the file."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from data_quality.contract import CAMPAIGNS, CUSTOMERS, INTERACTIONS, ORDERS
from orchestration import csv_records
from orchestration.assets.ingest import ingest_assets
from orchestration.csv_records import MALFORMED
from orchestration.settings import PipelineSettings
from orchestration.source_files import REJECTS_COLUMNS, SourceError, erase_from_rejects, load_entity

ORDERS_HEADER = "order_id,customer_id,ordered_at,amount"


def _rejects(con, entity="orders"):
    return con.execute(f"select _source_file, _source_line, reject_reason, raw_line from raw.{entity}_rejects "
                       "order by _source_file, _source_line").fetchall()


def test_malformed_lines_are_set_aside_with_file_and_line_and_the_rest_loads(tmp_path):
    tmp_path = tmp_path / "it's a fïle folder"  # paths reach SQL quoted
    tmp_path.mkdir()
    (tmp_path / "orders.csv").write_text(
        f"{ORDERS_HEADER}\n"
        "A1,00017,2024-01-01,10.00\n"
        "A2,00017,2024-01-0\n"                    # line 3: truncated
        "A3,00018,2024-01-02,12.50,oops\n"        # line 4: an extra field
        "A4,00018,2024-01-03,\"7\"x\n"            # line 5: text after a closing quote
        "A5,00019,2024-01-04,\"1,5\"\n"           # a quoted comma is fine
        "A6,00017,2024-01-05,3\n"
    )
    con = duckdb.connect()
    result = load_entity(con, ORDERS, tmp_path)
    assert (result.rows, result.rejected_lines) == (3, 3)
    rows = con.execute("select order_id, customer_id, amount, _source_row from raw.orders order by _source_row")
    rows = rows.fetchall()
    assert rows == [("A1", "00017", "10.00", 1), ("A5", "00019", "1,5", 2), ("A6", "00017", "3", 3)]
    file = str(tmp_path / "orders.csv")
    assert [(f, n, r.split(": ")[1].split(" (")[0]) for f, n, r, _ in _rejects(con)] == [
        (file, 3, "too few fields"), (file, 4, "too many fields"), (file, 5, "bad quoting")]
    assert all(r.startswith(MALFORMED) for _, _, r, _ in _rejects(con))
    assert _rejects(con)[1][3] == "A3,00018,2024-01-02,12.50,oops"
    assert result.rejects[0] == "orders.csv line 3: malformed CSV line: too few fields (a truncated line?)"


def test_an_unclosed_quote_loses_only_its_own_line(tmp_path):
    # DuckDB's reader swallows every line after an unclosed quote; the file is then read line by line
    lines = [ORDERS_HEADER] + [f"O{i},{i:05d},2024-01-02,{i}.50" for i in range(3000)]
    lines[11] = 'O10,00010,"2024-01-02,10.50'
    (tmp_path / "orders.csv").write_text("\n".join(lines) + "\n")
    con = duckdb.connect()
    result = load_entity(con, ORDERS, tmp_path)
    assert (result.rows, result.rejected_lines) == (2999, 1)
    assert [(n, r.split(" (")[0]) for _, n, r, _ in _rejects(con)] == [(12, f"{MALFORMED}: bad quoting")]
    last = con.execute("select order_id, customer_id, _source_row from raw.orders order by _source_row desc limit 1")
    last = last.fetchone()
    assert last == ("O2999", "02999", 2999)


def test_line_numbers_are_physical_lines_and_blank_lines_and_crlf_are_not_faults(tmp_path):
    (tmp_path / "customers.csv").write_bytes(
        b"\xef\xbb\xbfcustomer_id,created_at,full_name\r\n"
        b"00017,2024-01-02,\"two\r\nlines\"\r\n"     # lines 2-3: a value with a line break
        b"\r\n"                                      # line 4: blank
        b"00018,2024-01-03\r\n"                      # line 5: truncated
        b"00019,2024-01-04,x\r\n"
        b"00020,2024-01-05,y"                        # no final line break
    )
    con = duckdb.connect()
    result = load_entity(con, CUSTOMERS, tmp_path)
    assert (result.rows, result.rejected_lines) == (3, 1)
    assert [n for _, n, _, _ in _rejects(con, "customers")] == [5]
    assert con.execute("select customer_id, full_name from raw.customers order by _source_row").fetchall() == [
        ("00017", "two\r\nlines"), ("00019", "x"), ("00020", "y")]


def test_line_counting_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_records, "_CHUNK", 3)
    path = tmp_path / "f.csv"
    path.write_bytes(b"a,b\n1,2\n\n\r\n3,4\n\n5\n6,7")
    lines, blanks, at = csv_records._scan(path, [0, 9, 16, 20])
    assert (lines, blanks) == (8, 3)
    assert at == {0: 1, 9: 4, 16: 7, 20: 8}


def test_files_of_a_folder_number_rows_in_file_order_and_each_maps_its_own_header(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    (folder / "a.csv").write_text(f"{ORDERS_HEADER}\nA1,00001,2024-01-01,1\nA2,00002,2024-01-01\n")
    (folder / "b.csv").write_text("Amount,Ordered_At,ORDER_ID,customer_id\n2,2024-01-02,B1,00003\nbroken\n"
                                  "3,2024-01-03,B2,00004\n")
    con = duckdb.connect()
    result = load_entity(con, ORDERS, tmp_path)
    assert result.rows == 3 and len(result.files) == 2
    assert con.execute("select order_id, amount, _source_row from raw.orders order by _source_row").fetchall() == [
        ("A1", "1", 1), ("B1", "2", 2), ("B2", "3", 3)]
    assert [(f.rsplit("/", 1)[1], n) for f, n, _, _ in _rejects(con)] == [("a.csv", 3), ("b.csv", 3)]


def test_the_rejects_table_always_exists_with_its_contract(tmp_path):
    con = duckdb.connect()
    load_entity(con, CAMPAIGNS, tmp_path)  # absent optional entity
    (tmp_path / "orders.csv").write_text(f"{ORDERS_HEADER}\nA1,00017,2024-01-01,10.00\n")
    load_entity(con, ORDERS, tmp_path)     # a clean file
    for entity in ("campaigns", "orders"):
        described = con.execute(f"describe raw.{entity}_rejects").fetchall()
        assert [(r[0], r[1].lower()) for r in described] == list(REJECTS_COLUMNS)
        assert _rejects(con, entity) == []


def test_every_line_malformed_in_a_required_file_stops_with_the_first_line_number(tmp_path):
    (tmp_path / "orders.csv").write_text(f"{ORDERS_HEADER}\nA1;00017;2024-01-01;10.00\nA2;00018;2024-01-01;9\n")
    with pytest.raises(SourceError, match=r"orders \(.*orders\.csv\): none of the 2 data line\(s\) .*\(line 2: "
                                          r"malformed CSV line: too few fields"):
        load_entity(duckdb.connect(), ORDERS, tmp_path)


def test_bytes_that_are_not_utf8_stop_the_file_with_the_line_number_and_no_value(tmp_path):
    (tmp_path / "customers.csv").write_bytes(
        b"customer_id,created_at,full_name\n00017,2024-01-02,Anna\n00018,2024-01-02,J\xf6rg M\xfcller\n")
    with pytest.raises(SourceError) as err:
        load_entity(duckdb.connect(), CUSTOMERS, tmp_path)
    assert "customers.csv): line 3 is not UTF-8 text" in str(err.value) and "Export it again as UTF-8" in str(err.value)
    assert "rg M" not in str(err.value) and "Anna" not in str(err.value)


def test_a_headerless_customers_file_names_no_value_from_the_file(tmp_path):
    values = ["00000122", "2024-02-11 01:03:34", "2026-05-31 19:06:31", "emma.smith2164@example.com",
              "0049-000002164", "Emma Smith", "DE", "DE-R2", "Berlin", "46716", "1985-11-11", "female", "email"]
    (tmp_path / "customers.csv").write_text(",".join(values) + "\n00000123,2024-02-12,,,,Anna Weber\n")
    with pytest.raises(SourceError) as err:
        load_entity(duckdb.connect(), CUSTOMERS, tmp_path)
    message = str(err.value)
    assert "required column(s) customer_id, created_at missing" in message
    assert "the first line looks like data, not a header (13 fields)" in message.lower()
    personal = values[:6] + values[8:11] + ["Anna", "Weber", "Emma", "Smith", "00000123"]
    assert not [v for v in personal if v in message], message


def test_a_header_missing_a_column_quotes_only_names(tmp_path):
    (tmp_path / "orders.csv").write_text("Order ID,customer_id,e-mail,ordered_at\nA1,00017,a@b.c,2024-01-01\n")
    with pytest.raises(SourceError) as err:
        load_entity(duckdb.connect(), ORDERS, tmp_path)
    assert ("required column(s) amount missing. Found columns: Order ID, customer_id, ordered_at (and 1 not shown). "
            "Add the column(s)") in str(err.value)


def test_a_semicolon_header_is_explained(tmp_path):
    (tmp_path / "orders.csv").write_text("order_id;customer_id;ordered_at;amount\nA1;00017;2024-01-01;10,00\n")
    with pytest.raises(SourceError, match=r"missing\. Found columns: order_id, customer_id, ordered_at, amount\. "
                                          r"The header looks ';'-delimited; the contract expects commas: export"):
        load_entity(duckdb.connect(), ORDERS, tmp_path)


def test_empty_optional_file_is_no_rows_with_a_warning(tmp_path):
    (tmp_path / "interactions.csv").write_bytes(b"")
    con = duckdb.connect()
    result = load_entity(con, INTERACTIONS, tmp_path)
    assert result.present and result.rows == 0
    assert result.warnings == [f"interactions ({tmp_path / 'interactions.csv'}): the file is empty (0 bytes); read as "
                               "no rows. If interactions should not be empty, export it again."]
    assert con.execute("select count(*) from raw.interactions").fetchone()[0] == 0


def test_erasure_reaches_rejected_lines(tmp_path):
    (tmp_path / "orders.csv").write_text(
        f"{ORDERS_HEADER}\nA1,00017,2024-01-01,10.00,extra\nA2, 00018 ,2024-01-01\nA3,00019,\"2024\n"
        "A4,00017,2024-01-02,1\n")
    con = duckdb.connect()
    load_entity(con, ORDERS, tmp_path)
    assert erase_from_rejects(con, "orders", ["00018", "00019", "99999"]) == 2
    assert [n for _, n, _, _ in _rejects(con)] == [2]


def test_ingest_assets_report_malformed_lines_and_empty_optional_files(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "customers.csv").write_text("customer_id,created_at,email\n00017,2024-01-02,a@example.com\n"
                                          "00018,2024-01-03,b@example.com\n00019,2024-01-04\n")
    (source / "orders.csv").write_text(f"{ORDERS_HEADER}\nA1,00017,2024-01-01,10\nA2,00018,2024-01-01,5,x\n")
    (source / "interactions.csv").write_bytes(b"")
    (source / "erasure_requests.csv").write_text("customer_id\n00018\n")
    settings = PipelineSettings.from_env(source_dir=str(source), warehouse_path=str(tmp_path / "w.duckdb"))
    result = dg.materialize(ingest_assets, resources={"settings": settings})
    assert result.success
    materialized = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    meta = {m.asset_key.to_user_string(): m.metadata for m in materialized}
    assert meta["raw/customers"]["rejected_lines"].value == 1
    assert meta["raw/customers"]["rejects"].value == [
        "customers.csv line 4: malformed CSV line: too few fields (a truncated line?)"]
    assert meta["raw/orders"]["rows_erased"].value == 1  # the rejected line of an erased customer
    assert meta["raw/interactions"]["warnings"].value[0].startswith(f"interactions ({source / 'interactions.csv'}): "
                                                                     "the file is empty (0 bytes)")
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert _rejects(con, "orders") == []
        assert [n for _, n, _, _ in _rejects(con, "customers")] == [4]
