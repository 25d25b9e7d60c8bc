"""The whole nightly job, run for real through Dagster (``crm-potential run`` in-process) on generated data."""

from __future__ import annotations

import decimal
import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from data_quality.contract import CUSTOMERS, ORDERS
from ml.scoring import SCORE_COLUMNS
from orchestration.cli import main
from tests.conftest import build_once, run_args

pytestmark = pytest.mark.slow
CONTRACT_SCORE_COLUMNS = [
    "customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_model", "potential_score", "potential_rank", "priority_tier", "rfm_segment",
    "lifecycle_stage", "value_segment", "next_best_action", "next_category", "top_reasons", "model_versions",
]


def _table(db: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(sql).to_arrow_table().to_pandas()


def _scores_without_run_id(db: Path) -> pd.DataFrame:
    return _table(db, "select * exclude (run_id) from customer_scores order by customer_id")


@pytest.fixture(scope="module")
def published(small_sample, tmp_path_factory):
    """Two runs of the same night into a fresh work folder; (folder, the first run's scores). Read-only."""
    def build(work: Path) -> None:
        assert main(run_args(small_sample, work)) == 0
        shutil.copy2(work / "serving.duckdb", work / "first_serving.duckdb")
        assert main(run_args(small_sample, work)) == 0

    work, _ = build_once(tmp_path_factory, "published_twice", build)
    return work, _scores_without_run_id(work / "first_serving.duckdb")


def test_published_scores_follow_the_contract(published, small_sample):
    work, _ = published
    serving = work / "serving.duckdb"
    scores = _table(serving, "select * from customer_scores")
    for column in CONTRACT_SCORE_COLUMNS:
        assert column in scores.columns
    assert list(scores.columns) == SCORE_COLUMNS
    known = duckdb.execute(
        f"select count(distinct customer_id) from read_csv('{small_sample}/customers.csv', all_varchar=true)"
    ).fetchone()[0]
    assert len(scores) == known and scores.customer_id.is_unique
    assert sorted(scores.potential_rank) == list(range(1, len(scores) + 1))
    assert scores.churn_probability.between(0, 1).all()
    prospects = scores.lifecycle_stage == "prospect"
    assert scores.p_alive[prospects].isna().all() and scores.p_alive[~prospects].between(0, 1).all()
    assert (scores.clv >= 0).all() and scores.potential_score.between(0, 100).all()
    assert str(scores.as_of_date.iloc[0]) == "2026-09-30"  # latest order date of the sample
    assert set(scores.priority_tier) == {"A", "B", "C", "D"}


def test_model_features_reach_python_as_numbers(published):
    """Counts summed in SQL are 128-bit integers in DuckDB, which Arrow hands to pandas as Python Decimal
    objects: ten times the memory, and silently dropped by the models' numeric feature selection."""
    work, _ = published
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        wide = con.execute("select table_name, column_name, data_type from information_schema.columns "
                           "where table_schema = 'marts' and (data_type = 'HUGEINT' or data_type like 'DECIMAL%')"
                           ).fetchall()
    assert wide == []
    features = _table(work / "warehouse.duckdb", "select * from marts.customer_features")
    decimals = [c for c in features.columns if features[c].dtype == object
                and features[c].map(lambda v: isinstance(v, decimal.Decimal)).any()]
    assert decimals == []
    assert pd.api.types.is_integer_dtype(features.n_complaint_90d) and pd.api.types.is_integer_dtype(features.n_orders)


def test_run_is_recorded_and_repeat_runs_are_identical(published):
    work, first = published
    serving = work / "serving.duckdb"
    runs = _table(serving, "select * from pipeline_runs order by finished_at")
    assert len(runs) == 2 and runs.published.all() and (runs.status == "success").all()
    last = runs.iloc[-1]
    assert json.loads(last.rows_in)["customers"] > json.loads(last.rows_in)["campaigns"] > 0
    assert last.rows_out == len(first) and last.checks_failed == 0 and last.checks_passed > 50
    assert "dbt_models" in json.loads(last.stage_seconds)
    scores_run = _table(serving, "select distinct run_id from customer_scores").run_id.tolist()
    assert scores_run == [last.run_id]
    second = _scores_without_run_id(serving)
    previous = [c for c in second.columns if c.startswith("previous_")]
    pd.testing.assert_frame_equal(first.drop(columns=previous), second.drop(columns=previous))
    assert first[previous].isna().all().all()  # the first run had no earlier publication
    assert (second.previous_rfm_segment == first.rfm_segment).all()  # the second knows the first's segments
    assert (second.previous_potential_rank == first.potential_rank).all()
    assert json.loads(last.model_versions)["clv"].startswith(("bgnbd_gg@", "mbgnbd_gg@", "pareto_nbd_gg@", "hgb_poisson@"))


def perf_task(work: Path, task: str) -> pd.DataFrame:
    return _table(work / "serving.duckdb", f"""
        select * from model_performance where task = '{task}'
          and run_id = (select run_id from pipeline_runs order by finished_at desc limit 1)""")


def test_value_champion_beats_naive_baseline_on_held_out_window(published):
    work, _ = published
    perf = _table(work / "serving.duckdb", """
        select * from model_performance where task = 'clv_spend'
          and run_id = (select run_id from pipeline_runs order by finished_at desc limit 1)""")
    metrics = perf.pivot_table(index="model_name", columns="metric", values="value")
    btyd = {"bgnbd_gg", "mbgnbd_gg", "pareto_nbd_gg"}
    assert {"hgb_poisson", "naive_last_period"} <= set(metrics.index) and len(btyd & set(metrics.index)) >= 2
    champions = perf.loc[perf.is_champion, "model_name"].unique()
    assert len(champions) == 1 and champions[0] in btyd | {"hgb_poisson"}
    champion = metrics.loc[champions[0]]
    assert champion.normalised_gini > metrics.loc["naive_last_period"].normalised_gini
    # every BTYD candidate was scored on the selection window, and exactly one was chosen there
    selection = _table(work / "serving.duckdb", """
        select * from model_performance where task = 'btyd_selection' and metric = 'poisson_deviance'
          and run_id = (select run_id from pipeline_runs order by finished_at desc limit 1)""")
    assert len(selection) >= 2 and selection.is_champion.sum() == 1
    chosen = selection.loc[selection.is_champion].iloc[0]
    assert chosen.value == selection.value.min()
    # the 80 % intervals cover about 80 % of what happened in the held-out window, and hold their point
    purchases = perf_task(work, "clv_purchases")
    coverage = purchases.loc[purchases.metric == "interval_coverage", "value"]
    assert len(coverage) == 1 and 0.7 <= coverage.iloc[0] <= 0.95
    intervals = _table(work / "serving.duckdb", "select * from customer_scores")
    assert (intervals.clv_low <= intervals.clv).all() and (intervals.clv <= intervals.clv_high).all()
    assert (intervals.expected_purchases_low <= intervals.expected_purchases).all()
    assert (intervals.expected_purchases <= intervals.expected_purchases_high).all()
    assert (intervals.clv_high > intervals.clv_low).mean() > 0.5
    assert abs(champion.total_ratio - 1) <= 0.10
    # the held-out window ends at the as-of date and starts one CLV horizon earlier; training ends there
    row = perf[perf.model_name == "hgb_poisson"].iloc[0]
    assert str(row.test_window_end) == "2026-09-30" and str(row.test_window_start) == "2025-09-30"
    assert str(row.train_window_end) == "2025-09-30" and str(row.train_window_start) == "2024-09-30"
    scores = _table(work / "serving.duckdb", "select clv_model, clv, expected_spend from customer_scores")
    assert scores.clv_model.str.startswith(champions[0]).all()
    assert (scores.clv <= scores.expected_spend + 1e-9).all()  # discounted


def test_churn_champion_beats_both_baselines_and_is_reused(published):
    work, _ = published
    perf = _table(work / "serving.duckdb", "select * from model_performance where task = 'churn'")
    runs = perf.run_id.unique()
    assert len(runs) == 2
    first = perf[perf.run_id == runs[0]].pivot_table(index="model_name", columns="metric", values="value")
    assert {"churn_hgb", "churn_logit", "churn_bgnbd", "churn_recency"} <= set(first.index)
    champions = perf[(perf.run_id == runs[0]) & perf.is_champion].model_name.unique()
    candidates = ("churn_hgb", "churn_logit", "churn_bgnbd")
    assert len(champions) == 1 and champions[0] in candidates
    hgb = first.loc[champions[0]]  # the published probability is the back-test winner
    assert hgb.roc_auc == max(first.loc[m].roc_auc for m in candidates)
    for baseline in ("churn_bgnbd", "churn_recency"):
        assert first.loc["churn_hgb"].roc_auc > first.loc[baseline].roc_auc  # the learned model earns its place
        assert first.loc["churn_hgb"].brier < first.loc[baseline].brier
    assert {f"calib_d{d:02d}_observed" for d in range(1, 11)} <= set(first.columns)
    # the second run on the same data reused the champion instead of retraining
    decisions = [json.loads(line) for line in (work / "models" / "churn" / "decisions.jsonl").read_text().splitlines()]
    assert [d["action"] for d in decisions] == ["retrain", "reuse"]
    card = json.loads((work / "models" / "churn" / decisions[0]["challenger"] / "card.json").read_text())
    assert card["metrics"]["roc_auc"] == pytest.approx(hgb.roc_auc)
    assert {"data_fingerprint", "library_versions", "features", "train_cutoffs"} <= set(card)
    scores = _table(work / "serving.duckdb", "select churn_flag, top_reasons, model_versions from customer_scores")
    assert json.loads(scores.model_versions.iloc[0])["churn"] == decisions[0]["challenger"]
    assert scores.top_reasons.str.len().gt(0).all()
    assert scores.churn_flag.str.startswith("prospect").any()


def _truncate(src: Path, dst: Path, as_of: str) -> None:
    """Copy of the source with every row dated after the as-of date removed."""
    dst.mkdir()
    end = f"timestamp '{as_of}' + interval 1 day"
    filters = {
        "customers": f"cast(created_at as timestamp) < {end}",
        "orders": f"cast(ordered_at as timestamp) < {end}",
        "interactions": f"cast(occurred_at as timestamp) < {end}",
        "campaigns": f"cast(started_at as timestamp) < {end}",
    }
    for name, where in filters.items():
        duckdb.execute(
            f"copy (select * from read_csv('{src}/{name}.csv', all_varchar=true) where {where}) "
            f"to '{dst}/{name}.csv' (header)"
        )


def _add_late_rows(folder: Path) -> None:
    """Rows dated after 2026-06-30 that must not move any feature as of that date."""
    con = duckdb.connect()
    customers = f"read_csv('{folder}/customers.csv', all_varchar=true)"
    late_records = con.sql(
        f"select * replace ('ZZ' as country, '2026-10-15 00:00:00' as updated_at, 'false' as marketing_consent) "
        f"from {customers} using sample 10 percent (reservoir, 1)"
    ).to_arrow_table()
    orders = f"read_csv('{folder}/orders.csv', all_varchar=true)"
    late_orders = con.sql(
        f"""select 'LATE-' || row_number() over () as order_id, customer_id, '2026-07-01 10:00:00' as ordered_at,
                   '2500' as amount, 'completed' as status, 'EUR' as currency, 'books' as product_category,
                   '1' as quantity, 'online' as sales_channel
            from (select distinct customer_id from {orders}) limit 300"""
    ).to_arrow_table()
    con.register("late_records", late_records)
    con.register("late_orders", late_orders)
    con.execute(f"copy (select * from {customers} union all by name select * from late_records) to '{folder}/customers2.csv' (header)")
    con.execute(f"copy (select * from {orders} union all by name select * from late_orders) to '{folder}/orders2.csv' (header)")
    (folder / "customers2.csv").replace(folder / "customers.csv")
    (folder / "orders2.csv").replace(folder / "orders.csv")


def test_nothing_after_the_as_of_date_influences_features_or_scores(small_sample, tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_PSEUDONYM_KEY", "one key for both work folders")  # else each makes its own
    as_of = "2026-06-30"
    truncated, full = tmp_path / "truncated", tmp_path / "full"
    _truncate(small_sample, truncated, as_of)
    shutil.copytree(small_sample, full)
    _add_late_rows(full)
    results = {}
    for name, source in (("truncated", truncated), ("full", full)):
        work = tmp_path / f"work_{name}"
        assert main(run_args(source, work, "--as-of", as_of)) == 0
        features = _table(work / "warehouse.duckdb", "select * from marts.customer_features order by customer_id")
        results[name] = (features, _scores_without_run_id(work / "serving.duckdb"))
    pd.testing.assert_frame_equal(results["truncated"][0], results["full"][0])
    pd.testing.assert_frame_equal(results["truncated"][1], results["full"][1])
    assert str(results["full"][0].as_of_date.iloc[0]) == as_of
    assert results["full"][0].last_purchase_date.max().isoformat() <= as_of

    # every back-dated cutoff is an as-of date of its own: the features the models train on at a cutoff
    # equal what a run on that day (with only the rows dated by then) computes
    cutoff = "2026-04-01"  # as_of - churn horizon
    early = tmp_path / "early"
    _truncate(small_sample, early, cutoff)
    assert main(run_args(early, tmp_path / "work_early", "--as-of", cutoff)) == 0
    on_the_day = _table(tmp_path / "work_early" / "warehouse.duckdb", "select * from marts.customer_features order by customer_id")
    from_history = _table(tmp_path / "work_full" / "warehouse.duckdb",
                          f"select * from marts.customer_features_history where as_of_date = '{cutoff}' order by customer_id")
    assert len(from_history) > 500
    pd.testing.assert_frame_equal(on_the_day, from_history)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_minimal_source_runs_and_contract_breaks_stop_before_publishing(small_sample, tmp_path, capsys, monkeypatch):
    minimal = tmp_path / "minimal"
    minimal.mkdir()
    for entity in (CUSTOMERS, ORDERS):
        cols = ", ".join(entity.required_columns)
        duckdb.execute(
            f"copy (select {cols} from read_csv('{small_sample}/{entity.name}.csv', all_varchar=true)) "
            f"to '{minimal}/{entity.name}.csv' (header)"
        )
    work = tmp_path / "work"
    # too few customers for the churn model: the documented fallback is the BG/NBD probability
    monkeypatch.setenv("CRM_CHURN_MIN_CUSTOMERS", "100000")
    assert main(run_args(minimal, work)) == 0
    monkeypatch.delenv("CRM_CHURN_MIN_CUSTOMERS")
    serving = work / "serving.duckdb"
    scores = _table(serving, "select * from customer_scores")
    assert scores.potential_rank.max() == len(scores) > 1000
    assert scores.churn_probability.between(0, 1).all()
    assert json.loads(scores.model_versions.iloc[0])["churn"].endswith("_no_purchase (fallback)")
    decision = json.loads((work / "models" / "churn" / "decisions.jsonl").read_text().splitlines()[-1])
    assert decision["action"] == "fallback" and "the configured minimum is 100000" in decision["error"]
    before = _digest(serving)
    capsys.readouterr()

    broken = tmp_path / "broken"
    shutil.copytree(minimal, broken)
    duckdb.execute(
        f"copy (select order_id, customer_id, ordered_at from read_csv('{minimal}/orders.csv', all_varchar=true)) "
        f"to '{broken}/orders.csv' (header)"
    )
    assert main(run_args(broken, work)) == 1
    err = capsys.readouterr().err
    assert "required column(s) amount missing" in err and "orders.csv" in err
    assert "nothing was published" in err
    assert _digest(serving) == before

    (broken / "orders.csv").unlink()  # said before Dagster starts: one line, no run
    assert main(run_args(broken, work)) == 1
    err = capsys.readouterr().err
    assert "orders: required source file not found" in err and "nothing was run" in err
    assert len(err.strip().splitlines()) == 1
    assert _digest(serving) == before
    runs = _table(serving, "select status from pipeline_runs")
    assert runs.status.tolist() == ["success"]  # failures wait in the warehouse until the next good run
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        statuses = sorted(r[0] for r in con.execute("select status from ops.pipeline_runs").fetchall())
    assert statuses == ["failed", "success"]


def test_another_source_and_a_back_dated_run_never_use_a_champion_they_should_not(published, small_sample, tmp_path,
                                                                                     monkeypatch):
    """The bug this guards against: after a run on the sample, a run on another source (only the required
    columns) reused the sample's churn champion from the shared registry, and a back-dated run kept a model
    trained for a later as-of date."""
    models = tmp_path / "models"  # the published run's registry (with its champion), copied: it is shared
    shutil.copytree(published[0] / "models", models)
    registry = models / "churn"
    minimal = tmp_path / "minimal"
    minimal.mkdir()
    for entity in (CUSTOMERS, ORDERS):
        duckdb.execute(
            f"copy (select {', '.join(entity.required_columns)} from read_csv('{small_sample}/{entity.name}.csv', "
            f"all_varchar=true)) to '{minimal}/{entity.name}.csv' (header)")
    other = tmp_path / "other"
    args = ["run", "--source", str(minimal), "--warehouse", str(other / "warehouse.duckdb"),
            "--serving", str(other / "serving.duckdb"), "--models", str(models), "--quiet"]

    def published_churn_card(as_of: str = "2026-09-30") -> dict | None:
        """The churn card behind the night's scores (a back-dated night's are in the history, not the latest)."""
        versions = json.loads(_table(other / "serving.duckdb", "select model_versions from pipeline_runs where "
                                     f"published and as_of_date = '{as_of}'").model_versions.iloc[-1])
        folder = registry / versions["churn"]
        return json.loads((folder / "card.json").read_text()) if folder.exists() else None

    assert main(args) == 0
    decision = json.loads((registry / "decisions.jsonl").read_text().splitlines()[-1])
    assert decision["champion"] is None and decision["action"] == "retrain"  # the sample's champion is not seen
    card = published_churn_card()
    assert card["warehouse"] == str((other / "warehouse.duckdb").resolve()) and card["source"] == str(minimal.resolve())
    assert card["trained_for_as_of"] == "2026-09-30"

    monkeypatch.setenv("CRM_MAX_DRIFT_PSI", "10")  # a back-dated night legitimately scores differently
    assert main([*args, "--as-of", "2026-06-30"]) == 0
    decision = json.loads((registry / "decisions.jsonl").read_text().splitlines()[-1])
    assert decision["champion"] is None  # the champion trained for 2026-09-30 is not usable on 2026-06-30
    card = published_churn_card("2026-06-30")
    assert card is None or (card["trained_for_as_of"] <= "2026-06-30" and card["label_window_end"] <= "2026-06-30")
