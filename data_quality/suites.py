"""Great Expectations suites, one per guarded asset, as code.

GX guards what the dbt tests do not see: the model features as the models read them, and the Python-built
scores before dbt or anyone reads them. The source rows are held to the data contract by dbt, from its one
declaration (``contract_holds`` and the quarantine's tests); GX no longer repeats those checks on staging.

Each function returns the suite for one asset; ``n_expected`` is the row count the asset must have
(one row per customer of the table it derives from). The suites validate pandas frames read from
DuckDB through Arrow (GX's SQL datasource over duckdb-engine returned no metrics in a probe).
"""

from __future__ import annotations

from datetime import datetime

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from ml.segments import RFM_SEGMENTS

# which columns each suite needs (only these are read from DuckDB)
COLUMNS = {
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
    "customer_features": customer_features,
    "customer_scores": customer_scores,
}
