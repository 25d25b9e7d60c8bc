"""The most likely next product category per customer, with its probability.

Own history: each category bought weighs ``orders * 0.5 ** (days since its last order / HALF_LIFE_DAYS)``
(recent categories count more), normalised per customer. Similar customers: the same weights summed over
the customer's behavioural cluster (everyone without a purchase: over all buyers). The two are blended by
how much own history there is, ``p = a * own + (1 - a) * peers`` with ``a = orders / (orders + PRIOR_ORDERS)``
(a customer with one order leans on their peers, one with twenty on themselves). Dense customers x
categories matrices; categories are few.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

HALF_LIFE_DAYS = 180.0
PRIOR_ORDERS = 3.0


def next_category(customer_ids: pd.Series, clusters: np.ndarray, categories: pd.DataFrame,
                  as_of: date) -> pd.DataFrame:
    """``categories``: one row per customer and category bought (``customer_id``, ``product_category``,
    ``n_orders``, ``last_ordered_at``) as of ``as_of``. Returns ``next_category`` and
    ``next_category_probability`` aligned with ``customer_ids`` (null category when nothing was ever sold)."""
    n = len(customer_ids)
    if categories.empty:
        return pd.DataFrame({"next_category": pd.Series([None] * n, dtype=object),
                             "next_category_probability": np.full(n, np.nan)})
    names = np.array(sorted(categories["product_category"].astype(str).unique()), dtype=object)
    position = pd.Index(customer_ids.astype(str)).get_indexer(categories["customer_id"].astype(str))
    known = position >= 0
    cats = categories.loc[known]
    row = position[known]
    col = np.searchsorted(names, cats["product_category"].astype(str).to_numpy())
    age = (pd.Timestamp(as_of) + pd.Timedelta(days=1) - pd.to_datetime(cats["last_ordered_at"])).dt.days.to_numpy(float)
    weight = cats["n_orders"].to_numpy(float) * 0.5 ** (np.maximum(age, 0) / HALF_LIFE_DAYS)
    k = len(names)
    own = np.bincount(row * k + col, weights=weight, minlength=n * k).reshape(n, k)
    orders = np.bincount(row, weights=cats["n_orders"].to_numpy(float), minlength=n)
    totals = own.sum(axis=1, keepdims=True)
    own_share = np.divide(own, totals, out=np.zeros_like(own), where=totals > 0)

    clusters = np.asarray(clusters)
    peers = np.zeros_like(own)
    overall = own.sum(axis=0)
    overall = overall / overall.sum()
    for c in np.unique(clusters):
        members = clusters == c
        mix = own[members].sum(axis=0)
        peers[members] = mix / mix.sum() if mix.sum() > 0 else overall
    a = (orders / (orders + PRIOR_ORDERS))[:, None]
    p = a * own_share + (1 - a) * peers
    best = p.argmax(axis=1)
    return pd.DataFrame({"next_category": names[best], "next_category_probability": p[np.arange(n), best]})
