"""The potential score (0-100): one documented formula over four parts, each scaled to 0..1.

* ``value``     expected future value: the customer's CLV percentile among all customers;
* ``retention`` 1 - churn probability;
* ``headroom``  growth headroom, the mean of three parts:
                - spend growth: percentile of (expected spend over the CLV horizon - spend of the last 365 days),
                - cross-sell room: 1 - categories bought / categories sold (fewer categories, more room),
                - engagement trend: orders and interactions of the last 90 days against the 90-day average of
                  the year before, mapped from -1..1 to 0..1;
* ``reach``     reachability: marketing consent (yes 1, unknown 0.5, no 0) times 1 with a known preferred
                channel, else 0.8.

``potential_score = 100 * sum(weight_k * part_k) / sum(weight_k)``. Default weights (value 0.45, retention 0.25,
headroom 0.15, reach 0.15) are argued in the README; set ``CRM_POTENTIAL_WEIGHTS`` to change them.

Two texts say why: ``potential_drivers`` names the two largest weighted parts; ``value_reasons`` names the two
things that lift a score above the average (or pull it below): the score's distance from the mean splits
exactly into one term per part, ``100 * sum_k w_k (part_k - mean_k) / sum_k w_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.name_numbers import parse_name_numbers

PARTS = ("value", "retention", "headroom", "reach")
DEFAULT_WEIGHTS = {"value": 0.45, "retention": 0.25, "headroom": 0.15, "reach": 0.15}


def parse_weights(text: str) -> dict[str, float]:
    """``"value=0.45,retention=0.25,headroom=0.15,reach=0.15"`` -> dict; parts left out weigh 0."""
    weights = {part: 0.0 for part in PARTS}
    for name, number in parse_name_numbers(text, "potential weights", "value=0.45").items():
        if name not in weights:
            raise ValueError(f"potential weights: unknown part {name!r} in {text!r}; the parts are {', '.join(PARTS)}")
        if number < 0:
            raise ValueError(f"potential weights: {name} must not be negative")
        weights[name] = number
    if sum(weights.values()) <= 0:
        raise ValueError(f"potential weights: {text!r} gives no part a positive weight")
    return weights


def _trend(recent: pd.Series, year: pd.Series) -> np.ndarray:
    """(last 90 days - average 90 days of the 275 before) / (sum of both); 0 without activity; -1..1."""
    recent = recent.to_numpy(float)
    before = np.maximum(year.to_numpy(float) - recent, 0) * 90 / 275
    total = recent + before
    return np.divide(recent - before, total, out=np.zeros_like(total), where=total > 0)


HEADROOM_PARTS = ("spend_growth", "cross_sell_room", "engagement")


def _consent(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(yes, no) masks of ``marketing_consent``; unknown is neither (object or nullable boolean column)."""
    consent = features["marketing_consent"]
    return (consent.eq(True).fillna(False).to_numpy(bool), consent.eq(False).fillna(False).to_numpy(bool))


def headroom_parts(features: pd.DataFrame, scores: pd.DataFrame, spend_growth=None, most_categories=None) -> pd.DataFrame:
    """The three parts of ``headroom`` (0..1 each; their mean is the headroom) and the raw figures behind them
    (``growth``: expected spend minus the last 365 days' spend; ``trend``: engagement trend in -1..1;
    ``n_categories`` and ``n_sold``). Two of them compare a customer with every other: the growth's percentile
    and the most categories anyone bought. Computed here, the rows are every customer; a batch of them is given
    ``spend_growth`` (the percentile, aligned) and ``most_categories`` (ml/scoring.py computes both in SQL)."""
    growth = (scores["expected_spend"].astype(float) - features["spend_last_365d"].astype(float).fillna(0))
    most = features["n_categories"].max() if most_categories is None else most_categories
    n_sold = max(int(most), 1) if pd.notna(most) else 1  # NaN when nobody (or no one with a known count) is there
    n_categories = features["n_categories"].to_numpy(float)
    trend = (_trend(features["orders_last_90d"], features["orders_last_365d"])
             + _trend(features["n_interactions_90d"], features["n_interactions_365d"])) / 2
    return pd.DataFrame({
        "spend_growth": (growth.rank(method="average", pct=True).to_numpy() if spend_growth is None
                         else np.asarray(spend_growth, float)),
        "cross_sell_room": 1 - np.clip(n_categories / n_sold, 0, 1),
        "engagement": (trend + 1) / 2,
        "growth": growth.to_numpy(), "trend": trend, "n_categories": n_categories, "n_sold": float(n_sold),
    }, index=features.index)


