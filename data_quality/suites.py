"""Great Expectations suites, one per guarded asset, as code.

Each function returns the suite for one asset; ``n_expected`` is the row count the asset must have
(one row per customer of the table it derives from). The suites validate pandas frames read from
DuckDB through Arrow (GX's SQL datasource over duckdb-engine returned no metrics in a probe).
"""

from __future__ import annotations

from datetime import datetime

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from data_quality.contract import ORDER_STATUSES
from ml.segments import RFM_SEGMENTS

# which columns each suite needs (only these are read from DuckDB)
COLUMNS = {
    "stg_customers": ["customer_id", "created_at", "updated_at", "marketing_consent"],
    "stg_orders": ["order_id", "customer_id", "ordered_at", "amount", "status"],
    "stg_interactions": ["interaction_id", "customer_id", "occurred_at", "satisfaction_score", "nps_score"],
    "customer_features": ["customer_id", "as_of_date", "n_orders", "frequency", "recency_days", "monetary_total",
                          "tenure_days", "btyd_t_days", "btyd_recency_days", "order_trend"],
    "customer_scores": ["customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases",
                        "expected_spend", "clv", "clv_model", "potential_score", "potential_rank", "priority_tier",
                        "rfm_segment", "lifecycle_stage", "value_segment", "next_best_action", "top_reasons",
                        "model_versions", "churn_flag"],
}


def _suite(name: str, expectations: list) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations)


def _key(column: str) -> list:
    return [gxe.ExpectColumnValuesToNotBeNull(column=column), gxe.ExpectColumnValuesToBeUnique(column=column)]


def _not_after(column: str, moment: datetime):
    return gxe.ExpectColumnMaxToBeBetween(column=column, max_value=moment, strict_max=False)


def stg_customers(n_expected: int | None, now: datetime) -> gx.ExpectationSuite:
    return _suite("stg_customers", [
        *_key("customer_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="created_at"),
        _not_after("created_at", now),
        gxe.ExpectColumnValuesToBeInSet(column="marketing_consent", value_set=[True, False]),
    ])


def stg_orders(n_expected: int | None, now: datetime) -> gx.ExpectationSuite:
    return _suite("stg_orders", [
        *_key("order_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="customer_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="ordered_at"),
        _not_after("ordered_at", now),
        gxe.ExpectColumnValuesToNotBeNull(column="amount"),
        gxe.ExpectColumnValuesToBeBetween(column="amount", min_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(ORDER_STATUSES)),
    ])


def stg_interactions(n_expected: int | None, now: datetime) -> gx.ExpectationSuite:
    return _suite("stg_interactions", [
        *_key("interaction_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="customer_id"),
        _not_after("occurred_at", now),
        gxe.ExpectColumnValuesToBeBetween(column="satisfaction_score", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToBeBetween(column="nps_score", min_value=0, max_value=10),
    ])


def customer_features(n_expected: int | None, now: datetime) -> gx.ExpectationSuite:
    counts = ["n_orders", "frequency", "recency_days", "monetary_total", "tenure_days", "btyd_t_days",
              "btyd_recency_days"]
    return _suite("customer_features", [
        *_key("customer_id"),
        *([gxe.ExpectTableRowCountToEqual(value=n_expected)] if n_expected is not None else []),
        gxe.ExpectColumnValuesToNotBeNull(column="as_of_date"),
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in counts],
        gxe.ExpectColumnValuesToBeBetween(column="order_trend", min_value=-1, max_value=1),
    ])


def customer_scores(n_expected: int | None, now: datetime) -> gx.ExpectationSuite:
    n = n_expected
    not_null = ["as_of_date", "run_id", "churn_probability", "expected_purchases", "expected_spend", "clv",
                "clv_model", "potential_score", "potential_rank", "lifecycle_stage", "value_segment",
                "next_best_action", "top_reasons", "model_versions"]
    return _suite("customer_scores", [
        *_key("customer_id"),
        *([gxe.ExpectTableRowCountToEqual(value=n)] if n is not None else []),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in not_null],
        gxe.ExpectColumnValuesToBeBetween(column="churn_probability", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="p_alive", min_value=0, max_value=1),
        # p_alive is null exactly for customers without a purchase (the data contract), churn_flag null or words
        gxe.ExpectColumnValuesToNotBeNull(column="p_alive", row_condition=Column("lifecycle_stage") != "prospect"),
        gxe.ExpectColumnValuesToBeNull(column="p_alive", row_condition=Column("lifecycle_stage") == "prospect"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="churn_flag", min_value=1),
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("clv", "expected_spend", "expected_purchases")],
        gxe.ExpectColumnValuesToBeBetween(column="potential_score", min_value=0, max_value=100),
        *_key("potential_rank"),
        gxe.ExpectColumnValuesToBeBetween(column="potential_rank", min_value=1, max_value=n) if n else
        gxe.ExpectColumnValuesToBeBetween(column="potential_rank", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="priority_tier", value_set=["A", "B", "C", "D"]),
        gxe.ExpectColumnValuesToBeInSet(column="rfm_segment", value_set=RFM_SEGMENTS),
    ])


SUITES = {
    "stg_customers": stg_customers,
    "stg_orders": stg_orders,
    "stg_interactions": stg_interactions,
    "customer_features": customer_features,
    "customer_scores": customer_scores,
}
