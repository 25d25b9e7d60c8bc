"""Customer scores: reads ``marts.customer_features`` and writes ``scores.customer_scores``; then back-tests
``next_category`` at the churn test cutoff (``ml/next_category.py``) into ``ops.model_performance``.

scikit-learn (clusters) is imported when the step runs (see ``value_models.py``)."""

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from ml.windows import Windows
from orchestration.assets.churn import CUSTOMER_CHURN
from orchestration.assets.ingest import CUSTOMER_PSEUDONYMS
from orchestration.assets.value_models import CUSTOMER_VALUE
from orchestration.memory import release_memory
from orchestration.publication import ensure_ops_tables
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
    "next category and next best action (see ml/scoring.py); the next-category back-test in model_performance.",
)
def customer_scores(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    from ml.scoring import FEATURE_COLUMNS, score_customers

    release_memory()
    rules = settings.scoring_rules()
    with settings.warehouse(for_models=True) as con:
        windows = settings.run_windows(con, context.run_id)
        as_of = windows.as_of
        columns = ", ".join(FEATURE_COLUMNS)
        features = con.sql(f"select {columns} from marts.customer_features").to_arrow_table().to_pandas()
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
    with settings.warehouse(for_models=True) as con:
        con.execute("create schema if not exists scores")
        con.register("scores_df", scores)
        con.execute("create or replace table scores.customer_scores as select * from scores_df")
        con.unregister("scores_df")
    context.log.info(f"scored {len(scores):,} customers; {facts['clusters_k']} behavioural clusters "
                     f"(silhouette {facts['clusters_silhouette']:.3f})")
    release_memory()
    backtest = next_category_backtest(context, settings, windows)
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
            **backtest,
        }
    )


CATEGORIES_AT = ("select customer_id, product_category, n_orders, last_ordered_at, category_rank "
                 "from intermediate.int_customer_categories where cutoff_date = ?")


def next_category_backtest(context: dg.AssetExecutionContext, settings: PipelineSettings, windows: Windows) -> dict:
    """Back-tests ``next_category`` at the churn test cutoff against the popular and most-frequent baselines,
    replaces this run's ``next_category`` rows in ``ops.model_performance`` and returns asset metadata.
    Writes no rows (and says why) when the cutoff or its categories are missing or nobody can be evaluated."""
    from ml.clusters import behaviour_clusters
    from ml.cutoff_data import CutoffData
    from ml.next_category import (CLUSTER_COLUMNS, TASK, backtest_next_category, beats_baselines, performance_rows,
                                  summary_markdown)

    as_of, cutoff = windows.as_of, windows.churn_test
    with settings.warehouse(for_models=True) as con:
        known = con.execute("select count(*) from intermediate.int_cutoffs where cutoff_date = ?",
                            [cutoff]).fetchall()[0][0]
        if known:
            features = CutoffData(con).features(cutoff, CLUSTER_COLUMNS)
            at_cutoff = con.sql(CATEGORIES_AT, params=[cutoff]).to_arrow_table().to_pandas()
            now = con.sql(CATEGORIES_AT, params=[as_of]).to_arrow_table().to_pandas()
    rows, why = [], None
    if not known:
        why = f"the cutoff {cutoff} is not among the run's cutoffs (int_cutoffs)"
    elif at_cutoff.empty or features.empty:
        why = f"no categorised purchase or no customer by {cutoff}"
    else:
        clusters = behaviour_clusters(features)
        metrics = backtest_next_category(at_cutoff, now, clusters.cluster, features["customer_id"].astype(str), cutoff)
        del features, at_cutoff, now, clusters
        if metrics.empty:
            why = f"no customer known at {cutoff} bought a categorised product in ({cutoff}, {as_of}]"
        else:
            rows = performance_rows(metrics, run_id=context.run_id, as_of=as_of, cutoff=cutoff)
    with settings.warehouse(for_models=True) as con:
        ensure_ops_tables(con)
        con.execute("delete from ops.model_performance where run_id = ? and task = ?", [context.run_id, TASK])
        if rows:
            con.register("perf_df", pd.DataFrame(rows))
            con.execute("insert into ops.model_performance by name select * from perf_df")
            con.unregister("perf_df")
    if why:
        context.log.info(f"next category: not back-tested: {why}")
        return {"next_category_backtest": f"not back-tested: {why}"}
    beats = beats_baselines(metrics)
    context.log.info(f"next category back-test at {cutoff} (top-1 / top-3 hit rates; beats both baselines: {beats}):\n"
                     + summary_markdown(metrics))
    return {"next_category_backtest": dg.MetadataValue.md(summary_markdown(metrics)),
            "next_category_beats_baselines": dg.MetadataValue.json(beats)}


def last_published_segments(serving_file: Path) -> pd.DataFrame | None:
    """Segments, stage, tier and rank per customer in the current publication (None before the first)."""
    from ml.scoring import PREVIOUS

    if not Path(serving_file).exists():
        return None
    try:
        with duckdb.connect(str(serving_file), read_only=True) as con:
            return con.sql(f"select customer_id, {', '.join(PREVIOUS)} from customer_scores").to_arrow_table().to_pandas()
    except duckdb.Error:  # a publication from before these columns existed
        return None
