"""The configurable scoring pieces on their own: potential weights, tier bounds, the next-best-action rule
table, behavioural clusters and the next-category blend."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from ml.actions import ActionRulesError, load_rules, next_best_actions
from ml.clusters import behaviour_clusters
from ml.next_category import next_category
from ml.potential import parse_weights, potential_score
from ml.ranking import parse_tier_bounds, potential_rank, priority_tier


def test_weights_parse_and_reject_nonsense():
    assert parse_weights("value=1") == {"value": 1.0, "retention": 0.0, "headroom": 0.0, "reach": 0.0}
    for bad in ["value=x", "loyalty=1", "value=-1", "value=0"]:
        with pytest.raises(ValueError, match="potential weights"):
            parse_weights(bad)
    parts = pd.DataFrame({"value": [1.0, 0.0], "retention": [0.0, 1.0], "headroom": [0.5, 0.5], "reach": [1.0, 1.0]})
    assert potential_score(parts, parse_weights("value=1")).tolist() == [100.0, 0.0]
    assert potential_score(parts, parse_weights("retention=3,reach=1")).tolist() == [25.0, 100.0]


def test_tier_bounds_are_configurable_and_checked():
    rank = potential_rank(pd.Series(np.arange(100.0)), pd.Series(np.zeros(100)), pd.Series(np.arange(100).astype(str)))
    tiers = priority_tier(rank, parse_tier_bounds("A=0.5,B=1.0"))
    assert tiers.value_counts().to_dict() == {"A": 50, "B": 50}
    for bad in ["A=0.5,B=0.9", "A=0.6,B=0.3,C=1", "A=x"]:
        with pytest.raises(ValueError, match="tier bounds"):
            parse_tier_bounds(bad)


def _scores(**columns):
    base = {"priority_tier": "A", "lifecycle_stage": "loyal", "rfm_segment": "Champions", "churn_probability": 0.1}
    base.update(columns)
    return pd.DataFrame({k: [v] for k, v in base.items()})


@pytest.mark.parametrize("row, consent, channel, expected", [
    (_scores(), True, "sms", ("upsell", "sms")),
    (_scores(), False, "sms", ("account_review", "account_manager")),
    (_scores(churn_probability=0.7), True, None, ("retention_call", "phone")),
    (_scores(priority_tier="C", lifecycle_stage="lapsed", churn_probability=0.9), True, None, ("win_back_offer", "email")),
    (_scores(priority_tier="C", lifecycle_stage="prospect", churn_probability=0.9), True, "web", ("onboarding", "web")),
    (_scores(priority_tier="C", lifecycle_stage="prospect", churn_probability=0.9), None, "web", ("consent_request", "service_contact")),
    (_scores(priority_tier="B"), True, "email", ("cross_sell", "email")),
    (_scores(priority_tier="D", lifecycle_stage="repeat"), True, "phone", ("nurture", "email")),
    (_scores(priority_tier="D", lifecycle_stage="churned", churn_probability=0.99), True, "phone", ("no_action", "none")),
])
def test_the_default_action_table(row, consent, channel, expected):
    out = next_best_actions(row, pd.Series([consent], dtype=object), pd.Series([channel], dtype=object), load_rules())
    assert (out.next_best_action.iloc[0], out.action_channel.iloc[0]) == expected
    assert out.action_reason.iloc[0]


def test_a_custom_action_table_is_used_and_broken_ones_are_refused(tmp_path):
    custom = tmp_path / "rules.csv"
    custom.write_text("action,channel,priority_tiers,lifecycle_stages,rfm_segments,min_churn,max_churn,marketing_consent,why\n"
                      "retention_call,phone,,,,0.2,,yes,anyone at some risk\n"
                      "no_action,none,,,,,,,everyone else\n")
    rules = load_rules(custom)
    frame = pd.concat([_scores(churn_probability=0.3), _scores(churn_probability=0.1)], ignore_index=True)
    out = next_best_actions(frame, pd.Series([True, True]), pd.Series([None, None], dtype=object), rules)
    assert out.next_best_action.tolist() == ["retention_call", "no_action"]
    custom.write_text(custom.read_text().replace("no_action,none,,,,,,,everyone else", "no_action,none,A,,,,,,only A"))
    with pytest.raises(ActionRulesError, match="last rule must have no conditions"):
        load_rules(custom)
    custom.write_text(custom.read_text().replace("retention_call", "send_flowers"))
    with pytest.raises(ActionRulesError, match="row 2: unknown action 'send_flowers'"):
        load_rules(custom)


def _features(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    orders = rng.poisson(3, n) * (rng.random(n) > 0.2)
    return pd.DataFrame({
        "n_orders": orders, "monetary_total": orders * rng.gamma(2, 40, n), "recency_days": rng.integers(1, 700, n),
        "tenure_days": rng.integers(30, 2000, n), "n_categories": np.minimum(orders, rng.integers(1, 6, n)),
        "n_interactions_90d": rng.poisson(2, n), "order_trend": rng.uniform(-1, 1, n),
    })


def test_clusters_are_deterministic_described_and_put_prospects_apart():
    features = _features(3000)
    first, second = behaviour_clusters(features), behaviour_clusters(features)
    assert np.array_equal(first.cluster, second.cluster) and 3 <= first.k <= 7
    assert (first.cluster[features.n_orders.to_numpy() == 0] == 0).all()
    assert (first.cluster[features.n_orders.to_numpy() > 0] > 0).all()
    assert set(first.descriptions) == set(range(first.k + 1)) and -1 <= first.silhouette <= 1


def test_next_category_blends_own_recent_history_with_similar_customers():
    ids = pd.Series(["a", "b", "c"])
    categories = pd.DataFrame({
        "customer_id": ["a", "a", "b"],
        "product_category": ["books", "toys", "toys"],
        "n_orders": [20, 20, 1],
        "last_ordered_at": pd.to_datetime(["2026-09-01", "2024-09-01", "2026-09-01"]),
    })
    out = next_category(ids, np.array([1, 1, 0]), categories, date(2026, 9, 30))
    assert out.next_category.tolist()[0] == "books"  # as many toys, but bought long ago
    assert out.next_category_probability.between(0, 1).all()
    assert out.next_category.iloc[2] in {"books", "toys"}  # no history: what buyers buy


@pytest.mark.slow
def test_scoring_reads_only_its_feature_columns_and_scores_the_same(two_publications):
    """The scoring step reads ``FEATURE_COLUMNS`` of marts.customer_features, not all of them (memory at a million
    customers): on a real run's warehouse, the scores from those columns equal the scores from every column."""
    import duckdb

    from ml.scoring import FEATURE_COLUMNS, score_customers

    work, _, _ = two_publications
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        every = con.sql("select * from marts.customer_features").df()
        value = con.sql("select * from scores.customer_value").df()
        churn = con.sql("select * from scores.customer_churn").df()
        as_of = every.as_of_date.iloc[0]
        categories = con.execute("select customer_id, product_category, n_orders, last_ordered_at "
                                 "from intermediate.int_customer_categories where cutoff_date = ?", [as_of]).df()
    assert len(FEATURE_COLUMNS) < len(every.columns) / 4
    full, _ = score_customers(every, value, churn, run_id="r", categories=categories)
    narrow, _ = score_customers(every[FEATURE_COLUMNS], value, churn, run_id="r", categories=categories)
    pd.testing.assert_frame_equal(full, narrow)


