"""customer_scores: the models' predictions plus potential score, rank, tier, segments, next category and
next best action, one row per customer.

* Model outputs: ``p_alive``, ``expected_purchases``, ``expected_spend`` and ``clv`` from the back-tested value
  champion (``ml/value_models.py``); ``churn_probability``, ``churn_flag`` and ``top_reasons`` from the
  registered churn champion (``ml/churn.py``). ``p_alive`` is null for customers without a purchase (a BTYD
  model says nothing about a lead: their churn probability is the leads' rate); ``churn_flag`` is null where
  the score rests on the usual evidence.
* ``potential_score``, its parts and the words behind it (``potential_drivers``, ``value_reasons``;
  ``ml/potential.py``), ``potential_rank`` and ``priority_tier``
  (``ml/ranking.py``), RFM scores and segments (``ml/segments.py``), ``lifecycle_stage`` (dbt macro
  ``lifecycle_stage``, carried in the features), ``value_segment`` (below), behavioural clusters
  (``ml/clusters.py``), ``next_category`` (``ml/next_category.py``) and the next best action
  (``ml/actions.py`` with its rule table).
* ``previous_*``: the customer's segment, stage, tier and rank in the last publication (null if none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from ml.actions import load_rules, next_best_actions
from ml.clusters import behaviour_clusters
from ml.next_category import CategoryMix, category_names, next_category
from ml.potential import (DEFAULT_WEIGHTS, PARTS, Population, headroom_parts, potential_drivers, potential_parts,
                          potential_score, value_reasons)
from ml.ranking import DEFAULT_TIER_BOUNDS, potential_rank, priority_tier, tier_group
from ml.segments import rfm_scores, rfm_segment

RULES_VERSION = "rules-3"
SCORE_COLUMNS = [
    "customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_model", "potential_score", "potential_rank", "priority_tier",
    "rfm_segment", "lifecycle_stage", "value_segment", "next_best_action", "next_category",
    "top_reasons", "model_versions", "churn_flag", "potential_drivers", "r_score", "f_score", "m_score", "customer_key",
    "score_value", "score_retention", "score_headroom", "score_reach", "behaviour_cluster", "behaviour_cluster_label",
    "next_category_probability", "action_channel", "action_reason",
    "previous_rfm_segment", "previous_lifecycle_stage", "previous_priority_tier", "previous_potential_rank",
    "expected_purchases_low", "expected_purchases_high", "clv_low", "clv_high", "value_reasons",
]
PREVIOUS = ["rfm_segment", "lifecycle_stage", "priority_tier", "potential_rank"]
# The columns of marts.customer_features that scoring reads: the step reads only these (all 87 columns of a
# million customers were the run's memory peak); tests/test_scoring_rules.py checks the scores are the same.
FEATURE_COLUMNS = [
    "customer_id", "as_of_date", "lifecycle_stage", "tenure_days", "marketing_consent", "preferred_channel",
    "n_orders", "recency_days", "monetary_total", "orders_last_90d", "orders_last_365d", "order_trend",
    "spend_last_365d", "n_categories", "n_interactions_90d", "n_interactions_365d",
]


@dataclass
class ScoringRules:
    """The configurable parts of scoring (settings: potential_weights, tier_bounds, action_rules_file)."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    tier_bounds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIER_BOUNDS))
    action_rules: pd.DataFrame = field(default_factory=load_rules)


def value_segment(clv: pd.Series) -> pd.Series:
    pct = clv.rank(method="average", pct=True)
    out = np.where(clv <= 0, "none", np.where(pct > 0.8, "high", np.where(pct > 0.5, "medium", "low")))
    return pd.Series(out, index=clv.index, dtype=object)


