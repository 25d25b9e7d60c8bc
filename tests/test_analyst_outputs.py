"""What analysts and BI see: one segment of each kind, tier and action per customer; the generator's
truths land where they should; the analyst tables hold together and are documented; the example queries
run. The run report's browser test is in tests/test_report.py."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from orchestration.publication import DOCUMENTED_IN

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def serving(two_publications):
    work, _, _ = two_publications
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        yield con


def _one(con, sql, params=None):
    return con.execute(sql, params).fetchall()[0]


def test_every_customer_has_one_segment_of_each_kind_one_tier_one_action_and_gapless_ranks(serving):
    n, ids, lo, hi, ranks = _one(serving, "select count(*), count(distinct customer_id), min(potential_rank), "
                                          "max(potential_rank), count(distinct potential_rank) from customer_scores")
    assert n == ids > 1000 and (lo, hi, ranks) == (1, n, n)
    for column in ["rfm_segment", "lifecycle_stage", "value_segment", "behaviour_cluster", "behaviour_cluster_label",
                   "priority_tier", "next_best_action", "action_channel"]:
        assert _one(serving, f"select count(*) from customer_scores where {column} is null")[0] == 0, column
    assert {r[0] for r in serving.execute("select distinct priority_tier from customer_scores").fetchall()} == set("ABCD")
    k = _one(serving, "select count(distinct behaviour_cluster) - 1 from customer_scores")[0]
    assert 3 <= k <= 7  # buyer clusters, chosen by silhouette within K_RANGE
    # every buyer cluster has a description in words; the best-ranked customers mostly get an action
    assert _one(serving, "select count(*) from customer_scores where behaviour_cluster > 0 "
                         "and behaviour_cluster_label not like '%, %'")[0] == 0
    top = _one(serving, "select avg(case when next_best_action <> 'no_action' then 1 else 0 end) "
                        "from customer_scores where priority_tier = 'A'")[0]
    assert top > 0.8
    # the second run knows where everyone stood in the first publication
    moved = _one(serving, "select count(*) from customer_scores where previous_rfm_segment is not null")[0]
    assert moved > 0.9 * n


def test_generated_high_value_customers_rank_high_and_dropouts_land_at_risk(serving, small_sample):
    serving.execute(f"create or replace temp view truth as select * from read_parquet('{small_sample}/_truth.parquet')")
    high_value_in_ab, n_high, dropouts_flagged, n_drop = _one(serving, """
        with joined as (
            select s.*, t.dropped_out, t.death_at, t.has_purchase,
                   percent_rank() over (order by case when t.has_purchase and not t.dropped_out
                       then t.lambda_per_day * t.spend_mean * t.spend_shift else -1 end) as value_rank
            from customer_scores as s inner join truth as t on t.customer_id = s.customer_id
        )
        select
            avg(case when priority_tier in ('A', 'B') then 1.0 else 0 end) filter (where value_rank >= 0.8),
            count(*) filter (where value_rank >= 0.8),
            avg(case when lifecycle_stage in ('at risk', 'lapsed', 'churned') then 1.0 else 0 end)
                filter (where dropped_out and death_at <= as_of_date - interval 90 day),
            count(*) filter (where dropped_out and death_at <= as_of_date - interval 90 day)
        from joined""")
    assert n_high > 100 and n_drop > 100
    assert high_value_in_ab >= 0.7, f"only {high_value_in_ab:.0%} of the high-value, loyal customers are in tiers A/B"
    assert dropouts_flagged >= 0.85, f"only {dropouts_flagged:.0%} of the dropouts are at risk, lapsed or churned"


def test_analyst_tables_add_up_and_every_published_column_is_documented(serving):
    bad_share = _one(serving, "select count(*) from (select segment_type, cut_type, cut_value, sum(share_of_customers) s "
                              "from segment_summary group by all) where abs(s - 1) > 1e-9")[0]
    assert bad_share == 0
    n = _one(serving, "select count(*) from customer_scores")[0]
    totals = serving.execute("select segment_type, sum(customers) from segment_summary where cut_type = 'all' "
                             "group by segment_type").fetchall()
    assert len(totals) == 5 and all(total == n for _, total in totals)
    bad_conversion = _one(serving, "select count(*) from (select period_end, from_stage, sum(conversion_rate) s "
                                   "from lifecycle_funnel group by all) where abs(s - 1) > 1e-9")[0]
    assert bad_conversion == 0
    periods, latest = _one(serving, "select count(distinct period_end), sum(customers) filter (where is_latest_period) "
                                    "from lifecycle_funnel")
    assert periods >= 3 and latest == n
    campaigns = _one(serving, "select count(*), min(response_rate), max(response_rate), sum(revenue_after_response) "
                              "from campaign_effectiveness where is_campaign_total")
    assert campaigns[0] > 0 and 0 <= campaigns[1] <= campaigns[2] <= 1 and campaigns[3] > 0
    for table in DOCUMENTED_IN:
        undocumented = serving.execute("select column_name from duckdb_columns() where table_name = ? "
                                       "and comment is null", [table]).fetchall()
        assert undocumented == [], (table, undocumented)
        assert _one(serving, "select comment from duckdb_tables() where table_name = ?", [table])[0]


def _queries() -> dict[str, str]:
    text = (ROOT / "examples" / "queries.sql").read_text()
    blocks = re.split(r"^-- name: ", text, flags=re.M)[1:]
    return {block.split("\n", 1)[0].strip(): block.split("\n", 1)[1] for block in blocks}


@pytest.mark.parametrize("name", list(_queries()))
def test_example_queries_run_against_the_serving_database(name, serving):
    rows = serving.execute(_queries()[name].strip().rstrip(";")).fetchall()
    assert rows, f"examples/queries.sql {name} returned nothing"
