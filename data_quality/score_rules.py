"""Rules for the model outputs ``customer_value`` and ``customer_churn`` (portable SQL, pushed into the warehouse:
DuckDB or Spark, ``orchestration/warehouse.py``).

The published ``customer_scores`` and the staging and feature tables are guarded by the Great
Expectations suites in ``data_quality/suites.py``."""

from __future__ import annotations


VALUE_COLUMNS = ("p_alive", "expected_purchases", "prob_no_purchase_churn_horizon", "expected_spend", "clv",
                 "expected_purchases_low", "expected_purchases_high", "clv_low", "clv_high")


def value_violations(warehouse, value: str, features: str) -> dict[str, int]:
    """Rules for the value model's predictions (``scores.customer_value``)."""
    rules = {
        "one row per customer of customer_features": f"""
            select (select count(*) from {features}) <> count(*) or count(distinct customer_id) <> count(*)
            from {value}""",
        "probabilities within 0..1": f"""
            select count(*) from {value}
            where p_alive not between 0 and 1 or prob_no_purchase_churn_horizon not between 0 and 1""",
        "clv_model not null": f"select count(*) from {value} where clv_model is null",
        "intervals hold their point prediction": f"""
            select count(*) from {value}
            where not (expected_purchases_low <= expected_purchases and expected_purchases <= expected_purchases_high
                       and clv_low <= clv and clv <= clv_high)""",
    }
    for col in VALUE_COLUMNS:
        rules[f"{col} finite and >= 0"] = f"select count(*) from {value} where {col} is null or isnan({col}) or {col} < 0"
    return {name: int(warehouse.scalar(sql)) for name, sql in rules.items()}


def churn_violations(warehouse, churn: str, features: str) -> dict[str, int]:
    """Rules for the churn predictions (``scores.customer_churn``)."""
    rules = {
        "one row per customer of customer_features": f"""
            select (select count(*) from {features}) <> count(*) or count(distinct customer_id) <> count(*)
            from {churn}""",
        "churn_probability within 0..1": f"""
            select count(*) from {churn}
            where churn_probability is null or isnan(churn_probability) or churn_probability not between 0 and 1""",
        "churn_reasons and churn_model not null": f"select count(*) from {churn} where churn_reasons is null or churn_model is null",
    }
    return {name: int(warehouse.scalar(sql)) for name, sql in rules.items()}
