"""The most likely next product category per customer, with its probability, and its back-test.

Own history: each category bought weighs ``orders * 0.5 ** (days since its last order / HALF_LIFE_DAYS)``
(recent categories count more), normalised per customer. Similar customers: the same weights summed over
the customer's behavioural cluster (everyone without a purchase: over all buyers). The two are blended by
how much own history there is, ``p = a * own + (1 - a) * peers`` with ``a = orders / (orders + PRIOR_ORDERS)``
(a customer with one order leans on their peers, one with twenty on themselves). Dense customers x
categories matrices; categories are few. The ranking orders categories by ``p``, ties by name, so its first
entry is the published ``next_category`` (``argmax`` takes the first of equal maxima, names are sorted).

Back-test (``backtest_next_category``): predictions made at a back-dated cutoff ``c`` from what was known at
``c`` are compared with the categories each customer bought in ``(c, as_of]``. ``int_customer_categories``
counts completed, categorised orders dated before the end of each cutoff date, from the one staged order
table, so a (customer, category) count that grew between ``c`` and the as-of date means at least one such
order in the window, and a count that did not grow means none. Evaluated: the customers known at ``c``
(``customer_ids``, the feature rows at ``c``) who bought at least one categorised product in the window.
Hit rate at k: the share of them with at least one of their top-k predicted categories among those bought.
Two baselines on the same customers:

* ``next_category_popular``: the categories bought by the most customers up to ``c`` (ties: more orders,
  then name), the same ranking for everyone;
* ``next_category_most_frequent``: the customer's own categories at ``c`` by ``category_rank`` (most orders,
  then most recent, then name), padded with the popular ranking (categories not already listed) when the
  customer has fewer than k, so customers without history get the popular ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

HALF_LIFE_DAYS = 180.0
PRIOR_ORDERS = 3.0

TASK = "next_category"
MODEL = "next_category_blend"
POPULAR = "next_category_popular"
MOST_FREQUENT = "next_category_most_frequent"
HIT_AT = (1, 3)  # the k of the published hit rates (metric ``hit_rate_top{k}``)
# the feature columns ml/clusters.py's behaviour_clusters reads (enough to cluster the customers at a cutoff)
CLUSTER_COLUMNS = ["customer_id", "monetary_total", "n_orders", "recency_days", "tenure_days", "n_categories",
                   "n_interactions_90d", "order_trend"]
_CATEGORY_COLUMNS = {"customer_id", "product_category", "n_orders", "last_ordered_at"}


@dataclass
class CategoryMix:
    """The peers' side of the blend: category names (sorted) and the own-history weights summed per behavioural
    cluster (row c: cluster c, for clusters 0 .. ``n_clusters - 1``) over every customer. Built once over all
    customers (``add`` may take them batch by batch), then used to predict for any subset of them
    (``category_probabilities(..., mix=)``)."""

    names: np.ndarray
    n_clusters: int
    by_cluster: np.ndarray = field(init=False)
    overall: np.ndarray = field(init=False)  # summed over every customer

    def __post_init__(self) -> None:
        self.by_cluster = np.zeros((self.n_clusters, len(self.names)))
        self.overall = np.zeros(len(self.names))

    def add(self, customer_ids: pd.Series, clusters: np.ndarray, categories: pd.DataFrame, as_of: date) -> None:
        own, _ = _own_weights(customer_ids, categories, self.names, as_of)
        clusters = np.asarray(clusters, dtype=np.int64)
        for c in np.unique(clusters):
            self.by_cluster[c] += own[clusters == c].sum(axis=0)
        self.overall = self.overall + own.sum(axis=0)

    def add_sums(self, sums: pd.DataFrame) -> None:
        """Adds weights already summed per (``cluster``, ``product_category``) (``weight``; see ``category_weight``):
        the engine sums them where the data is (ml/scoring.py)."""
        col = np.searchsorted(self.names, sums["product_category"].astype(str).to_numpy())
        row = sums["cluster"].to_numpy(np.int64)
        np.add.at(self.by_cluster, (row, col), sums["weight"].to_numpy(float))
        self.overall = self.by_cluster.sum(axis=0)

    def peers(self, clusters: np.ndarray) -> np.ndarray:
        """Each customer's cluster mix (every cluster without purchases: the mix over all customers)."""
        overall = self.overall / self.overall.sum()
        totals = self.by_cluster.sum(axis=1, keepdims=True)
        mixes = np.where(totals > 0, self.by_cluster / np.where(totals > 0, totals, 1), overall)
        return mixes[np.asarray(clusters, dtype=np.int64)]