class Scorer:
    """Scores customers in two passes, so a batch's text never needs every customer's in memory at once.

    Pass 1 (``Scorer(...)``, then ``learn_categories`` once or batch by batch): everything that compares a
    customer with all the others: CLV, spend-growth and RFM percentiles, the potential score and rank, tiers,
    value segments, behavioural clusters, the population means behind ``value_reasons`` and the categories'
    mix per cluster; numbers and a few shared labels per customer.
    Pass 2 (``batch``): the columns written per customer (next category, next best action, reasons, drivers,
    the pseudonymous key, last publication's segments) for a range of customers in ``customer_id`` order.
    ``features``, ``value`` and ``churn`` hold every customer (``churn`` without ``churn_reasons`` is enough:
    those come with each batch)."""

    def __init__(self, features: pd.DataFrame, value: pd.DataFrame, churn: pd.DataFrame, *, run_id: str,
                 rules: ScoringRules | None = None) -> None:
        self.rules = rules = rules or ScoringRules()
        f = features.sort_values("customer_id").reset_index(drop=True)
        v = f[["customer_id"]].merge(value, on="customer_id", how="left", validate="one_to_one")
        c = f[["customer_id"]].merge(churn.drop(columns="churn_reasons", errors="ignore"), on="customer_id",
                                     how="left", validate="one_to_one")
        if v.clv.isna().any() or c.churn_probability.isna().any():
            raise ValueError(
                f"{int(v.clv.isna().sum())} customers have no value prediction, "
                f"{int(c.churn_probability.isna().sum())} no churn prediction"
            )
        out = pd.DataFrame({"customer_id": f["customer_id"].astype(str)})
        out["as_of_date"] = f["as_of_date"]
        out["run_id"] = run_id
        out["churn_probability"] = c["churn_probability"].clip(0, 1).to_numpy()
        no_purchase = f["n_orders"].fillna(0).eq(0).to_numpy()
        out["p_alive"] = np.where(no_purchase, np.nan, v["p_alive"].clip(0, 1).to_numpy())
        out["expected_purchases"] = v["expected_purchases"].to_numpy()
        out["expected_spend"] = v["expected_spend"].to_numpy()
        out["clv"] = v["clv"].to_numpy()
        out["clv_model"] = v["clv_model"].to_numpy()
        for col in ("expected_purchases_low", "expected_purchases_high", "clv_low", "clv_high"):
            out[col] = v[col].to_numpy()

        self.headroom = headroom_parts(f, out)
        self.parts = parts = potential_parts(f, out, self.headroom)
        self.population = Population.of(parts, self.headroom)
        out["potential_score"] = potential_score(parts, rules.weights)
        out["potential_rank"] = potential_rank(out["potential_score"], out["clv"], out["customer_id"])
        out["priority_tier"] = priority_tier(out["potential_rank"], rules.tier_bounds,
                                             groups=tier_group(f["lifecycle_stage"]))
        rfm = rfm_scores(f["recency_days"], f["n_orders"], f["monetary_total"])
        out["rfm_segment"] = rfm_segment(rfm["r_score"], rfm["f_score"], rfm["m_score"])
        out["lifecycle_stage"] = f["lifecycle_stage"].astype(object).to_numpy()
        out["value_segment"] = value_segment(out["clv"])
        self.clusters = clusters = behaviour_clusters(f)
        self.as_of = pd.Timestamp(f["as_of_date"].iloc[0]).date() if len(f) else date.today()
        versions = {"clv": str(v["clv_model"].iloc[0]) if len(v) else "",
                    "churn": str(c["churn_model"].iloc[0]) if len(c) else "", "scores": RULES_VERSION}
        out["model_versions"] = json.dumps(versions, sort_keys=True)
        flag = c["churn_flag"].astype(object)
        out["churn_flag"] = pd.array(flag.where(flag.notna() & flag.ne(""), None), dtype="string")
        out[["r_score", "f_score", "m_score"]] = rfm
        for part in PARTS:
            out[f"score_{part}"] = np.round(parts[part].to_numpy(), 4)
        out["behaviour_cluster"] = clusters.cluster
        out["behaviour_cluster_label"] = clusters.label
        self.scores = out
        self.features = f[["marketing_consent", "preferred_channel"]]
        self.mix: CategoryMix | None = None
        self.facts = {"clusters_k": clusters.k, "clusters_silhouette": clusters.silhouette,
                      "cluster_descriptions": clusters.descriptions}

    def __len__(self) -> int:
        return len(self.scores)

    def customer_ids(self, start: int = 0, stop: int | None = None) -> pd.Series:
        return self.scores["customer_id"].iloc[start:stop]

    def learn_categories(self, categories: pd.DataFrame, names: np.ndarray | None = None,
                         start: int = 0, stop: int | None = None) -> None:
        """Adds the categories bought by the customers ``start:stop`` to the per-cluster mix; ``names``: every
        category sold (by default, those in ``categories``, which must then be every customer's)."""
        if self.mix is None:
            self.mix = CategoryMix(category_names(categories) if names is None else names, self.clusters.k + 1)
        if categories.empty:
            return
        self.mix.add(self.customer_ids(start, stop), self.clusters.cluster[start:stop], categories, self.as_of)

    def batch(self, start: int = 0, stop: int | None = None, *, churn_reasons: pd.DataFrame | None = None,
              categories: pd.DataFrame | None = None, pseudonyms: pd.DataFrame | None = None,
              previous: pd.DataFrame | None = None) -> pd.DataFrame:
        """Every ``customer_scores`` column for the customers ``start:stop`` (in ``customer_id`` order). The
        frames need only hold those customers' rows (others are ignored): ``churn_reasons`` (``customer_id``,
        ``churn_reasons``), ``categories``, ``pseudonyms`` (``customer_id``, ``customer_key``) and ``previous``
        (the last publication's ``PREVIOUS`` columns)."""
        rules = self.rules
        out = self.scores.iloc[start:stop].copy()
        f = self.features.iloc[start:stop]
        parts, sub = self.parts.iloc[start:stop], self.headroom.iloc[start:stop]
        ids = out[["customer_id"]]
        categories = _or_empty(categories, ["customer_id", "product_category"])
        if self.mix is None:
            self.learn_categories(categories)
        nxt = next_category(out["customer_id"], self.clusters.cluster[start:stop], categories, self.as_of,
                            mix=self.mix)
        actions = next_best_actions(out, f["marketing_consent"], f["preferred_channel"], rules.action_rules)
        out["next_best_action"] = actions["next_best_action"].to_numpy()
        out["next_category"] = nxt["next_category"].to_numpy()
        reasons = _or_empty(churn_reasons, ["customer_id", "churn_reasons"])
        out["top_reasons"] = ids.merge(reasons[["customer_id", "churn_reasons"]], on="customer_id", how="left",
                                       validate="one_to_one")["churn_reasons"].to_numpy()
        out["potential_drivers"] = potential_drivers(parts, f, out["churn_probability"].to_numpy(), rules.weights)
        keys = _or_empty(pseudonyms, ["customer_id", "customer_key"])
        out["customer_key"] = ids.merge(keys, on="customer_id", how="left")["customer_key"].to_numpy()
        out["next_category_probability"] = np.round(nxt["next_category_probability"].to_numpy(), 4)
        out["action_channel"] = actions["action_channel"].to_numpy()
        out["action_reason"] = actions["action_reason"].to_numpy()
        prev = (_or_empty(previous, ["customer_id", *PREVIOUS]).drop_duplicates("customer_id")
                .rename(columns={k: f"previous_{k}" for k in PREVIOUS}))
        joined = ids.merge(prev, on="customer_id", how="left")
        for k in PREVIOUS:
            out[f"previous_{k}"] = joined[f"previous_{k}"].astype("Int64" if k == "potential_rank" else "string").set_axis(out.index)
        out["value_reasons"] = value_reasons(parts, f, out, rules.weights, sub=sub, population=self.population)
        return out[SCORE_COLUMNS]


