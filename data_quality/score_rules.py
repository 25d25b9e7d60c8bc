"""Rules that ``customer_scores`` must satisfy before anything is published (SQL, pushed into DuckDB)."""

from __future__ import annotations

import duckdb

from ml.scoring import SCORE_COLUMNS

PROBABILITY_COLUMNS = ("churn_probability", "p_alive")
NOT_NULL_COLUMNS = (
    "customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_model", "potential_score", "potential_rank", "priority_tier",
    "rfm_segment", "lifecycle_stage", "value_segment", "next_best_action", "model_versions",
)


def score_violations(con: duckdb.DuckDBPyConnection, scores: str, features: str) -> dict[str, int]:
    """Count of offending rows per rule (0 everywhere = pass). Table names are trusted identifiers."""
    columns = [r[0] for r in con.execute(f"describe {scores}").fetchall()]
    missing = [c for c in SCORE_COLUMNS if c not in columns]
    if missing:
        return {f"missing column {c}": 1 for c in missing}
    rules = {
        "one row per customer of customer_features": f"""
            select (select count(*) from {features}) <> count(*) or count(distinct customer_id) <> count(*)
                   or count(*) filter (where customer_id not in (select customer_id from {features})) > 0
            from {scores}""",
        "potential_rank is 1..N without gaps": f"""
            select count(*) > 0 and (min(potential_rank) <> 1 or max(potential_rank) <> count(*)
                   or count(distinct potential_rank) <> count(*)) from {scores}""",
        "potential_score within 0..100": f"select count(*) from {scores} where potential_score not between 0 and 100",
        "clv, expected_spend and expected_purchases >= 0": f"""
            select count(*) from {scores} where clv < 0 or expected_spend < 0 or expected_purchases < 0
                   or isnan(clv) or isnan(expected_spend) or isnan(expected_purchases)""",
    }
    for col in PROBABILITY_COLUMNS:
        rules[f"{col} within 0..1"] = f"select count(*) from {scores} where {col} not between 0 and 1 or isnan({col})"
    for col in NOT_NULL_COLUMNS:
        rules[f"{col} not null"] = f"select count(*) from {scores} where {col} is null"
    return {name: int(con.execute(sql).fetchall()[0][0]) for name, sql in rules.items()}


VALUE_COLUMNS = ("p_alive", "expected_purchases", "prob_no_purchase_churn_horizon", "expected_spend", "clv")


def value_violations(con: duckdb.DuckDBPyConnection, value: str, features: str) -> dict[str, int]:
    """Rules for the value model's predictions (``scores.customer_value``)."""
    rules = {
        "one row per customer of customer_features": f"""
            select (select count(*) from {features}) <> count(*) or count(distinct customer_id) <> count(*)
            from {value}""",
        "probabilities within 0..1": f"""
            select count(*) from {value}
            where p_alive not between 0 and 1 or prob_no_purchase_churn_horizon not between 0 and 1""",
        "clv_model not null": f"select count(*) from {value} where clv_model is null",
    }
    for col in VALUE_COLUMNS:
        rules[f"{col} finite and >= 0"] = f"select count(*) from {value} where {col} is null or isnan({col}) or {col} < 0"
    return {name: int(con.execute(sql).fetchall()[0][0]) for name, sql in rules.items()}


def churn_violations(con: duckdb.DuckDBPyConnection, churn: str, features: str) -> dict[str, int]:
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
    return {name: int(con.execute(sql).fetchall()[0][0]) for name, sql in rules.items()}