def category_names(categories: pd.DataFrame) -> np.ndarray:
    return np.array(sorted(categories["product_category"].astype(str).unique()), dtype=object)


def _own_weights(customer_ids: pd.Series, categories: pd.DataFrame, names: np.ndarray,
                 as_of: date) -> tuple[np.ndarray, np.ndarray]:
    """Per customer of ``customer_ids``: the recency-weighted orders per category (one column per name) and the
    number of categorised orders; rows of ``categories`` for other customers are left out."""
    n = len(customer_ids)
    position = pd.Index(customer_ids.astype(str)).get_indexer(categories["customer_id"].astype(str))
    known = position >= 0
    cats = categories.loc[known]
    row = position[known]
    col = np.searchsorted(names, cats["product_category"].astype(str).to_numpy())
    weight = category_weight(cats, as_of)
    k = len(names)
    own = np.bincount(row * k + col, weights=weight, minlength=n * k).reshape(n, k)
    orders = np.bincount(row, weights=cats["n_orders"].to_numpy(float), minlength=n)
    return own, orders


def category_weight(categories: pd.DataFrame, as_of: date) -> np.ndarray:
    """Each row's own-history weight: ``n_orders * 0.5 ** (days since last_ordered_at / HALF_LIFE_DAYS)``."""
    age = (pd.Timestamp(as_of) + pd.Timedelta(days=1) - pd.to_datetime(categories["last_ordered_at"])).dt.days
    return categories["n_orders"].to_numpy(float) * 0.5 ** (np.maximum(age.to_numpy(float), 0) / HALF_LIFE_DAYS)


