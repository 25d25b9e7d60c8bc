"""next_category's top-k ranking and its back-test against the popular and most-frequent baselines."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from ml.clusters import behaviour_clusters
from ml.next_category import (CLUSTER_COLUMNS, MODEL, MOST_FREQUENT, POPULAR, backtest_next_category,
                              beats_baselines, bought_in_window, next_category, performance_rows, popular_ranking)

CUTOFF = date(2026, 6, 30)
AS_OF = date(2026, 9, 30)


def _frame(rows: list[tuple], when: str) -> pd.DataFrame:
    """(customer, category, n_orders) rows -> an int_customer_categories slice (all last ordered on ``when``)."""
    out = pd.DataFrame(rows, columns=["customer_id", "product_category", "n_orders"])
    out["last_ordered_at"] = pd.Timestamp(when)
    out["category_rank"] = (out.sort_values(["n_orders", "product_category"], ascending=[False, True])
                            .groupby("customer_id").cumcount() + 1).sort_index()
    return out


# a: books lover who buys books again; b: one toy, then garden (new to b); c, e: nothing in the window;
# d: no history, buys kitchen (sold by nobody before); f: joined after the cutoff (not evaluated)
AT_CUTOFF = _frame([("a", "books", 5), ("a", "toys", 1), ("b", "toys", 1), ("c", "toys", 2), ("c", "garden", 1),
                    ("e", "toys", 1)], "2026-06-30")
NOW = _frame([("a", "books", 6), ("a", "toys", 1), ("b", "toys", 1), ("b", "garden", 1), ("c", "toys", 2),
              ("c", "garden", 1), ("d", "kitchen", 1), ("e", "toys", 1), ("f", "books", 1)], "2026-09-30")
IDS = pd.Series(["a", "b", "c", "d", "e"])


def _wide(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.pivot(index="model_name", columns="metric", values="value")


def test_bought_in_window_is_the_categories_whose_count_grew():
    got = bought_in_window(AT_CUTOFF, NOW).sort_values(["customer_id", "product_category"])
    assert list(map(tuple, got.to_numpy())) == [("a", "books"), ("b", "garden"), ("d", "kitchen"), ("f", "books")]


def test_popular_ranking_counts_customers_then_orders():
    # toys: 4 customers; books: 1 customer with 5 orders; garden: 1 customer with 1 order
    assert popular_ranking(AT_CUTOFF).tolist() == ["toys", "books", "garden"]


def test_baselines_on_hand_made_customers():
    clusters = np.array([1, 1, 1, 0, 1])
    wide = _wide(backtest_next_category(AT_CUTOFF, NOW, clusters, IDS, CUTOFF))
    # evaluated: a, b, d (c and e bought nothing in the window, f is unknown at the cutoff)
    assert (wide["n_customers"] == 3).all()
    # popular [toys, books, garden]: nobody bought toys; a bought books, b garden, d kitchen (never predicted)
    assert wide.loc[POPULAR, "hit_rate_top1"] == 0
    assert wide.loc[POPULAR, "hit_rate_top3"] == pytest.approx(2 / 3)
    # most frequent: a [books, ...] is a top-1 hit (same category again); b [toys, books, garden] is a top-3
    # hit only (garden comes from the popular padding); d has no history: popular ranking, a miss
    assert wide.loc[MOST_FREQUENT, "hit_rate_top1"] == pytest.approx(1 / 3)
    assert wide.loc[MOST_FREQUENT, "hit_rate_top3"] == pytest.approx(2 / 3)


def test_model_hit_rates_match_its_published_ranking():
    clusters = np.array([1, 2, 2, 0, 1])
    metrics = backtest_next_category(AT_CUTOFF, NOW, clusters, IDS, CUTOFF)
    ranking = next_category(IDS, clusters, AT_CUTOFF, CUTOFF, top_k=3)
    bought = {"a": {"books"}, "b": {"garden"}, "d": {"kitchen"}}
    expected = {k: np.mean([bool(set(ranking.next_categories[IDS.tolist().index(c)][:k]) & cats)
                            for c, cats in bought.items()]) for k in (1, 3)}
    wide = _wide(metrics)
    assert wide.loc[MODEL, "hit_rate_top1"] == pytest.approx(expected[1])
    assert wide.loc[MODEL, "hit_rate_top3"] == pytest.approx(expected[3])
    # a's own history dominates (6 orders against a prior of 3): books, a hit; every hit rate is a share
    assert ranking.next_category[0] == "books"
    assert ((wide[["hit_rate_top1", "hit_rate_top3"]] >= 0) & (wide[["hit_rate_top1", "hit_rate_top3"]] <= 1)).all().all()
    assert (wide["hit_rate_top3"] >= wide["hit_rate_top1"]).all()


def test_model_beats_baselines_when_peers_foretell_a_new_category():
    # b and g are alike (one cluster); g bought garden heavily, so b's peers point to garden, which b then buys
    at = _frame([("b", "toys", 1), ("g", "garden", 9), ("h", "toys", 1), ("i", "toys", 1)], "2026-06-30")
    now = _frame([("b", "toys", 1), ("b", "garden", 1), ("g", "garden", 9), ("h", "toys", 1), ("i", "toys", 1)],
                 "2026-09-30")
    ids = pd.Series(["b", "g", "h", "i"])
    metrics = backtest_next_category(at, now, np.array([1, 1, 2, 2]), ids, CUTOFF)
    wide = _wide(metrics)
    assert wide.loc[MODEL, "hit_rate_top1"] == 1.0  # garden: 0.25 * toys(own) vs 0.75 * 0.9 garden (peers)
    assert wide.loc[POPULAR, "hit_rate_top1"] == 0.0 and wide.loc[MOST_FREQUENT, "hit_rate_top1"] == 0.0
    assert wide.loc[POPULAR, "hit_rate_top3"] == 1.0  # only two categories: top 3 holds both
    assert beats_baselines(metrics) == {"hit_rate_top1": True, "hit_rate_top3": False}


def test_next_category_top_k_keeps_the_published_columns():
    clusters = np.array([1, 2, 2, 0, 1])
    one = next_category(IDS, clusters, AT_CUTOFF, CUTOFF)
    three = next_category(IDS, clusters, AT_CUTOFF, CUTOFF, top_k=3)
    assert list(one.columns) == ["next_category", "next_category_probability"]
    pd.testing.assert_frame_equal(one, three[one.columns])
    assert [r[0] for r in three.next_categories] == one.next_category.tolist()
    assert all(len(r) == 3 and len(set(r)) == 3 for r in three.next_categories)
    empty = next_category(IDS, clusters, AT_CUTOFF.iloc[:0], CUTOFF, top_k=3)
    assert empty.next_category.isna().all() and all(r == () for r in empty.next_categories)
    with pytest.raises(ValueError, match="top_k"):
        next_category(IDS, clusters, AT_CUTOFF, CUTOFF, top_k=0)


def test_nothing_to_evaluate_gives_no_rows():
    clusters = np.zeros(len(IDS), dtype=int)
    assert backtest_next_category(AT_CUTOFF.iloc[:0], NOW, clusters, IDS, CUTOFF).empty  # nothing sold by c
    assert backtest_next_category(AT_CUTOFF, AT_CUTOFF, clusters, IDS, CUTOFF).empty  # nothing bought since
    with pytest.raises(ValueError, match="category_rank"):
        backtest_next_category(AT_CUTOFF.drop(columns="category_rank"), NOW, clusters, IDS, CUTOFF)


def test_performance_rows_mark_the_blend_as_champion():
    metrics = backtest_next_category(AT_CUTOFF, NOW, np.array([1, 1, 1, 0, 1]), IDS, CUTOFF)
    rows = performance_rows(metrics, run_id="r1", as_of=AS_OF, cutoff=CUTOFF)
    assert len(rows) == 9 and {r["task"] for r in rows} == {"next_category"}
    assert {r["model_name"] for r in rows if r["is_champion"]} == {MODEL}
    assert all(r["model_version"] == f"{r['model_name']}@{CUTOFF}" and r["test_window_start"] == CUTOFF
               and r["test_window_end"] == AS_OF and r["train_window_end"] == CUTOFF for r in rows)


def test_cluster_columns_are_enough_to_cluster():
    rng = np.random.default_rng(0)
    n = 200
    features = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "monetary_total": rng.gamma(2, 50, n),
                             "n_orders": rng.poisson(3, n), "recency_days": rng.integers(0, 400, n),
                             "tenure_days": rng.integers(0, 900, n), "n_categories": rng.integers(0, 5, n),
                             "n_interactions_90d": rng.poisson(2, n), "order_trend": rng.normal(0, 1, n)})
    assert list(features.columns) == CLUSTER_COLUMNS
    assert len(behaviour_clusters(features).cluster) == n


# ------------------------------------------------------------------------------------------- real pipeline
def test_pipeline_writes_the_next_category_backtest(two_publications):
    work, first, second = two_publications
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        perf = con.sql("select * from model_performance where task = 'next_category'").to_arrow_table().to_pandas()
    assert set(perf.run_id) == {first, second}
    for run_id, rows in perf.groupby("run_id"):
        wide = rows.pivot(index="model_name", columns="metric", values="value")
        assert set(wide.index) == {MODEL, POPULAR, MOST_FREQUENT}
        assert set(wide.columns) == {"hit_rate_top1", "hit_rate_top3", "n_customers"}
        hits = wide[["hit_rate_top1", "hit_rate_top3"]]
        assert ((hits >= 0) & (hits <= 1)).all().all() and (wide.hit_rate_top3 >= wide.hit_rate_top1).all()
        assert wide.n_customers.nunique() == 1 and wide.n_customers.iloc[0] > 0
        assert rows.loc[rows.is_champion, "model_name"].unique().tolist() == [MODEL]
        as_of = rows.as_of_date.iloc[0]
        assert (rows.test_window_end == as_of).all()
        assert (rows.test_window_start == as_of - timedelta(days=90)).all()
        print(f"\nnext_category back-test, run {run_id} as of {as_of}:\n{wide.to_string()}")

    # the last run's evaluated customers, straight from the orders: known at the cutoff, with a completed
    # categorised order after the cutoff date (the count growth in int_customer_categories is exact)
    last = perf[perf.run_id == second]
    as_of = last.as_of_date.iloc[0]
    cutoff = last.test_window_start.iloc[0]
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        direct = con.execute(
            """select count(distinct o.customer_id) from staging.stg_orders o
               join marts.customer_features_history f on f.customer_id = o.customer_id and f.as_of_date = ?
               where o.status = 'completed' and o.product_category is not null
                 and o.ordered_at >= cast(? as date) + 1 and o.ordered_at < cast(? as date) + 1""",
            [cutoff, cutoff, as_of]).fetchall()[0][0]
        pairs_direct = set(con.execute(
            """select distinct customer_id, product_category from staging.stg_orders
               where status = 'completed' and product_category is not null
                 and ordered_at >= cast(? as date) + 1 and ordered_at < cast(? as date) + 1""",
            [cutoff, as_of]).fetchall())
        cats = {d: con.sql("select * from intermediate.int_customer_categories where cutoff_date = ?",
                           params=[d]).to_arrow_table().to_pandas() for d in (cutoff, as_of)}
    grew = bought_in_window(cats[cutoff], cats[as_of])
    assert set(map(tuple, grew.to_numpy())) == pairs_direct
    assert last.loc[last.metric == "n_customers", "value"].iloc[0] == direct