def _or_empty(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """``frame``, or no rows of text ``columns`` when there is none (joins on ``customer_id`` then find nothing)."""
    return frame if frame is not None else pd.DataFrame(columns=columns, dtype=str)


def score_customers(
    features: pd.DataFrame,
    value: pd.DataFrame,
    churn: pd.DataFrame,
    *,
    run_id: str,
    categories: pd.DataFrame | None = None,
    pseudonyms: pd.DataFrame | None = None,
    previous: pd.DataFrame | None = None,
    rules: ScoringRules | None = None,
    batch_rows: int | None = None,
) -> tuple[pd.DataFrame, dict]:
    """One row per customer of ``features`` with every ``customer_scores`` column, and facts for metadata.
    ``batch_rows``: write the per-customer columns that many customers at a time (the result is the same)."""
    scorer = Scorer(features, value, churn, run_id=run_id, rules=rules)
    categories = _or_empty(categories, ["customer_id", "product_category"])
    scorer.learn_categories(categories)
    reasons = churn[["customer_id", "churn_reasons"]]
    step = batch_rows or max(len(scorer), 1)
    batches = [scorer.batch(start, start + step, churn_reasons=reasons, categories=categories, pseudonyms=pseudonyms,
                            previous=previous) for start in range(0, max(len(scorer), 1), step)]
    return pd.concat(batches) if len(batches) > 1 else batches[0], scorer.facts
