"""The run's as-of date and windows are resolved once per run (by the contract step) and read back by every later
step from ``ops.run_windows``: a row arriving mid-run cannot move them."""

from __future__ import annotations

from datetime import date

import duckdb

from ml.windows import plan_windows
from orchestration.settings import PipelineSettings, windows_from_json, windows_to_json

CHECKED_ORDERS = """create schema staging;
create table staging.stg_orders_checked as
select * from (values (timestamp '2025-06-30 10:00', null::varchar), (timestamp '2024-01-02 08:00', null),
                      (timestamp '2025-08-01 09:00', 'ordered_in_future')) t(ordered_at, reject_reason)"""


def test_the_windows_are_resolved_once_per_run_and_read_back(tmp_path):
    settings = PipelineSettings(warehouse_path=str(tmp_path / "warehouse.duckdb"))
    with settings.open_warehouse() as warehouse:
        con = warehouse.con
        con.execute(CHECKED_ORDERS)
        first = settings.record_windows(warehouse, "run-1")  # what the contract step does after its build
        assert first.as_of == date(2025, 6, 30) and first.history_start == date(2024, 1, 2)  # the rejected row is not seen
        con.execute("insert into staging.stg_orders_checked values (timestamp '2025-07-15 09:00', null)")
        assert settings.run_windows(warehouse, "run-1") == first  # a later step of the same run: the recorded windows
        second = settings.run_windows(warehouse, "run-2")  # a step run on its own: resolved now, and kept
        assert second.as_of == date(2025, 7, 15)
        rows = con.execute("select run_id from ops.run_windows order by run_id").fetchall()
    assert rows == [("run-1",), ("run-2",)]


def test_windows_survive_the_round_trip_through_the_warehouse():
    for first_order in (date(2025, 12, 1), None):  # a short history (notes, dropped cutoffs) and an unknown one
        windows = plan_windows(date(2026, 9, 30), first_order, churn_horizon_days=90, clv_horizon_days=365)
        assert windows_from_json(windows_to_json(windows)) == windows


def test_each_published_run_recorded_its_windows(two_publications):
    """On real runs: one record per run, the as-of date the run published (2026-08-31 configured, then the default)."""
    work, first, second = two_publications
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        recorded = {run: windows_from_json(text) for run, text in
                    con.execute("select run_id, windows from ops.run_windows").fetchall()}
        published = dict(con.execute("select run_id, as_of_date from ops.pipeline_runs").fetchall())
    assert set(recorded) == {first, second}
    assert recorded[first].as_of == date(2026, 8, 31)
    assert {run: w.as_of for run, w in recorded.items()} == {run: published[run] for run in recorded}
