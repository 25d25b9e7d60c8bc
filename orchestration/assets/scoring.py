"""Customer scores: reads ``marts.customer_features`` and writes ``scores.customer_scores``."""


from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from ml.scoring import PREVIOUS, score_customers
from orchestration.assets.churn import CUSTOMER_CHURN
from orchestration.assets.ingest import CUSTOMER_PSEUDONYMS
from orchestration.assets.value_models import CUSTOMER_VALUE
from orchestration.memory import release_memory
from orchestration.settings import PipelineSettings

CUSTOMER_FEATURES = dg.AssetKey(["marts", "customer_features"])
CUSTOMER_SCORES = dg.AssetKey(["scores", "customer_scores"])


@dg.asset(
    key=CUSTOMER_SCORES,
    deps=[CUSTOMER_FEATURES, CUSTOMER_VALUE, CUSTOMER_CHURN, CUSTOMER_PSEUDONYMS,
          dg.AssetKey(["intermediate", "int_customer_categories"])],
    group_name="scoring",
    kinds={"python", "duckdb"},
    description="One row per customer: model predictions, potential score, rank, tier, segments, clusters, "
    "next category and next best action (see ml/scoring.py).",
)
def customer_scores(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    release_memory()
    rules = settings.scoring_rules()
    with settings.warehouse() as con:
        as_of = settings.resolve_as_of(con)
        features = con.sql("select * from marts.customer_features").to_arrow_table().to_pandas()
        value = con.sql("select * from scores.customer_value").to_arrow_table().to_pandas()
        churn = con.sql("select * from scores.customer_churn").to_arrow_table().to_pandas()
        keys = con.sql("select customer_id, customer_key from ops.customer_pseudonyms").to_arrow_table().to_pandas()
        categories = con.sql(
            "select customer_id, product_category, n_orders, last_ordered_at from intermediate.int_customer_categories "
            "where cutoff_date = ?", params=[as_of]).to_arrow_table().to_pandas()
    # scored with the connection closed: DuckDB's cache of what was just read is not held meanwhile
    previous = last_published_segments(settings.serving_file)
    scores, facts = score_customers(features, value, churn, run_id=context.run_id, categories=categories,
                                    pseudonyms=keys, previous=previous, rules=rules)
    del features, value, churn, keys, categories
    release_memory()
    with settings.warehouse() as con:
        con.execute("create schema if not exists scores")
        con.register("scores_df", scores)
        con.execute("create or replace table scores.customer_scores as select * from scores_df")
        con.unregister("scores_df")
    context.log.info(f"scored {len(scores):,} customers; {facts['clusters_k']} behavioural clusters "
                     f"(silhouette {facts['clusters_silhouette']:.3f})")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "clv_model": str(scores["clv_model"].iloc[0]) if len(scores) else "",
            "mean_churn_probability": float(scores["churn_probability"].mean()),
            "total_clv": float(scores["clv"].sum()),
            "tier_counts": dg.MetadataValue.json(scores["priority_tier"].value_counts().sort_index().to_dict()),
            "action_counts": dg.MetadataValue.json(scores["next_best_action"].value_counts().to_dict()),
            "clusters": dg.MetadataValue.json({str(k): v for k, v in facts["cluster_descriptions"].items()}),
            "clusters_silhouette": facts["clusters_silhouette"],
            "potential_weights": dg.MetadataValue.json(rules.weights),
        }
    )


def last_published_segments(serving_file: Path) -> pd.DataFrame | None:
    """Segments, stage, tier and rank per customer in the current publication (None before the first)."""
    if not Path(serving_file).exists():
        return None
    try:
        with duckdb.connect(str(serving_file), read_only=True) as con:
            return con.sql(f"select customer_id, {', '.join(PREVIOUS)} from customer_scores").to_arrow_table().to_pandas()
    except duckdb.Error:  # a publication from before these columns existed
        return None