def potential_parts(features: pd.DataFrame, scores: pd.DataFrame, sub: pd.DataFrame | None = None,
                    value=None) -> pd.DataFrame:
    """The four parts (0..1) per customer; ``features``, ``scores`` and ``sub`` (``headroom_parts``, computed
    here when not given) are aligned row by row. ``value``: the CLV percentiles (aligned), when the rows are a
    batch of the customers; computed here over the rows otherwise."""
    value = (scores["clv"].astype(float).rank(method="average", pct=True).to_numpy() if value is None
             else np.asarray(value, float))
    retention = 1 - scores["churn_probability"].to_numpy(float)
    sub = headroom_parts(features, scores) if sub is None else sub
    headroom = ((sub["spend_growth"] + sub["cross_sell_room"] + sub["engagement"]) / 3).to_numpy()
    yes, no = _consent(features)
    consent_factor = np.where(yes, 1.0, np.where(no, 0.0, 0.5))
    channel_known = features["preferred_channel"].notna().to_numpy()
    reach = consent_factor * np.where(channel_known, 1.0, 0.8)
    return pd.DataFrame({"value": value, "retention": retention, "headroom": headroom, "reach": reach},
                        index=features.index).clip(0, 1)


def potential_score(parts: pd.DataFrame, weights: dict[str, float] = DEFAULT_WEIGHTS) -> np.ndarray:
    w = np.array([weights.get(p, 0.0) for p in PARTS])
    return np.round(100 * parts[list(PARTS)].to_numpy() @ w / w.sum(), 4)


