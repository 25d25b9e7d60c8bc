"""RFM rule table, quintiles, ranks and tiers: pure functions on known values."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ml.ranking import potential_rank, priority_tier
from ml.segments import PROSPECT, RFM_SEGMENTS, quintile_score, rfm_scores, rfm_segment


def test_rule_table_covers_every_score_combination():
    combos = list(itertools.product(range(1, 6), repeat=3))
    r, f, m = (pd.Series([c[i] for c in combos], dtype="Int64") for i in range(3))
    segments = rfm_segment(r, f, m)
    assert segments.isin(RFM_SEGMENTS).all() and (segments != PROSPECT).all()


@pytest.mark.parametrize(
    "r, f, m, expected",
    [(5, 5, 5, "Champions"), (1, 5, 5, "Cannot lose"), (2, 4, 3, "At risk"), (5, 1, 1, "New"),
     (4, 1, 1, "Promising"), (3, 2, 1, "About to sleep"), (1, 1, 1, "Lost"), (2, 1, 2, "Hibernating"),
     (3, 5, 4, "Loyal"), (4, 3, 2, "Potential loyalist"), (3, 3, 3, "Needs attention")],
)
def test_named_segments(r, f, m, expected):
    s = lambda v: pd.Series([v], dtype="Int64")  # noqa: E731
    assert rfm_segment(s(r), s(f), s(m)).iloc[0] == expected


def test_quintiles_and_prospects():
    recency = pd.Series([1.0, 10, 100, 1000, 5, np.nan])
    n_orders = pd.Series([10, 5, 2, 1, 3, 0])
    spend = pd.Series([500.0, 200, 50, 10, 80, 0])
    scores = rfm_scores(recency, n_orders, spend)
    assert scores.loc[0].tolist() == [5, 5, 5]  # most recent, most frequent, biggest spender
    assert scores.loc[3].tolist() == [1, 1, 1]
    assert scores.loc[5].isna().all()
    assert rfm_segment(scores.r_score, scores.f_score, scores.m_score).iloc[5] == PROSPECT


def test_ties_share_a_quintile():
    assert quintile_score(pd.Series([3.0, 3.0, 3.0, 3.0])).nunique() == 1


def test_rank_is_dense_deterministic_and_breaks_ties():
    score = pd.Series([50.0, 80.0, 80.0, 80.0, 10.0])
    clv = pd.Series([1.0, 5.0, 9.0, 5.0, 0.0])
    ids = pd.Series(["e", "d", "c", "a", "b"])
    rank = potential_rank(score, clv, ids)
    assert rank.tolist() == [4, 3, 1, 2, 5]  # tie on score -> higher CLV, then customer_id
    assert sorted(rank) == list(range(1, 6))


def test_tiers_by_rank_percentile():
    rank = pd.Series(range(1, 101))
    tiers = priority_tier(rank)
    assert tiers.value_counts().to_dict() == {"A": 10, "B": 20, "C": 30, "D": 40}
    with pytest.raises(ValueError, match="end at 1.0"):
        priority_tier(rank, {"A": 0.5})
