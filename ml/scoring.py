"""customer_scores: the value model's predictions plus ranking, segments, actions and reasons.

Model outputs (``ml/value_models.py``): ``p_alive``, ``expected_purchases``, ``expected_spend`` and
``clv`` from the back-tested champion; ``churn_probability`` is, until the churn model lands, the BG/NBD
probability of no purchase within the churn horizon (for leads: the share of leads that did not buy
in the latest complete churn window).

Still interim, transparent rules (replaced by the potential-score work):

* ``potential_score = 100 * (0.6 * clv percentile + 0.25 * (1 - churn_probability) + 0.15 * reachability)``
  with reachability 1 (marketing consent), 0.5 (unknown) or 0 (no consent);
* lifecycle stage, value segment, next best action and reasons from the rules below.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ml.ranking import potential_rank, priority_tier
from ml.segments import rfm_scores, rfm_segment

RULES_VERSION = "rules-1"
SCORE_COLUMNS = [
    "customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_model", "potential_score", "potential_rank", "priority_tier",
    "rfm_segment", "lifecycle_stage", "value_segment", "next_best_action", "next_category",
    "top_reasons", "model_versions", "r_score", "f_score", "m_score",
]


def lifecycle_stage(f: pd.DataFrame, churn: pd.Series) -> pd.Series:
    rec = f["recency_days"].astype(float)
    n = f["n_orders"].astype(float)
    first_age = f["btyd_t_days"].astype(float)
    conditions = [
        n == 0,
        rec > 365,
        rec > 180,
        first_age <= 90,
        churn > 0.6,
        n >= 5,
        n >= 2,
    ]
    choices = ["prospect", "churned", "lapsed", "new", "at risk", "loyal", "repeat"]
    return pd.Series(np.select(conditions, choices, default="active"), index=f.index, dtype=object)


def value_segment(clv: pd.Series) -> pd.Series:
    pct = clv.rank(method="average", pct=True)
    out = np.where(clv <= 0, "none", np.where(pct > 0.8, "high", np.where(pct > 0.5, "medium", "low")))
    return pd.Series(out, index=clv.index, dtype=object)


def next_best_action(tier: pd.Series, stage: pd.Series, churn: pd.Series, consent: pd.Series) -> pd.Series:
    no_consent = consent.eq(False).to_numpy()
    high_value = tier.isin(["A", "B"]).to_numpy()
    conditions = [
        high_value & (churn.to_numpy() > 0.5) & ~stage.isin(["churned"]).to_numpy(),
        no_consent,
        stage.isin(["prospect", "new"]).to_numpy(),
        stage.isin(["lapsed", "churned"]).to_numpy() & high_value,
        stage.isin(["lapsed", "churned"]).to_numpy(),
        tier.eq("A").to_numpy(),
        tier.isin(["B", "C"]).to_numpy(),
    ]
    choices = ["retention_call", "no_action", "onboarding", "win_back_offer", "nurture", "upsell", "cross_sell"]
    return pd.Series(np.select(conditions, choices, default="nurture"), index=tier.index, dtype=object)


def _int_text(values: pd.Series) -> pd.Series:
    return values.fillna(0).round().astype("int64").astype(str)


def top_reasons(f: pd.DataFrame, churn: pd.Series, currency: str) -> pd.Series:
    """Up to three plain-word reasons per customer, most important first (vectorised)."""
    spend_money = f["spend_last_365d"].map("{:,.0f}".format)
    candidates = [
        (f["n_orders"] == 0, pd.Series("no purchase yet", index=f.index)),
        (f["recency_days"].fillna(0) >= 90, "no purchase for " + _int_text(f["recency_days"]) + " days"),
        (f["unresolved_complaints"] > 0, _int_text(f["unresolved_complaints"]) + " unresolved complaint(s)"),
        (f["order_trend"] < -0.3, pd.Series("fewer orders than in the previous 90 days", index=f.index)),
        (f["last_satisfaction_score"].fillna(5) <= 2,
         "low satisfaction (" + _int_text(f["last_satisfaction_score"]) + "/5)"),
        (f["order_trend"] > 0.3, pd.Series("more orders than in the previous 90 days", index=f.index)),
        (f["spend_last_365d"] > f["spend_last_365d"].quantile(0.9),
         "high spend: " + spend_money + f" {currency} in the last year"),
        (f["n_orders"] >= 5, "bought " + _int_text(f["n_orders"]) + " times"),
        (f["n_categories"] >= 3, "buys in " + _int_text(f["n_categories"]) + " categories"),
        (churn < 0.2, pd.Series("buys regularly", index=f.index)),
    ]
    text = pd.Series("", index=f.index, dtype=object)
    used = np.zeros(len(f), dtype=int)
    for mask, words in candidates:
        take = mask.fillna(False).to_numpy(dtype=bool) & (used < 3)
        sep = np.where(used[take] > 0, "; ", "")
        text[take] = text[take].to_numpy() + sep + words[take].to_numpy()
        used += take
    return text


def score_customers(
    features: pd.DataFrame,
    value: pd.DataFrame,
    *,
    run_id: str,
    currency: str = "EUR",
) -> pd.DataFrame:
    """One row per customer of ``features`` with every ``customer_scores`` column."""
    f = features.sort_values("customer_id").reset_index(drop=True)
    v = f[["customer_id"]].merge(value, on="customer_id", how="left", validate="one_to_one")
    if v.clv.isna().any():
        raise ValueError(f"{int(v.clv.isna().sum())} customers have no value prediction")
    out = pd.DataFrame({"customer_id": f["customer_id"].astype(str)})
    out["as_of_date"] = f["as_of_date"]
    out["run_id"] = run_id
    out["churn_probability"] = v["prob_no_purchase_churn_horizon"].clip(0, 1).to_numpy()
    out["p_alive"] = v["p_alive"].clip(0, 1).to_numpy()
    out["expected_purchases"] = v["expected_purchases"].to_numpy()
    out["expected_spend"] = v["expected_spend"].to_numpy()
    out["clv"] = v["clv"].to_numpy()
    out["clv_model"] = v["clv_model"].to_numpy()
    consent = f["marketing_consent"]
    reach = np.where(consent.eq(True), 1.0, np.where(consent.eq(False), 0.0, 0.5))
    clv_pct = out["clv"].rank(method="average", pct=True).to_numpy()
    out["potential_score"] = np.round(100 * (0.6 * clv_pct + 0.25 * (1 - out["churn_probability"]) + 0.15 * reach), 4)
    out["potential_rank"] = potential_rank(out["potential_score"], out["clv"], out["customer_id"])
    out["priority_tier"] = priority_tier(out["potential_rank"])
    rfm = rfm_scores(f["recency_days"], f["n_orders"], f["monetary_total"])
    out["rfm_segment"] = rfm_segment(rfm["r_score"], rfm["f_score"], rfm["m_score"])
    out["lifecycle_stage"] = lifecycle_stage(f, out["churn_probability"])
    out["value_segment"] = value_segment(out["clv"])
    out["next_best_action"] = next_best_action(out["priority_tier"], out["lifecycle_stage"], out["churn_probability"], consent)
    popular = f["top_category"].dropna().mode()
    out["next_category"] = f["top_category"].fillna(popular.iloc[0] if len(popular) else "unknown")
    out["top_reasons"] = top_reasons(f, out["churn_probability"], currency)
    versions = {"clv": str(v["clv_model"].iloc[0]) if len(v) else "", "churn": "bgnbd-no-purchase", "scores": RULES_VERSION}
    out["model_versions"] = json.dumps(versions, sort_keys=True)
    out[["r_score", "f_score", "m_score"]] = rfm
    return out[SCORE_COLUMNS]