def category_probabilities(customer_ids: pd.Series, clusters: np.ndarray, categories: pd.DataFrame,
                           as_of: date, mix: CategoryMix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The category names (sorted) and the blended probabilities, one row per customer of ``customer_ids``
    and one column per name (see the module docstring). ``categories`` must not be empty unless ``mix`` (built
    over all customers) is given; without it the peers are the customers of ``customer_ids``."""
    if mix is None:
        mix = CategoryMix(category_names(categories), int(np.max(clusters, initial=0)) + 1)
        mix.add(customer_ids, clusters, categories, as_of)
    own, orders = _own_weights(customer_ids, categories, mix.names, as_of)
    totals = own.sum(axis=1, keepdims=True)
    own_share = np.divide(own, totals, out=np.zeros_like(own), where=totals > 0)
    a = (orders / (orders + PRIOR_ORDERS))[:, None]
    return mix.names, a * own_share + (1 - a) * mix.peers(clusters)


def ranked(p: np.ndarray, top_k: int) -> np.ndarray:
    """Column indices of the ``top_k`` highest probabilities per row, highest first, ties to the lower index
    (the first column equals ``p.argmax(axis=1)``)."""
    return np.argsort(-p, axis=1, kind="stable")[:, :top_k]


def next_category(customer_ids: pd.Series, clusters: np.ndarray, categories: pd.DataFrame,
                  as_of: date, top_k: int = 1, mix: CategoryMix | None = None) -> pd.DataFrame:
    """``categories``: one row per customer and category bought (``customer_id``, ``product_category``,
    ``n_orders``, ``last_ordered_at``) as of ``as_of``. Returns ``next_category`` and
    ``next_category_probability`` aligned with ``customer_ids`` (null category when nothing was ever sold);
    with ``top_k > 1`` also ``next_categories``: a tuple of the (at most) ``top_k`` most likely categories,
    most likely first (its first entry is ``next_category``; empty when nothing was ever sold)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    n = len(customer_ids)
    if (categories.empty if mix is None else len(mix.names) == 0):  # nothing was ever sold
        out = pd.DataFrame({"next_category": pd.Series([None] * n, dtype=object),
                            "next_category_probability": np.full(n, np.nan)})
        if top_k > 1:
            out["next_categories"] = pd.Series([()] * n, dtype=object)
        return out
    names, p = category_probabilities(customer_ids, clusters, categories, as_of, mix)
    best = p.argmax(axis=1)
    out = pd.DataFrame({"next_category": names[best], "next_category_probability": p[np.arange(n), best]})
    if top_k > 1:
        out["next_categories"] = [tuple(r) for r in names[ranked(p, top_k)]]
    return out


# ------------------------------------------------------------------------------------------------ back-test
def bought_in_window(categories_at_cutoff: pd.DataFrame, categories_now: pd.DataFrame) -> pd.DataFrame:
    """(``customer_id``, ``product_category``) pairs whose order count grew between the two snapshots of
    ``int_customer_categories``: the categories each customer bought after the cutoff, up to now."""
    keys = ["customer_id", "product_category"]
    before = categories_at_cutoff[[*keys, "n_orders"]].astype({"customer_id": str, "product_category": str})
    now = categories_now[[*keys, "n_orders"]].astype({"customer_id": str, "product_category": str})
    both = now.merge(before, on=keys, how="left", suffixes=("", "_before"), validate="one_to_one")
    grew = both["n_orders"].to_numpy(float) > both["n_orders_before"].fillna(0).to_numpy(float)
    return both.loc[grew, keys].reset_index(drop=True)


def popular_ranking(categories: pd.DataFrame) -> np.ndarray:
    """Category names by the number of customers who bought them (ties: more orders, then name)."""
    by = (categories.assign(product_category=categories["product_category"].astype(str))
          .groupby("product_category").agg(customers=("customer_id", "nunique"), orders=("n_orders", "sum"))
          .reset_index().sort_values(["customers", "orders", "product_category"], ascending=[False, False, True]))
    return by["product_category"].to_numpy(dtype=object)


def _pad(own: np.ndarray, fill: np.ndarray, top_k: int) -> np.ndarray:
    """Per row, the codes of ``own`` (-1 = none) followed by those of ``fill`` not already in the row, first
    ``top_k`` kept (-1 where fewer exist)."""
    both = np.concatenate([own, np.broadcast_to(fill, (len(own), len(fill)))], axis=1)
    drop = both < 0
    for j in range(1, both.shape[1]):
        drop[:, j] |= (both[:, :j] == both[:, j:j + 1]).any(axis=1)
    order = np.argsort(drop, axis=1, kind="stable")[:, :top_k]
    out = np.take_along_axis(both, order, axis=1)
    out[np.take_along_axis(drop, order, axis=1)] = -1
    return out


def _hit_rates(predicted: np.ndarray, bought: np.ndarray, n_vocab: int) -> dict[str, float]:
    """``predicted``: evaluated customers x ranked category codes (-1 = none); ``bought``: the encoded
    (row * n_vocab + code) pairs bought in the window."""
    rows = np.arange(len(predicted))[:, None]
    hit = (predicted >= 0) & np.isin(rows * n_vocab + predicted, bought)
    return {f"hit_rate_top{k}": float(hit[:, :k].any(axis=1).mean()) for k in HIT_AT}


def backtest_next_category(categories_at_cutoff: pd.DataFrame, categories_now: pd.DataFrame,
                           clusters_at_cutoff: np.ndarray, customer_ids: pd.Series, cutoff: date) -> pd.DataFrame:
    """Hit rates of ``next_category`` and the two baselines (module docstring), one row per model and metric
    (``model_name``, ``metric``, ``value``; metrics ``hit_rate_top1``, ``hit_rate_top3``, ``n_customers``).

    ``categories_at_cutoff`` / ``categories_now``: ``int_customer_categories`` at ``cutoff`` and at the as-of
    date (``customer_id``, ``product_category``, ``n_orders``, ``last_ordered_at``; the cutoff frame also
    ``category_rank``); ``customer_ids`` and ``clusters_at_cutoff``: the customers known at ``cutoff`` and
    their behavioural clusters fitted on the features at ``cutoff``. Empty (no rows) when no category was
    sold by ``cutoff`` or no known customer bought a categorised product in the window."""
    missing = (_CATEGORY_COLUMNS | {"category_rank"}) - set(categories_at_cutoff.columns)
    missing_now = _CATEGORY_COLUMNS - set(categories_now.columns)
    if missing or missing_now:
        raise ValueError(f"category frames lack columns: at cutoff {sorted(missing)}, now {sorted(missing_now)}")
    if len(clusters_at_cutoff) != len(customer_ids):
        raise ValueError(f"{len(clusters_at_cutoff)} clusters for {len(customer_ids)} customers")
    empty = pd.DataFrame({"model_name": pd.Series(dtype=object), "metric": pd.Series(dtype=object),
                          "value": pd.Series(dtype=float)})
    if categories_at_cutoff.empty:
        return empty
    ids = pd.Index(customer_ids.astype(str))
    bought = bought_in_window(categories_at_cutoff, categories_now)
    bought_row = ids.get_indexer(bought["customer_id"])
    bought = bought.loc[bought_row >= 0]
    evaluated = np.unique(bought_row[bought_row >= 0])  # positions in customer_ids, ascending
    if len(evaluated) == 0:
        return empty
    top_k = max(HIT_AT)
    vocab = np.array(sorted(set(categories_at_cutoff["product_category"].astype(str).unique())
                            | set(bought["product_category"].unique())), dtype=object)
    eval_row = np.searchsorted(evaluated, ids.get_indexer(bought["customer_id"]))
    bought_codes = eval_row * len(vocab) + np.searchsorted(vocab, bought["product_category"].to_numpy(dtype=object))

    # the model: ranking at the cutoff from data up to the cutoff, for every known customer (peers need all)
    names, p = category_probabilities(customer_ids, clusters_at_cutoff, categories_at_cutoff, cutoff)
    model = np.searchsorted(vocab, names)[ranked(p[evaluated], top_k)]
    del p

    popular = np.searchsorted(vocab, popular_ranking(categories_at_cutoff)[:top_k])
    own_cats = categories_at_cutoff[categories_at_cutoff["category_rank"] <= top_k]
    own_row = ids.get_indexer(own_cats["customer_id"].astype(str))
    own_eval = np.searchsorted(evaluated, own_row)
    keep = (own_row >= 0) & (own_eval < len(evaluated))
    keep[keep] &= evaluated[own_eval[keep]] == own_row[keep]
    own = np.full((len(evaluated), top_k), -1, dtype=np.int64)
    own[own_eval[keep], own_cats["category_rank"].to_numpy()[keep].astype(np.int64) - 1] = np.searchsorted(
        vocab, own_cats["product_category"].astype(str).to_numpy(dtype=object)[keep])
    most_frequent = _pad(own, popular, top_k)

    rows = []
    for name, predicted in ((MODEL, model), (POPULAR, np.broadcast_to(popular, (len(evaluated), len(popular)))),
                            (MOST_FREQUENT, most_frequent)):
        rates = _hit_rates(np.asarray(predicted), bought_codes, len(vocab))
        rows += [dict(model_name=name, metric=m, value=v) for m, v in rates.items()]
        rows.append(dict(model_name=name, metric="n_customers", value=float(len(evaluated))))
    return pd.DataFrame(rows)


def beats_baselines(metrics: pd.DataFrame) -> dict[str, bool]:
    """Per hit-rate metric: whether the model's value is above both baselines'."""
    wide = metrics.pivot(index="model_name", columns="metric", values="value")
    return {m: bool(wide.loc[MODEL, m] > max(wide.loc[POPULAR, m], wide.loc[MOST_FREQUENT, m]))
            for m in (f"hit_rate_top{k}" for k in HIT_AT)}


def summary_markdown(metrics: pd.DataFrame) -> str:
    """The back-test as a markdown table, one line per model (for the asset's metadata and log)."""
    wide = metrics.pivot(index="model_name", columns="metric", values="value")
    tops = [f"hit_rate_top{k}" for k in HIT_AT]
    lines = ["| model | " + " | ".join(f"hit rate top {k}" for k in HIT_AT) + " | customers |",
             "|---" * (len(HIT_AT) + 2) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{r[t]:.4f}" for t in tops) + f" | {int(r['n_customers']):,} |"
              for m, r in wide.iterrows()]
    return "\n".join(lines)


def performance_rows(metrics: pd.DataFrame, *, run_id: str, as_of: date, cutoff: date) -> list[dict]:
    """``ops.model_performance`` rows for the back-test: every model learns from data up to ``cutoff`` and is
    tested on ``(cutoff, as_of]``; the blend is the champion (it is what ``customer_scores`` publishes)."""
    return [dict(run_id=run_id, as_of_date=as_of, model_name=r.model_name, model_version=f"{r.model_name}@{cutoff}",
                 task=TASK, metric=r.metric, value=float(r.value), train_window_start=None, train_window_end=cutoff,
                 test_window_start=cutoff, test_window_end=as_of, is_champion=r.model_name == MODEL)
            for r in metrics.itertuples(index=False)]
