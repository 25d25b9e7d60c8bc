"""The bad-input corpus: every broken source either has its bad rows quarantined with the right reason
(and the run publishes), or stops before publishing with a message naming the file, column and fix."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestration.cli import main
from tests.conftest import run_args

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    return duckdb.sql(f"select * from read_csv('{path}', all_varchar=true)").to_arrow_table().to_pylist()


def _write(path: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def corrupted(sample_copy) -> tuple[Path, dict[str, str]]:
    """The small sample with one defect per row; returns the folder and {marker id: expected rule}."""
    orders = _rows(sample_copy / "orders.csv")
    template = dict(orders[0])
    expected = {}

    def bad_order(order_id, rule, **changes):
        row = {**template, "order_id": order_id, **changes}
        orders.append(row)
        expected[order_id] = rule

    bad_order("BAD-NEG", "negative amount", amount="-5.00")
    bad_order("BAD-NUM", "unparseable amount", amount="12,50 EUR")
    bad_order("BAD-FUTURE", "ordered_at in the future", ordered_at="2031-01-01 10:00:00")
    bad_order("BAD-DATE", "unparseable ordered_at", ordered_at="31/12/2025")
    bad_order("BAD-CUST", "unknown customer_id", customer_id="99999999")
    bad_order("BAD-STATUS", "unknown status", status="lost in the mail")
    bad_order("BAD-DUP", "duplicate order_id with conflicting content", amount="10.00")
    bad_order("BAD-DUP", "duplicate order_id with conflicting content", amount="20.00")
    orders.append({**template, "order_id": None})  # null key
    customers = _rows(sample_copy / "customers.csv")
    # implausible rows (issue 17): non-finite and absurd amounts, dates before 1990 or before the customer
    bad_order("BAD-NAN", "non-finite amount", amount="NaN")
    bad_order("BAD-INF", "non-finite amount", amount="-Infinity")
    bad_order("BAD-1900", "ordered_at before the earliest plausible date", ordered_at="1900-01-01")
    created = min(c["created_at"] for c in customers if c["customer_id"] == template["customer_id"])
    bad_order("BAD-EARLY", "ordered_at before the customer's created_at", ordered_at=str(
        datetime.fromisoformat(created) - timedelta(days=30)))
    bad_order("BAD-HUGE", "amount beyond the outlier bound", amount="1e12")
    # date formats that are fine: ISO with Z or an offset, YYYY/MM/DD, DD.MM.YYYY
    stamps = ["2026-05-01T10:00:00Z", "2026/05/02", "03.05.2026", "2026-05-01T10:00:00+02:00", "2026-05-01 10:00:00 z"]
    for i, stamp in enumerate(stamps):
        orders.append({**template, "order_id": f"OK-FORMAT-{i}", "ordered_at": stamp})
    _write(sample_copy / "orders.csv", orders)

    c0 = dict(customers[0])
    customers.append({**c0, "customer_id": None})
    customers.append({**c0, "customer_id": "BADCREATE", "created_at": "sometime"})
    customers.append({**c0, "customer_id": "CONFLICT", "updated_at": "2026-01-01 00:00:00", "email": "a@x.com"})
    customers.append({**c0, "customer_id": "CONFLICT", "updated_at": "2026-01-01 00:00:00", "email": "b@x.com"})
    customers[1]["shoe_size"] = "44"  # an extra column: ignored
    _write(sample_copy / "customers.csv", customers)
    return sample_copy, expected


def test_bad_rows_are_quarantined_with_their_reason_and_the_run_publishes(corrupted, tmp_path, monkeypatch):
    source, expected = corrupted
    monkeypatch.setenv("CRM_MAX_BAD_ROW_SHARE", "0.05")
    work = tmp_path / "work"
    assert main(run_args(source, work)) == 0
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        orders_q = con.execute("select rule, raw_row, source_file, source_row from quarantine.quarantine_orders").fetchall()
        customers_q = {r[0] for r in con.execute("select rule from quarantine.quarantine_customers").fetchall()}
        kept = {r[0] for r in con.execute("select order_id from staging.stg_orders where order_id like 'OK-FORMAT-%'").fetchall()}
        runs = con.execute("select rows_quarantined, quarantined_by_rule from ops.pipeline_runs where published").fetchall()
    for order_id, rule in expected.items():
        hits = [q for q in orders_q if f"order_id={order_id};" in q[1]]
        assert hits and all(q[0].startswith(rule) for q in hits), (order_id, hits)
        assert all(q[2].endswith("orders.csv") and q[3] > 0 for q in hits)
    assert any(q[0] == "missing order_id" for q in orders_q)
    assert kept == {f"OK-FORMAT-{i}" for i in range(5)}
    assert {"missing customer_id", "duplicate customer_id with conflicting content and the same updated_at"} <= customers_q
    assert any(rule.startswith("unparseable created_at") for rule in customers_q)
    assert runs[0][0] == len(orders_q) + len(customers_q) + 1  # two conflicting records count twice
    assert json.loads(runs[0][1])["orders"]["negative amount"] == 1


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_publication(two_publications):
    """The session's published work folder (read-only: each case copies it)."""
    return two_publications[0]


