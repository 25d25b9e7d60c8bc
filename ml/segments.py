"""RFM quintile scores and the named RFM segments (rule table), as pure functions.

R, F and M are quintile scores 1..5 among customers with at least one purchase (R: fewer days since
the last purchase is better; F: more completed orders; M: more spend). Ties get the same score
(average percentile rank). ``FM`` is the rounded mean of F and M. The first rule that matches wins;
the table covers every (R, FM) pair. Customers without a purchase are ``Prospect``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PROSPECT = "Prospect"

# (segment, R range, FM range), both inclusive; first match wins
RFM_RULES: list[tuple[str, tuple[int, int], tuple[int, int]]] = [
    ("Champions", (4, 5), (4, 5)),
    ("Cannot lose", (1, 2), (5, 5)),
    ("At risk", (1, 2), (3, 4)),
    ("Loyal", (3, 3), (4, 5)),
    ("Potential loyalist", (4, 5), (2, 3)),
    ("New", (5, 5), (1, 1)),
    ("Promising", (4, 4), (1, 1)),
    ("Needs attention", (3, 3), (3, 3)),
    ("About to sleep", (3, 3), (1, 2)),
    ("Hibernating", (2, 2), (1, 2)),
    ("Lost", (1, 1), (1, 2)),
]
RFM_SEGMENTS = [name for name, _, _ in RFM_RULES] + [PROSPECT]


def quintile_score(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Scores 1..5 by percentile rank (ties share a score); NaN stays NaN."""
    return quintile(values.rank(method="average", pct=True, ascending=higher_is_better))


def quintile(pct):
    """The score 1..5 of a percentile rank (0..1]; NaN stays NaN."""
    return np.ceil(pct * 5).clip(1, 5)


def rfm_from_percentiles(r_pct: pd.Series, f_pct: pd.Series, m_pct: pd.Series) -> pd.DataFrame:
    """``rfm_scores`` from the percentile ranks among buyers (null for customers without a purchase), as
    ml/scoring.py computes them in SQL for a batch of customers."""
    return pd.DataFrame({name: quintile(pd.Series(pct, dtype=float)).astype("Int64")
                         for name, pct in (("r_score", r_pct), ("f_score", f_pct), ("m_score", m_pct))})


def rfm_scores(recency_days: pd.Series, n_orders: pd.Series, monetary_total: pd.Series) -> pd.DataFrame:
    """R, F, M scores (1..5, Int64) for buyers; <NA> for customers without a purchase."""
    buyer = n_orders > 0
    out = pd.DataFrame(index=recency_days.index)
    for name, values, higher in (
        ("r_score", recency_days, False),
        ("f_score", n_orders, True),
        ("m_score", monetary_total, True),
    ):
        score = pd.Series(np.nan, index=values.index)
        score[buyer] = quintile_score(values[buyer].astype(float), higher_is_better=higher)
        out[name] = score.astype("Int64")
    return out


def rfm_segment(r_score: pd.Series, f_score: pd.Series, m_score: pd.Series) -> pd.Series:
    """Named segment per customer from the rule table."""
    r = r_score.astype("float").to_numpy()
    fm = np.floor((f_score.astype("float").to_numpy() + m_score.astype("float").to_numpy()) / 2 + 0.5)
    result = np.full(r.shape, PROSPECT, dtype=object)
    unassigned = ~np.isnan(r)
    for name, (r_lo, r_hi), (fm_lo, fm_hi) in RFM_RULES:
        hit = unassigned & (r >= r_lo) & (r <= r_hi) & (fm >= fm_lo) & (fm <= fm_hi)
        result[hit] = name
        unassigned &= ~hit
    if unassigned.any():  # the table is complete; this guards edits to it
        raise ValueError(f"RFM rule table leaves {int(unassigned.sum())} customers without a segment")
    return pd.Series(result, index=r_score.index, dtype=object)
