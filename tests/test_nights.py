"""Nights as Dagster partitions, backfills, the score history they publish, and the source freshness check
(issue 16, items 1-3)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.cli import main
from tests.conftest import published_run_id, run_args

PUBLICATION = dg.AssetKey(["serving", "publication"])


def _rows(path: Path, sql: str, params=None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params).fetchall()


def test_the_schedule_runs_the_night_before_its_tick_as_that_partition():
    from orchestration.definitions import defs
    from orchestration.jobs import nightly_schedule

    assert defs.resolve_job_def("nightly").partitions_def is not None
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc),
                                        repository_def=defs.get_repository_def())
    [request] = nightly_schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-28" and request.run_key == "2026-11-28"


def test_a_run_is_filed_under_its_night(small_sample):
    from orchestration.partitions import night_of_run
    from orchestration.settings import AS_OF_FROM_TAG, PipelineSettings

    settings = PipelineSettings(source_dir=str(small_sample))
    # no as-of date: the night the source runs up to, and the data keeps deciding the as-of date
    assert night_of_run(settings) == ("2026-09-30", {AS_OF_FROM_TAG: "data"})
    assert night_of_run(settings.model_copy(update={"as_of_date": "2026-09-28"})) == ("2026-09-28", {})
    before_the_first_night = night_of_run(settings.model_copy(update={"as_of_date": "2020-01-01"}))
    assert before_the_first_night[1] == {AS_OF_FROM_TAG: "settings"}


def test_a_backfill_publishes_history_per_night_and_never_replaces_the_newer_latest(two_publications, small_sample,
                                                                                    tmp_path, monkeypatch, capsys):
    """Acceptance: a 3-night backfill through Dagster's partitions, oldest first. The copy holds the nights
    2026-08-31 and 2026-09-30 (two_publications): 2026-09-28 and 2026-09-29 are earlier than the published night,
    2026-09-30 is run again."""
    work, _, latest_run = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    monkeypatch.setenv("DAGSTER_HOME", str(copy / ".dagster"))
    serving = copy / "serving.duckdb"
    n = _rows(serving, "select count(*) from customer_scores")[0][0]
    capsys.readouterr()

    args = [a for a in run_args(small_sample, copy) if a != "run"]
    assert main(["backfill", "--from", "2026-09-28", "--to", "2026-09-30", *args]) == 0
    out = capsys.readouterr().out
    assert "Backfill 2026-09-28 .. 2026-09-30: 2026-09-28 ok, 2026-09-29 ok, 2026-09-30 ok" in out
    assert out.count("customer_scores stays as of 2026-09-30, a later night") == 2
    runs = dict(_rows(serving, "select as_of_date::varchar, run_id from pipeline_runs where published and "
                               "as_of_date >= '2026-09-28' order by finished_at"))
    # the newest night is the latest again, run by the backfill; the earlier nights went into the history only
    assert published_run_id(serving) == runs["2026-09-30"] != latest_run
    assert _rows(serving, "select any_value(as_of_date)::varchar from customer_scores") == [("2026-09-30",)]
    for night in ("2026-09-28", "2026-09-29"):  # their reports: the latest tables were still the 2026-09-30 ones
        report = (copy / "reports" / f"run_{runs[night]}.html").read_text()
        assert f"This run added the night of {night} to the score history</b>" in report
        assert "the tables below are the latest publication, as of 2026-09-30" in report
    nights = _rows(serving, "select as_of_date::varchar, count(*), count(distinct customer_id), list(distinct run_id) "
                            "from customer_scores_history group by 1 order by 1")
    assert [d for d, *_ in nights] == ["2026-08-31", "2026-09-28", "2026-09-29", "2026-09-30"]
    assert all(rows == customers for _, rows, customers, _ in nights)  # one row per customer and night
    assert [(d, rows, ids) for d, rows, _, ids in nights[1:]] == [(d, n, [runs[d]]) for d in sorted(runs)]  # re-run
    segments = _rows(serving, "select as_of_date::varchar, count(distinct run_id) from segment_history group by 1 order by 1")
    assert segments == [(d, 1) for d in ("2026-08-31", "2026-09-28", "2026-09-29", "2026-09-30")]
    for night, run_id in runs.items():  # each night's models never saw a later day
        versions = _rows(serving, "select model_versions from pipeline_runs where run_id = ?", [run_id])[0][0]
        card = copy / "models" / "churn" / json.loads(versions)["churn"] / "card.json"
        if card.exists():
            trained = json.loads(card.read_text())
            assert trained["trained_for_as_of"] <= night and trained["label_window_end"] <= night

    # the Dagster UI's partitions: every night that ran is materialised, each run tagged with its night
    instance = dg.DagsterInstance.get()
    assert {"2026-08-31", "2026-09-28", "2026-09-29", "2026-09-30"} <= instance.get_materialized_partitions(PUBLICATION)
    tags = {r.run_id: r.tags.get("dagster/partition") for r in instance.get_runs(dg.RunsFilter(job_name="nightly"))}
    assert all(tags[run_id] == night for night, run_id in runs.items())
    instance.dispose()


def test_history_tables_are_documented_and_hold_one_row_per_customer_and_night(two_publications):
    work, first, second = two_publications
    serving = work / "serving.duckdb"
    for table in ("customer_scores_history", "segment_history"):
        assert _rows(serving, "select comment from duckdb_tables() where table_name = ?", [table])[0][0]
        assert _rows(serving, "select column_name from duckdb_columns() where table_name = ? and comment is null",
                     [table]) == []
    assert _rows(serving, "select count(*) from (select customer_id, as_of_date from customer_scores_history "
                          "group by all having count(*) > 1)") == [(0,)]
    # the history's newest night is the latest table, row for row
    assert _rows(serving, "select count(*) from customer_scores c join customer_scores_history h using (customer_id, "
                          "as_of_date, run_id) where h.potential_rank = c.potential_rank and h.priority_tier = "
                          "c.priority_tier") == _rows(serving, "select count(*) from customer_scores")
    assert {r for (r,) in _rows(serving, "select distinct run_id from customer_scores_history")} == {first, second}


def test_history_keeps_the_configured_days_and_forgets_erased_customers(two_publications, small_sample, tmp_path,
                                                                        monkeypatch):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    monkeypatch.setenv("DAGSTER_HOME", str(copy / ".dagster"))
    serving = copy / "serving.duckdb"
    erased = _rows(serving, "select customer_id from customer_scores_history where as_of_date = '2026-08-31' "
                            "order by customer_id limit 1")[0][0]
    (tmp_path / "erase.txt").write_text(erased + "\n")
    monkeypatch.setenv("CRM_HISTORY_DAYS", "20")  # 2026-08-31 is 30 days before the newest night
    monkeypatch.setenv("CRM_HISTORY_MONTHS", "0")  # and no month ends before the newest night's month
    assert main(run_args(small_sample, copy, "--erase", str(tmp_path / "erase.txt"))) == 0
    assert _rows(serving, "select distinct as_of_date::varchar from customer_scores_history") == [("2026-09-30",)]
    assert _rows(serving, "select count(*) from customer_scores_history where customer_id = ?", [erased]) == [(0,)]
    with duckdb.connect(str(copy / "warehouse.duckdb"), read_only=True) as con:  # the warehouse's copy too
        assert con.execute("select count(*), count(distinct as_of_date) from history.customer_scores_history "
                           "where customer_id = ? or as_of_date < '2026-09-30'", [erased]).fetchall() == [(0, 0)]


@pytest.mark.parametrize("block, code", [("0", 0), ("10", 1)])
def test_a_stale_source_warns_then_blocks(block, code, small_sample, tmp_path, monkeypatch, capfd):
    """The sample's newest order is 2026-09-30: a night of 2026-10-20 is 20 days past it."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    monkeypatch.setenv("CRM_MAX_SOURCE_AGE_DAYS", "7")
    monkeypatch.setenv("CRM_BLOCK_SOURCE_AGE_DAYS", block)
    assert main(["validate", "--source", str(small_sample), "--as-of", "2026-10-20", "--serving",
                 str(tmp_path / "serving.duckdb"), "--quiet"]) == code
    out, err = capfd.readouterr()
    said = "the newest order that keeps the contract is dated 2026-09-30, 20 days before the as-of date 2026-10-20"
    if code:
        assert f"stale source: {said}: the source may not have moved since (limit 10 days, CRM_BLOCK_SOURCE_AGE_DAYS)" \
            in err
    else:
        assert f"stale source? {said}" in out + err and "(warning after 7 days, CRM_MAX_SOURCE_AGE_DAYS)" in out + err
        assert "The source passes every check of a night" in out


def test_the_history_keeps_recent_nights_and_earlier_month_ends():
    from datetime import date, timedelta

    from orchestration.score_history import Retention

    nights = [date(2025, 6, 1) + timedelta(days=i) for i in range(487)]  # 2025-06-01 .. 2026-09-30, every night
    nights.remove(date(2026, 7, 31))  # July's last night failed: its last published night is the 30th
    kept = Retention(days=35, months=12).kept(nights)
    assert kept[:2] == [date(2025, 9, 30), date(2025, 10, 31)]  # twelve months back: September 2025's last night
    assert date(2026, 7, 30) in kept and date(2026, 6, 30) in kept and date(2026, 7, 29) not in kept
    assert [d for d in kept if d >= date(2026, 8, 26)] == [date(2026, 8, 26) + timedelta(days=i) for i in range(36)]
    assert len(kept) == 11 + 36  # month ends of 2025-09 .. 2026-07, then every night from 2026-08-26 (35 days back)
    assert Retention(days=0, months=0).kept(nights) == [date(2026, 9, 30)]
    assert Retention().kept([]) == []
