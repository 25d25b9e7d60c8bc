"""customer_scores: the value model's predictions plus ranking, segments, actions and reasons.

Model outputs: ``p_alive``, ``expected_purchases``, ``expected_spend`` and ``clv`` from the back-tested
value champion (``ml/value_models.py``); ``churn_probability``, ``churn_flag`` and ``top_reasons`` (the
three features pushing each customer's churn risk up) from the registered churn champion
(``ml/churn.py``); ``potential_drivers`` names the largest parts of the potential score.

Still interim, transparent rules (replaced by the potential-score work):

* ``potential_score = 100 * (0.6 * clv percentile + 0.25 * (1 - churn_probability) + 0.15 * reachability)``
  with reachability 1 (marketing consent), 0.5 (unknown) or 0 (no consent);
* lifecycle stage, value segment and next best action from the rules below.
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
    "top_reasons", "model_versions", "churn_flag", "potential_drivers", "r_score", "f_score", "m_score", "customer_key",
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


def potential_drivers(clv_pct: np.ndarray, churn: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """The potential score's components in plain words, largest contribution first (top 2)."""
    parts = np.column_stack([0.6 * clv_pct, 0.25 * (1 - churn), 0.15 * reach])
    words = np.column_stack([
        np.char.add(np.char.add("expected value in the top ", np.char.mod("%d", np.maximum(1, np.ceil(100 * (1 - clv_pct))).astype(int))), "%"),
        np.char.add(np.char.add("churn risk ", np.char.mod("%d", np.round(100 * churn).astype(int))), "%"),
        np.where(reach >= 1, "marketing consent", np.where(reach > 0, "consent unknown", "no marketing consent")),
    ])
    order = np.argsort(-parts, axis=1)
    first = np.take_along_axis(words, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(words, order[:, 1:2], axis=1)[:, 0]
    return np.char.add(np.char.add(first.astype(str), "; "), second.astype(str)).astype(object)


def score_customers(
    features: pd.DataFrame,
    value: pd.DataFrame,
    churn: pd.DataFrame,
    *,
    pseudonyms: pd.DataFrame | None = None,
    run_id: str,
    currency: str = "EUR",
) -> pd.DataFrame:
    """One row per customer of ``features`` with every ``customer_scores`` column."""
    f = features.sort_values("customer_id").reset_index(drop=True)
    v = f[["customer_id"]].merge(value, on="customer_id", how="left", validate="one_to_one")
    c = f[["customer_id"]].merge(churn, on="customer_id", how="left", validate="one_to_one")
    if v.clv.isna().any() or c.churn_probability.isna().any():
        raise ValueError(
            f"{int(v.clv.isna().sum())} customers have no value prediction, "
            f"{int(c.churn_probability.isna().sum())} no churn prediction"
        )
    out = pd.DataFrame({"customer_id": f["customer_id"].astype(str)})
    out["as_of_date"] = f["as_of_date"]
    out["run_id"] = run_id
    out["churn_probability"] = c["churn_probability"].clip(0, 1).to_numpy()
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
    out["top_reasons"] = c["churn_reasons"].to_numpy()
    versions = {"clv": str(v["clv_model"].iloc[0]) if len(v) else "",
                "churn": str(c["churn_model"].iloc[0]) if len(c) else "", "scores": RULES_VERSION}
    out["model_versions"] = json.dumps(versions, sort_keys=True)
    out["churn_flag"] = c["churn_flag"].to_numpy()
    out["potential_drivers"] = potential_drivers(clv_pct, out["churn_probability"].to_numpy(), reach)
    out[["r_score", "f_score", "m_score"]] = rfm
    keys = pseudonyms if pseudonyms is not None else pd.DataFrame({"customer_id": [], "customer_key": []})
    out["customer_key"] = out[["customer_id"]].merge(keys, on="customer_id", how="left")["customer_key"].to_numpy()
    return out[SCORE_COLUMNS]