@pytest.mark.slow
def test_the_scoring_step_writes_the_same_scores_in_batches(two_publications, tmp_path):
    """The scoring step computes every percentile, rank, tier and cluster over all customers, then writes the
    per-customer columns batch by batch, reading each batch's reasons, keys, categories and last publication's
    segments by customer_id range: on a copy of a real run, batches of 257 customers write the run's scores."""
    import shutil

    import dagster as dg
    import duckdb

    from ml.scoring import PREVIOUS, score_customers
    from orchestration.assets.scoring import customer_scores
    from orchestration.settings import PipelineSettings

    work, _, second = two_publications
    for name in ("warehouse.duckdb", "serving.duckdb"):
        shutil.copy2(work / name, tmp_path / name)
    settings = PipelineSettings(warehouse_path=str(tmp_path / "warehouse.duckdb"),
                                serving_path=str(tmp_path / "serving.duckdb"), scoring_batch_rows=257)
    result = dg.materialize([customer_scores], resources={"settings": settings},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    query = "select * exclude (run_id) from scores.customer_scores order by customer_id"
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        published = con.sql(query).df()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        batched = con.sql(query).df()
        assert con.sql("select count(*) from information_schema.tables "
                       "where table_name = 'customer_scores__next'").fetchall() == [(0,)]
    assert len(published) > 4 * 257
    previous = [f"previous_{k}" for k in PREVIOUS]
    pd.testing.assert_frame_equal(batched.drop(columns=previous), published.drop(columns=previous))
    # last night's segments come from the publication: here the very run these scores came from
    for k in PREVIOUS:
        assert batched[f"previous_{k}"].astype(object).tolist() == published[k].astype(object).tolist(), k

    # the function alone: batches of 199 give the frame one batch gives
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        inputs = dict(features=con.sql("select * from marts.customer_features").df(),
                      value=con.sql("select * from scores.customer_value").df(),
                      churn=con.sql("select * from scores.customer_churn").df())
        categories = con.execute("select customer_id, product_category, n_orders, last_ordered_at from "
                                 "intermediate.int_customer_categories where cutoff_date = ?",
                                 [inputs["features"].as_of_date.iloc[0]]).df()
    whole, _ = score_customers(**inputs, run_id=second, categories=categories)
    parts, _ = score_customers(**inputs, run_id=second, categories=categories, batch_rows=199)
    pd.testing.assert_frame_equal(whole, parts)
    # and the ranks over everyone cut into 16 buckets, as Spark cuts them, give the same scores
    bucketed, _ = score_customers(**inputs, run_id=second, categories=categories, rank_buckets=16)
    pd.testing.assert_frame_equal(whole, bucketed)


@pytest.mark.parametrize("buckets", [1, 2, 7, 64])
def test_the_engine_percentiles_and_ranks_are_exact_in_any_number_of_buckets(buckets):
    """Scoring computes the percentiles that compare a customer with everyone, and the rank, in SQL cut into
    buckets by value so that a distributed engine ranks in parallel (ml/ranks.py): whatever the buckets, the
    percentiles equal pandas' ``rank(method="average", pct=True)`` (ties, nulls, descending order, a subset),
    the rank equals ``row_number()`` over the whole order and the group position equals the one-window one."""
    from ml.ranks import cut_points, percentile_query, rank_query, sample_rows
    from orchestration.warehouse import DuckDBWarehouse

    rng = np.random.default_rng(3)
    n = 2000
    x = pd.Series(rng.integers(0, 40, n).astype(float))
    x[rng.random(n) < 0.05] = np.nan
    score = np.round(rng.random(n) * 10, 1)  # ties in the first key, broken by the second and the id
    frame = pd.DataFrame({"customer_id": [f"C{i:05d}" for i in rng.permutation(n)], "x": x, "g": rng.integers(0, 2, n),
                          "score": score, "clv": np.round(rng.random(n), 1), "grp": rng.choice(["a", "b", "c"], n)})
    warehouse = DuckDBWarehouse.in_memory()
    warehouse.write("t", frame)
    sample = sample_rows(warehouse, "select * from t", list(frame.columns), max(buckets, 2))

    def percentiles(descending, g_one=False):
        rows = sample[sample.g == 1] if g_one else sample
        points = cut_points(rows, [("x", descending)], buckets)
        assert (len(points) > 1) == (buckets > 2)
        table = warehouse.frame(percentile_query(f"select * from t {'where g = 1' if g_one else ''}", "x",
                                                 descending, points))
        return dict(zip(table.pct_value, table.pct))

    up, down, within = percentiles(False), percentiles(True), percentiles(False, g_one=True)
    np.testing.assert_array_equal(x.map(up).to_numpy(), x.rank(method="average", pct=True).to_numpy())
    np.testing.assert_array_equal(x.map(down).to_numpy(), x.rank(method="average", pct=True, ascending=False).to_numpy())
    np.testing.assert_array_equal(x[frame.g == 1].map(within).to_numpy(),
                                  x[frame.g == 1].rank(method="average", pct=True).to_numpy())
    assert x.map(up).isna().sum() == x.isna().sum() > 0

    keys = [("score", True), ("clv", True), ("customer_id", False)]
    got = warehouse.frame(f"select * from ({rank_query('select * from t', keys, 'grp', cut_points(sample, keys, buckets))}"
                          ") r order by customer_id")
    want = warehouse.frame("""
        select customer_id, row_rank, cast(row_number() over (partition by grp order by row_rank) as double)
               / count(*) over (partition by grp) as group_pct
        from (select *, row_number() over (order by score desc, clv desc, customer_id) as row_rank from t) r
        order by customer_id""")
    pd.testing.assert_frame_equal(got, want)