def _broken_copy(small_sample, tmp_path) -> Path:
    dst = tmp_path / "broken"
    shutil.copytree(small_sample, dst)
    return dst


def _drop_column(path: Path, column: str) -> None:
    rows = _rows(path)
    _write(path, [{k: v for k, v in r.items() if k != column} for r in rows])


def _implausible_amounts(folder: Path, n: int = 30) -> None:
    """n copies of a real order with an amount of 1e12: 0.3 % of the orders, under the bad-row limit (1 %),
    over the outlier limit (CRM_MAX_OUTLIER_SHARE, 0.1 %)."""
    rows = _rows(folder / "orders.csv")
    _write(folder / "orders.csv", rows + [{**rows[0], "order_id": f"HUGE-{i}", "amount": "1e12"} for i in range(n)])


STOPS = {
    "empty file": (lambda d: (d / "customers.csv").write_text(""), ["customers", "customers.csv", "the file is empty"]),
    "header only": (lambda d: (d / "orders.csv").write_text("order_id,customer_id,ordered_at,amount\n"),
                    ["orders", "header but no rows"]),
    "wrong delimiter": (lambda d: (d / "orders.csv").write_text(
        (d / "orders.csv").read_text().replace(",", ";")), ["orders.csv", "required column(s)", "';'-delimited"]),
    "non-UTF-8 bytes": (lambda d: (d / "customers.csv").write_bytes(
        (d / "customers.csv").read_bytes().replace(b"Anna", b"\xff\xfenna")), ["customers", "customers.csv", "UTF-8"]),
    "missing required column": (lambda d: _drop_column(d / "customers.csv", "created_at"),
                                ["customers", "created_at missing", "Add the column"]),
    "too many bad rows": (lambda d: (d / "orders.csv").write_text((d / "orders.csv").read_text() + "".join(
        f"X{i},00000001,2026-01-01,-{i},completed,EUR,books,1,online\n" for i in range(1, 400))),
        ["orders", "negative amount", "OVER THE LIMIT", "reject_share_within_threshold"]),
    "10x row-count jump": (lambda d: (d / "interactions.csv").write_text(
        (d / "interactions.csv").read_text() + "".join(
            line.replace("INT-", f"INT{k}-") + "\n" for k in range(10)
            for line in (d / "interactions.csv").read_text().splitlines()[1:])),
        ["interactions", "row_count_within_band", "CRM_ROW_COUNT_BAND"]),
    "implausible amounts over the outlier share": (_implausible_amounts, [
        "amount_outliers_within_share", "orders: 30 of ", "CRM_MAX_OUTLIER_SHARE", "beyond the outlier bound",
        "orders.csv rows 9,937 to 9,966", "CRM_AMOUNT_OUTLIER_FACTOR"]),
}
# what a message must never quote (values from the file)
NEVER_QUOTED = {"implausible amounts over the outlier share": ["1e12", "1000000000000", "HUGE-"]}


@pytest.mark.parametrize("case", list(STOPS))
def test_broken_sources_stop_before_publishing(case, good_publication, small_sample, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(good_publication, work)
    serving = work / "serving.duckdb"
    before = _digest(serving)
    source = _broken_copy(small_sample, tmp_path)
    breaker, phrases = STOPS[case]
    breaker(source)
    capsys.readouterr()
    assert main(run_args(source, work)) == 1
    err = capsys.readouterr().err
    for phrase in phrases:
        assert phrase in err, (case, phrase, err[-3000:])
    for value in NEVER_QUOTED.get(case, []):
        assert value not in err, (case, value)
    assert "nothing was published" in err
    assert _digest(serving) == before