def potential_drivers(parts: pd.DataFrame, features: pd.DataFrame, churn: np.ndarray,
                      weights: dict[str, float] = DEFAULT_WEIGHTS) -> np.ndarray:
    """The two largest weighted parts of each customer's score, in words (vectorised)."""
    # every phrase is one of a few hundred: look them up as Python strings (no fixed-width text arrays)
    top_pct = np.clip(np.ceil(100 * (1 - parts["value"].to_numpy())), 1, 100).astype(int)
    churn_pct = np.clip(np.round(100 * np.asarray(churn, float)), 0, 100).astype(int)
    yes, no = _consent(features)
    words = np.column_stack([
        _lookup(top_pct, "expected value in the top {}%".format),
        _lookup(churn_pct, "churn risk only {}%".format),
        _choose(parts["headroom"].to_numpy() >= 0.6, "room to grow (spend, categories, engagement)",
                "little growth headroom"),
        np.where(yes, "reachable with marketing consent", _choose(no, "no marketing consent", "consent unknown")),
    ])
    contribution = parts[list(PARTS)].to_numpy() * np.array([weights.get(p, 0.0) for p in PARTS])
    order = np.argsort(-contribution, axis=1, kind="stable")
    first = np.take_along_axis(words, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(words, order[:, 1:2], axis=1)[:, 0]
    return first + "; " + second


def _lookup(keys, phrase) -> np.ndarray:
    """``phrase(k)`` for each of ``keys``, one shared Python string per distinct key: a fixed-width text array
    (``np.where`` over a list of strings) costs 4 bytes per character per customer, a string per row 50 bytes."""
    codes, uniques = pd.factorize(pd.Series(keys), use_na_sentinel=False)
    return np.array([phrase(k) for k in uniques] or [""], dtype=object)[codes]


def _choose(condition: np.ndarray, yes: str, no: str) -> np.ndarray:
    return np.array([no, yes], dtype=object)[np.asarray(condition, bool).astype(int)]


@dataclass(frozen=True)
class Population:
    """What ``value_reasons`` measures a customer against: every customer's mean of each part and of each
    headroom part, and their number. Taken over all customers, so reasons can be written batch by batch."""

    part_means: pd.Series
    headroom_means: pd.Series
    n: int

    @classmethod
    def of(cls, parts: pd.DataFrame, sub: pd.DataFrame) -> Population:
        """Over ``parts`` and ``sub`` in memory (every customer's; ml/scoring.py averages in SQL instead)."""
        return cls(parts[list(PARTS)].mean(), sub[list(HEADROOM_PARTS)].mean(), len(parts))


def _headroom_words(sub: pd.DataFrame, up: np.ndarray, means: pd.Series) -> np.ndarray:
    """For each customer the part of the headroom that moves most in the score's direction, in words."""
    deviation = sub[list(HEADROOM_PARTS)] - means
    which = np.where(up, np.argmax(deviation.to_numpy(), axis=1), np.argmin(deviation.to_numpy(), axis=1))
    growth, trend = sub["growth"].to_numpy(), sub["trend"].to_numpy()
    sold = sub["n_sold"].iloc[0]
    n_categories = sub["n_categories"].to_numpy()
    spend = np.where(up, _choose(growth > 0, "expected to spend more than in the last year",
                                 "spend expected to hold up better than most"),
                     _choose(growth < 0, "expected to spend less than in the last year", "little spend growth expected"))
    cross = np.where(up, _lookup(n_categories, lambda n: f"buys in only {n:.0f} of {sold:.0f} categories: room to cross-sell"),
                     _lookup(n_categories, lambda n: f"already buys in {n:.0f} of {sold:.0f} categories"))
    engagement = np.where(up, _choose(trend > 0, "more orders and contacts lately than in the year before",
                                      "orders and contacts holding steady"),
                          _choose(trend < 0, "fewer orders and contacts lately than in the year before",
                                  "no growth in orders and contacts lately"))
    return np.choose(which, [spend, cross, engagement])


def value_reasons(parts: pd.DataFrame, features: pd.DataFrame, scores: pd.DataFrame,
                  weights: dict[str, float] = DEFAULT_WEIGHTS, sub: pd.DataFrame | None = None,
                  population: Population | None = None) -> np.ndarray:
    """The two things behind a high or low potential score, in words, e.g. ``above average: expected value in
    the top 3%; churn risk only 4%`` or ``below average: churn risk 97%; no marketing consent``.

    The score's distance from the mean score is the sum of one term per part, ``w_k (part_k - mean_k)``;
    a score at or above the mean is explained by its two largest positive terms, one below by its two most
    negative ones (only one where a single part points that way). The headroom is named by the one of its
    three parts that moves most the same way. ``parts``, ``features``, ``scores`` (``clv``,
    ``churn_probability``, ``expected_spend``) and ``sub`` (``headroom_parts``) are aligned row by row; ``sub``
    and ``population`` are computed from them when not given (then they must be every customer)."""
    if parts.empty:
        return np.array([], dtype=object)
    sub = headroom_parts(features, scores) if sub is None else sub
    population = Population.of(parts, sub) if population is None else population
    w = np.array([weights.get(p, 0.0) for p in PARTS])
    terms = (parts[list(PARTS)] - population.part_means).to_numpy() * w
    up = terms.sum(axis=1) >= 0
    value, churn = parts["value"].to_numpy(), scores["churn_probability"].to_numpy(float)
    top = np.clip(np.ceil(100 * (1 - value + 1 / population.n) - 1e-9), 1, 100).astype(int)  # best of n: top 100/n %
    bottom = np.clip(np.ceil(100 * value - 1e-9), 1, 100).astype(int)
    churn_pct = np.clip(np.round(100 * churn), 0, 100).astype(int)
    yes, no = _consent(features)
    reach_up = np.where(yes, _lookup(features["preferred_channel"].astype(object),
                                     lambda c: "marketing consent" + (f", prefers {c}" if isinstance(c, str) and c else "")),
                        "marketing consent not refused")
    reach_down = np.where(no, "no marketing consent",
                          _choose(yes, "no preferred channel known", "marketing consent unknown"))
    words = np.column_stack([
        np.where(up, _lookup(top, "expected value in the top {}%".format),
                 _lookup(bottom, "expected value in the bottom {}%".format)),
        np.where(up, _lookup(churn_pct, "churn risk only {}%".format), _lookup(churn_pct, "churn risk {}%".format)),
        _headroom_words(sub, up, population.headroom_means),
        np.where(up, reach_up, reach_down),
    ])
    signed = np.where(up[:, None], terms, -terms)  # the terms that point the score's way are positive
    order = np.argsort(-signed, axis=1, kind="stable")
    rows = np.arange(len(parts))
    first, second = order[:, 0], order[:, 1]
    text = _choose(up, "above average: ", "below average: ") + words[rows, first]
    both = signed[rows, second] > 0
    text[both] = text[both] + "; " + words[rows[both], second[both]]
    return text
