"""The data contract from its one declaration: time zones, plausibility rules, non-finite numbers, and the
as-of date taken from the rows that keep the contract (issue 17, items 1-4)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from data_quality.contract import ENTITIES, ORDER_STATUSES, ContractError, load
from orchestration.settings import PipelineSettings, SettingsError
from orchestration.warehouse import DuckDBWarehouse
from tests.conftest import build_once

# reasons people and scripts search the quarantine for: they must not change
STABLE_REASONS = {
    "customers": ["missing customer_id", "missing created_at", "unparseable created_at (use ISO 8601, e.g. 2024-01-31)",
                  "created_at in the future", "unparseable updated_at (use ISO 8601)", "updated_at in the future",
                  "unparseable birth_date (use ISO 8601)", "birth_date in the future",
                  "unparseable marketing_consent (true or false)",
                  "duplicate customer_id with conflicting content and the same updated_at"],
    "orders": ["missing order_id", "missing customer_id", "missing ordered_at",
               "unparseable ordered_at (use ISO 8601, e.g. 2024-01-31 or 2024-01-31 14:05:00)",
               "ordered_at in the future", "missing amount",
               "unparseable amount (a number with a dot as decimal separator)", "negative amount",
               "unknown status (completed, cancelled or refunded)", "unparseable quantity",
               "unknown customer_id (not in customers)", "duplicate order_id with conflicting content"],
    "interactions": ["missing interaction_id", "missing customer_id", "missing occurred_at",
                     "unparseable occurred_at (use ISO 8601, e.g. 2024-01-31 14:05:00)", "occurred_at in the future",
                     "missing channel", "missing interaction_type", "unparseable resolved (true or false)",
                     "satisfaction_score not an integer 1..5", "nps_score not an integer 0..10",
                     "sentiment not a number -1..1", "unknown customer_id (not in customers)",
                     "duplicate interaction_id with conflicting content"],
    "campaigns": ["missing campaign_id", "unparseable started_at (use ISO 8601)", "unparseable ended_at (use ISO 8601)",
                  "unparseable cost", "negative cost", "duplicate campaign_id with conflicting content"],
}
EARLIEST = "ordered_at before the earliest plausible date (CRM_EARLIEST_DATE)"
BEFORE_CREATED = "ordered_at before the customer's created_at (CRM_CREATED_AT_TOLERANCE_DAYS)"
NON_FINITE = "non-finite amount (NaN or Infinity)"
OUTLIER = "amount beyond the outlier bound (CRM_AMOUNT_OUTLIER_FACTOR)"


def test_the_python_contract_is_the_one_declaration():
    assert list(ENTITIES) == ["customers", "orders", "interactions", "campaigns"]
    assert ORDER_STATUSES == ("completed", "cancelled", "refunded")
    for name, entity in ENTITIES.items():
        assert entity.key in entity.required_columns
        reasons = entity.reasons
        assert len(set(reasons)) == len(reasons), name  # one reason, one rule
        assert [r for r in reasons if r in STABLE_REASONS[name]] == STABLE_REASONS[name]  # same text, same order
        present = {r.column for r in entity.rules if r.check == "present"}
        assert present == set(entity.required_columns), name  # a required column must hold a value
        for column, kind in entity.types.items():
            checks = [r.check for r in entity.rules if r.column == column]
            if kind == "number":  # NaN and Infinity get their own reason, before "unparseable"
                assert "finite" in checks and checks.index("finite") < min(
                    [checks.index(c) for c in ("parses", "in_range") if c in checks] or [99]), (name, column)
            if kind in ("timestamp", "date") and column != "birth_date":
                assert "not_before_earliest" in checks, (name, column)
        outliers = [i for i, r in enumerate(entity.rules) if r.check == "not_outlier"]
        assert all(i >= len(entity.rules) - len(outliers) for i in outliers), name  # measured on the rest: last
    assert ENTITIES["orders"].rule("not_outlier").reason == OUTLIER


def test_a_malformed_declaration_is_refused_with_its_place(tmp_path):
    declaration = tmp_path / "dbt_project.yml"
    declaration.write_text(
        "vars:\n  contract:\n    orders:\n      key: order_id\n      required: true\n"
        "      columns:\n        order_id: {type: text, required: true}\n"
        "      rules:\n        - {column: order_id, check: is_nice, reason: nice}\n")
    with pytest.raises(ContractError, match="contract orders: unknown check 'is_nice'"):
        load(declaration)
    declaration.write_text(declaration.read_text().replace("type: text", "type: txt").replace("is_nice", "present"))
    with pytest.raises(ContractError, match=r"contract orders.order_id: type 'txt'"):
        load(declaration)


def test_settings_for_time_zone_and_plausibility(monkeypatch):
    monkeypatch.setenv("CRM_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("CRM_EARLIEST_DATE", "2000-01-01")
    monkeypatch.setenv("CRM_AMOUNT_OUTLIER_FACTOR", "25")
    settings = PipelineSettings.from_env()
    assert (settings.timezone, settings.earliest_date, settings.amount_outlier_factor) == ("Europe/Berlin", "2000-01-01", 25)
    from ml.windows import plan_windows
    dbt_vars = settings.dbt_vars(plan_windows(date(2026, 9, 30), date(2024, 1, 1), churn_horizon_days=90,
                                              clv_horizon_days=365, stacked=2), "r")
    assert (dbt_vars["timezone"], dbt_vars["earliest_date"], dbt_vars["created_at_tolerance_days"]) == (
        "Europe/Berlin", "2000-01-01", 1)
    monkeypatch.setenv("CRM_TIMEZONE", "Europe/Atlantis")
    with pytest.raises(SettingsError, match=r"CRM_TIMEZONE\) must be an IANA time zone name .* 'Europe/Atlantis'"):
        PipelineSettings.from_env()
    monkeypatch.setenv("CRM_TIMEZONE", "UTC")
    with pytest.raises(SettingsError, match=r"CRM_EARLIEST_DATE\) must be YYYY-MM-DD"):
        PipelineSettings.from_env(earliest_date="01.01.1990")
    with pytest.raises(SettingsError, match=r"CRM_MAX_OUTLIER_SHARE\) must be between 0 and 1"):
        PipelineSettings.from_env(max_outlier_share=5)


def test_the_as_of_date_and_history_come_from_rows_that_keep_the_contract(tmp_path):
    """Quarantined orders (one in the future, one in 1900) move neither the as-of date nor the first order date;
    the raw table, which still holds them, is not read."""
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema staging; create schema raw")
        con.execute("create table raw.orders as select '2031-01-01 10:00:00' as ordered_at")
        con.execute("""create table staging.stg_orders_checked as select * from (values
            (timestamp '2024-01-05 10:00:00', null), (timestamp '2026-09-30 23:59:00', null),
            (timestamp '2031-01-01 10:00:00', 'ordered_at in the future'),
            (timestamp '1900-01-01 00:00:00', 'ordered_at before the earliest plausible date (CRM_EARLIEST_DATE)'))
            as t(ordered_at, reject_reason)""")
        settings = PipelineSettings(warehouse_path=str(warehouse))
        assert settings.resolve_as_of(DuckDBWarehouse(con)) == date(2026, 9, 30)
        windows = settings.resolve_windows(DuckDBWarehouse(con))
        assert windows.as_of == date(2026, 9, 30) and windows.value_window_days == 365
        configured = PipelineSettings(warehouse_path=str(warehouse), as_of_date="2026-06-30")
        assert configured.resolve_windows(DuckDBWarehouse(con)).as_of == date(2026, 6, 30)


def test_messages_name_rows_by_file_and_number_never_by_value():
    from data_quality.quarantine import name_rows, raw_counts

    rows = [("/in/orders.csv", n) for n in (3, 5, 6, 7)] + [("/in/orders/part2.csv", 1)]
    assert name_rows(rows) == "orders.csv rows 3, 5 to 7; part2.csv row 1"
    assert name_rows([("/in/orders.csv", n) for n in range(1, 40, 2)], limit=3) == (
        "orders.csv rows 1, 3, 5 (and 17 more rows)")
    con = duckdb.connect()
    con.execute("create schema raw; create table raw.orders as select 1 as x from range(5)")
    con.execute("create table raw.orders_rejects as select 1 as x from range(2)")  # lines the ingest set aside
    assert raw_counts(DuckDBWarehouse(con)) == {"orders": 7}


# --- the contract step on its own: dbt builds the checked and quarantine models from handmade raw rows ----


def _raw_tables(con: duckdb.DuckDBPyConnection, rows: dict[str, list[dict]]) -> None:
    """raw.<entity> as the ingest makes them: every contract column as text, plus _source_file, _source_row."""
    con.execute("create schema raw")
    for name, entity in ENTITIES.items():
        cols = ", ".join(f"{c} varchar" for c in entity.columns)
        con.execute(f"create table raw.{name} ({cols}, _source_file varchar, _source_row bigint)")
        for i, row in enumerate(rows.get(name, []), start=1):
            values = [row.get(c) for c in entity.columns] + [f"/in/{name}.csv", i]
            con.execute(f"insert into raw.{name} values ({', '.join('?' * len(values))})", values)


CUSTOMERS = [
    {"customer_id": "C1", "created_at": "2024-01-10 08:00:00"},  # naive: already Berlin time
    {"customer_id": "C2", "created_at": "2024-01-10T07:00:00Z"},  # the same moment in UTC (CET is +01:00)
    {"customer_id": "C3", "created_at": "1985-05-01"},
    {"customer_id": "C4", "created_at": "2024-03-01"},
]
ORDERS = [
    # one moment (2026-09-30 23:30 in Berlin, CEST = +02:00) written five ways
    {"order_id": "O-NAIVE", "ordered_at": "2026-09-30 23:30:00"},
    {"order_id": "O-OFFSET", "ordered_at": "2026-09-30T23:30:00+02:00"},
    {"order_id": "O-Z", "ordered_at": "2026-09-30T21:30:00Z"},
    {"order_id": "O-Z-LOWER", "ordered_at": "2026-09-30 21:30:00 z"},
    {"order_id": "O-MINUS5", "ordered_at": "2026-09-30T16:30:00-0500"},
    {"order_id": "O-NEXT-DAY", "ordered_at": "2026-09-30T23:30:00Z"},  # 01:30 on 1 October in Berlin
    {"order_id": "O-1900", "ordered_at": "1900-01-01"},
    {"order_id": "O-BEFORE", "customer_id": "C4", "ordered_at": "2024-02-01 10:00:00"},
    {"order_id": "O-SAME-DAY", "customer_id": "C4", "ordered_at": "2024-02-29 12:00:00"},  # within the tolerance
    {"order_id": "O-NAN", "amount": "NaN"}, {"order_id": "O-NAN-LOWER", "amount": "nan"},
    {"order_id": "O-INF", "amount": "Infinity"}, {"order_id": "O-MINUS-INF", "amount": "-inf"},
    {"order_id": "O-OVERFLOW", "amount": "1e400"},
    {"order_id": "O-HUGE", "amount": "1e12"},
    {"order_id": "O-FUTURE", "ordered_at": "2099-01-01T10:00:00+01:00"},
] + [{"order_id": f"O-{i}", "amount": str(10 + i)} for i in range(60)]
INTERACTIONS = [
    {"interaction_id": "I-OFFSET", "occurred_at": "2026-09-30T23:30:00+02:00"},
    {"interaction_id": "I-NAN", "sentiment": "NaN"},
    {"interaction_id": "I-BEFORE", "customer_id": "C4", "occurred_at": "2023-12-01 10:00:00"},
    {"interaction_id": "I-1900", "occurred_at": "1899-12-31 10:00:00"},
]


@pytest.fixture(scope="module")
def contract_step(tmp_path_factory) -> Path:
    """The contract step (dbt build --select tag:contract) in the Europe/Berlin time zone. Read-only."""
    return build_once(tmp_path_factory, "contract_step", _contract_step)[0] / "warehouse.duckdb"


def _contract_step(work: Path) -> None:
    from orchestration.dbt_project import DBT_PROJECT_DIR, dbt_executable

    warehouse = work / "warehouse.duckdb"
    order = {"customer_id": "C1", "ordered_at": "2026-05-01 10:00:00", "amount": "25.00", "status": "completed"}
    interaction = {"customer_id": "C1", "occurred_at": "2026-05-01 10:00:00", "channel": "web",
                   "interaction_type": "web_visit"}
    with duckdb.connect(str(warehouse)) as con:
        _raw_tables(con, {
            "customers": CUSTOMERS,
            "orders": [{**order, **row} for row in ORDERS],
            "interactions": [{**interaction, **row} for row in INTERACTIONS],
            "campaigns": [{"campaign_id": "K1", "cost": "Infinity"}, {"campaign_id": "K2", "cost": "100"}],
        })
        # a line the ingest could not read as a record (orchestration/source_files.py, REJECTS_COLUMNS)
        con.execute("create table raw.orders_rejects (_source_file varchar, _source_line bigint, "
                    "reject_reason varchar, raw_line varchar)")
        con.execute("insert into raw.orders_rejects values ('/in/orders.csv', 80, 'malformed CSV line', 'O-X,C1')")
    dbt_vars = {"warehouse_path": str(warehouse), "run_id": "test", "timezone": "Europe/Berlin",
                "max_bad_row_share": 1}
    proc = subprocess.run(
        [dbt_executable(), "build", "--select", "tag:contract", "--vars", json.dumps(dbt_vars), "--project-dir",
         str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(work / "target")],
        cwd=DBT_PROJECT_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_offsets_and_z_are_honoured_and_converted_to_the_run_time_zone(contract_step):
    with duckdb.connect(str(contract_step), read_only=True) as con:
        orders = dict(con.execute("select order_id, ordered_at from staging.stg_orders_checked").fetchall())
        created = dict(con.execute("select customer_id, created_at from staging.stg_customers_checked").fetchall())
        occurred = con.execute("select occurred_at from staging.stg_interactions_checked "
                               "where interaction_id = 'I-OFFSET'").fetchall()[0][0]
    same_moment = {orders[k] for k in ("O-NAIVE", "O-OFFSET", "O-Z", "O-Z-LOWER", "O-MINUS5")}
    assert same_moment == {pd.Timestamp("2026-09-30 23:30:00").to_pydatetime()}
    assert orders["O-NEXT-DAY"] == pd.Timestamp("2026-10-01 01:30:00").to_pydatetime()  # its date in Berlin
    assert occurred == orders["O-OFFSET"]
    assert created["C1"] == created["C2"] == pd.Timestamp("2024-01-10 08:00:00").to_pydatetime()


def test_implausible_dates_and_amounts_and_non_finite_numbers_are_quarantined(contract_step):
    with duckdb.connect(str(contract_step), read_only=True) as con:
        reasons = dict(con.execute("select order_id, reject_reason from staging.stg_orders_checked").fetchall())
        non_finite = con.execute("""select count(*) from staging.stg_orders_checked where not isfinite(amount)
            union all select count(*) from staging.stg_interactions_checked where not isfinite(sentiment)
            union all select count(*) from staging.stg_campaigns_checked where not isfinite(cost)""").fetchall()
        interactions = dict(con.execute(
            "select interaction_id, reject_reason from staging.stg_interactions_checked").fetchall())
        customers = dict(con.execute("select customer_id, reject_reason from staging.stg_customers_checked").fetchall())
        campaigns = dict(con.execute("select campaign_id, reject_reason from staging.stg_campaigns_checked").fetchall())
        quarantined = con.execute("select source_file, source_row, rule from quarantine.quarantine_orders "
                                  "where raw_row like 'order_id=O-HUGE;%'").fetchall()
    assert reasons["O-1900"] == EARLIEST and reasons["O-BEFORE"] == BEFORE_CREATED
    assert reasons["O-SAME-DAY"] is None  # 12 hours before the account: within CRM_CREATED_AT_TOLERANCE_DAYS
    for order_id in ("O-NAN", "O-NAN-LOWER", "O-INF", "O-MINUS-INF", "O-OVERFLOW"):
        assert reasons[order_id] == NON_FINITE, order_id
    assert reasons["O-HUGE"] == OUTLIER and quarantined == [("/in/orders.csv", 15, OUTLIER)]
    assert reasons["O-FUTURE"] == "ordered_at in the future"
    assert [k for k, v in reasons.items() if v is None and k.startswith("O-") and k[2:].isdigit()] == [
        f"O-{i}" for i in range(60)]  # the ordinary amounts (10..69) all keep the contract
    assert non_finite == [(0,), (0,), (0,)]  # not even a quarantined row carries NaN or Infinity onwards
    assert interactions["I-NAN"] == "non-finite sentiment (NaN or Infinity)"
    assert interactions["I-BEFORE"] == "occurred_at before the customer's created_at (CRM_CREATED_AT_TOLERANCE_DAYS)"
    assert interactions["I-1900"] == "occurred_at before the earliest plausible date (CRM_EARLIEST_DATE)"
    assert customers["C3"] == "created_at before the earliest plausible date (CRM_EARLIEST_DATE)"
    assert campaigns == {"K1": "non-finite cost (NaN or Infinity)", "K2": None}


def test_the_quarantine_holds_every_broken_row_and_every_unreadable_line(contract_step):
    with duckdb.connect(str(contract_step), read_only=True) as con:
        broken = con.execute("select count(*) from staging.stg_orders_checked where reject_reason is not null").fetchall()
        quarantine = con.execute("select count(*), count(source_row), count(source_line) from quarantine.quarantine_orders"
                                 ).fetchall()
        unreadable = con.execute("select source_file, source_line, rule from quarantine.quarantine_orders "
                                 "where source_line is not null").fetchall()
    assert quarantine == [(broken[0][0] + 1, broken[0][0], 1)]
    assert unreadable == [("/in/orders.csv", 80, "malformed CSV line")]


# --- the whole job: a pair of runs -------------------------------------------------------------------------


def _with_offsets(folder: Path) -> None:
    """Rewrite every timestamp of customers, orders and interactions as the same moment with a UTC offset or Z
    (a quarter each as +02:00, Z and -05:00, by key, so that a record's copies stay alike; the rest naive)."""
    columns = {"customers": ("customer_id", ["created_at", "updated_at"]), "orders": ("order_id", ["ordered_at"]),
               "interactions": ("interaction_id", ["occurred_at"])}
    con = duckdb.connect()
    for entity, (key, cols) in columns.items():
        path = folder / f"{entity}.csv"
        shifted = ", ".join(
            f"""case when try_cast({c} as timestamp) is null then {c}
                     when hash({key}) % 4 = 0 then strftime(cast({c} as timestamp) + interval 2 hour, '%Y-%m-%dT%H:%M:%S') || '+02:00'
                     when hash({key}) % 4 = 1 then strftime(cast({c} as timestamp), '%Y-%m-%dT%H:%M:%SZ')
                     when hash({key}) % 4 = 2 then strftime(cast({c} as timestamp) - interval 5 hour, '%Y-%m-%dT%H:%M:%S') || '-05:00'
                     else {c} end as {c}""" for c in cols)
        con.execute(f"copy (select * replace ({shifted}) from read_csv('{path}', all_varchar=true)) to '{path}.tmp' (header)")
        Path(f"{path}.tmp").replace(path)


def _add_implausible_orders(folder: Path) -> dict[str, str]:
    """A few orders every plausibility rule quarantines (0.2 % of the rows, under every limit)."""
    path = folder / "orders.csv"
    con = duckdb.connect()
    template = con.execute(f"select * from read_csv('{path}', all_varchar=true) limit 1").df().iloc[0].to_dict()
    created = con.execute(f"select min(created_at) from read_csv('{folder}/customers.csv', all_varchar=true) "
                          f"where customer_id = ?", [template["customer_id"]]).fetchall()[0][0]
    before = (pd.Timestamp(created, tz="UTC") - pd.Timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    bad = {"X-1900-1": {"ordered_at": "1900-01-01"}, "X-1900-2": {"ordered_at": "1900-06-30 12:00:00"},
           "X-NAN": {"amount": "NaN"}, "X-NAN-LOWER": {"amount": "nan"}, "X-INF": {"amount": "Infinity"},
           "X-MINUS-INF": {"amount": "-inf"}, "X-HUGE-1": {"amount": "1e12"}, "X-HUGE-2": {"amount": "1000000000000"},
           "X-HUGE-3": {"amount": "2.5e12"}, "X-FUTURE-1": {"ordered_at": "2031-01-01 10:00:00"},
           "X-FUTURE-2": {"ordered_at": "2030-06-01T10:00:00Z"}, "X-BEFORE": {"ordered_at": before}}
    rows = pd.DataFrame([{**template, "order_id": k, **v} for k, v in bad.items()])
    con.register("bad", rows)
    con.execute(f"copy (select * from read_csv('{path}', all_varchar=true) union all by name select * from bad) "
                f"to '{path}.tmp' (header)")
    Path(f"{path}.tmp").replace(path)
    expected = {"X-1900-1": EARLIEST, "X-1900-2": EARLIEST, "X-FUTURE-1": "ordered_at in the future",
                "X-FUTURE-2": "ordered_at in the future", "X-BEFORE": BEFORE_CREATED}
    expected.update({k: NON_FINITE for k in ("X-NAN", "X-NAN-LOWER", "X-INF", "X-MINUS-INF")})
    expected.update({k: OUTLIER for k in ("X-HUGE-1", "X-HUGE-2", "X-HUGE-3")})
    return expected


def _frame(db: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(sql).to_arrow_table().to_pandas()


@pytest.mark.slow
def test_offset_timestamps_and_implausible_rows_change_nothing_but_the_quarantine(small_sample, tmp_path, monkeypatch):
    """The same source twice: as exported, and with every timestamp written with a UTC offset or Z plus orders
    dated 1900, before their customer, in the future, with NaN, Infinity and 1e12 amounts. The second run
    (after the first one's publication, so the drift gate compares) quarantines exactly those orders, keeps
    the as-of date, and publishes the same staging tables and the same scores."""
    from orchestration.cli import main
    from tests.conftest import run_args

    monkeypatch.setenv("CRM_PSEUDONYM_KEY", "one key for both work folders")
    clean, work_clean = tmp_path / "clean", tmp_path / "work_clean"
    shutil.copytree(small_sample, clean)
    assert main(run_args(clean, work_clean)) == 0
    messy, work_messy = tmp_path / "messy", tmp_path / "work_messy"
    shutil.copytree(small_sample, messy)
    _with_offsets(messy)
    expected = _add_implausible_orders(messy)
    shutil.copytree(work_clean, work_messy)  # the first publication is there: the drift gate is armed
    assert main(run_args(messy, work_messy)) == 0

    warehouses = {name: tmp_path / f"work_{name}" / "warehouse.duckdb" for name in ("clean", "messy")}
    quarantined = _frame(warehouses["messy"], "select raw_row, rule from quarantine.quarantine_orders")
    found = {row.raw_row.split(";")[0].removeprefix("order_id="): row.rule for row in quarantined.itertuples()}
    assert {k: found.get(k) for k in expected} == expected
    assert len(quarantined) - len(_frame(warehouses["clean"], "select * from quarantine.quarantine_orders")) == len(expected)
    for table, key in (("stg_orders", "order_id"), ("stg_interactions", "interaction_id"), ("stg_customers", "customer_id")):
        frames = [_frame(w, f"select * from staging.{table} order by {key}") for w in warehouses.values()]
        pd.testing.assert_frame_equal(*frames, obj=table)
    scores = [_frame(tmp_path / f"work_{name}" / "serving.duckdb",
                     "select * exclude (run_id) from customer_scores order by customer_id") for name in ("clean", "messy")]
    assert str(scores[1].as_of_date.iloc[0]) == "2026-09-30"  # the future orders did not move it
    previous = [c for c in scores[1].columns if c.startswith("previous_")]
    pd.testing.assert_frame_equal(scores[0].drop(columns=previous), scores[1].drop(columns=previous))
    runs = _frame(tmp_path / "work_messy" / "serving.duckdb", "select published, quarantined_by_rule from pipeline_runs "
                  "order by finished_at")
    assert runs.published.tolist() == [True, True]
    assert json.loads(runs.quarantined_by_rule.iloc[-1])["orders"][OUTLIER] == 3
