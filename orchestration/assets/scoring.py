"""Customer scores: reads ``marts.customer_features`` and writes ``scores.customer_scores``."""


import dagster as dg

from ml.scoring import score_customers
from orchestration.assets.churn import CUSTOMER_CHURN
from orchestration.assets.ingest import CUSTOMER_PSEUDONYMS
from orchestration.assets.value_models import CUSTOMER_VALUE
from orchestration.settings import PipelineSettings

CUSTOMER_FEATURES = dg.AssetKey(["marts", "customer_features"])
CUSTOMER_SCORES = dg.AssetKey(["scores", "customer_scores"])


@dg.asset(
    key=CUSTOMER_SCORES,
    deps=[CUSTOMER_FEATURES, CUSTOMER_VALUE, CUSTOMER_CHURN, CUSTOMER_PSEUDONYMS],
    group_name="scoring",
    kinds={"python", "duckdb"},
    description="One row per customer with every customer_scores column of the data contract "
    "(interim RFM-and-rate rules until the value and churn models land; see ml.scoring.py).",
)
def customer_scores(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    with settings.warehouse() as con:
        features = con.sql("select * from marts.customer_features").to_arrow_table().to_pandas()
        value = con.sql("select * from scores.customer_value").to_arrow_table().to_pandas()
        churn = con.sql("select * from scores.customer_churn").to_arrow_table().to_pandas()
        keys = con.sql("select customer_id, customer_key from ops.customer_pseudonyms").to_arrow_table().to_pandas()
        scores = score_customers(features, value, churn, pseudonyms=keys, run_id=context.run_id,
                                 currency=settings.reporting_currency)
        con.execute("create schema if not exists scores")
        con.register("scores_df", scores)
        con.execute("create or replace table scores.customer_scores as select * from scores_df")
        con.unregister("scores_df")
    context.log.info(f"scored {len(scores):,} customers")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "clv_model": str(scores["clv_model"].iloc[0]) if len(scores) else "",
            "mean_churn_probability": float(scores["churn_probability"].mean()),
            "total_clv": float(scores["clv"].sum()),
            "tier_counts": dg.MetadataValue.json(scores["priority_tier"].value_counts().sort_index().to_dict()),
        }
    )
