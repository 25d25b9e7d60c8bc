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
"""

from __future__ import annotations

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


def potential_parts(features: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The four parts (0..1) per customer; ``features`` and ``scores`` are aligned row by row."""
    clv = scores["clv"].astype(float)
    value = clv.rank(method="average", pct=True).to_numpy()
    retention = 1 - scores["churn_probability"].to_numpy(float)
    growth = (scores["expected_spend"].astype(float) - features["spend_last_365d"].astype(float).fillna(0))
    spend_growth = growth.rank(method="average", pct=True).to_numpy()
    n_sold = max(int(features["n_categories"].max() or 0), 1)
    cross_sell_room = 1 - np.clip(features["n_categories"].to_numpy(float) / n_sold, 0, 1)
    engagement = (_trend(features["orders_last_90d"], features["orders_last_365d"])
                  + _trend(features["n_interactions_90d"], features["n_interactions_365d"])) / 2
    headroom = (spend_growth + cross_sell_room + (engagement + 1) / 2) / 3
    consent = features["marketing_consent"]
    consent_factor = np.where(consent.eq(True), 1.0, np.where(consent.eq(False), 0.0, 0.5))
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
    percent = np.arange(101)
    consent = features["marketing_consent"]
    words = np.column_stack([
        np.array([f"expected value in the top {k}%" for k in percent], dtype=object)[top_pct],
        np.array([f"churn risk only {k}%" for k in percent], dtype=object)[churn_pct],
        np.where(parts["headroom"].to_numpy() >= 0.6, "room to grow (spend, categories, engagement)",
                 "little growth headroom").astype(object),
        np.where(consent.eq(True).to_numpy(), "reachable with marketing consent",
                 np.where(consent.eq(False).to_numpy(), "no marketing consent", "consent unknown")).astype(object),
    ])
    contribution = parts[list(PARTS)].to_numpy() * np.array([weights.get(p, 0.0) for p in PARTS])
    order = np.argsort(-contribution, axis=1, kind="stable")
    first = np.take_along_axis(words, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(words, order[:, 1:2], axis=1)[:, 0]
    return first + "; " + second
