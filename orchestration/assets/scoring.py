"""Customer scores: reads ``marts.customer_features`` and the model steps' tables and writes
``scores.customer_scores`` where the data is (``ml/scoring.py`` ``score_in_warehouse``: SQL window functions
and mapped passes, on DuckDB or Spark); then back-tests ``next_category`` at the churn test cutoff
(``ml/next_category.py``) into ``ops.model_performance``.

scikit-learn (clusters) is imported when the step runs (see ``value_models.py``)."""

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from ml.windows import Windows
from orchestration.assets.churn import CUSTOMER_CHURN
from orchestration.assets.ingest import CUSTOMER_PSEUDONYMS
from orchestration.assets.value_models import CUSTOMER_VALUE
from orchestration.memory import release_memory
from orchestration.publication import ensure_model_performance
from orchestration.settings import PipelineSettings
from orchestration.warehouse import DuckDBWarehouse, Warehouse

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
    from ml.scoring import ScoringSources, score_in_warehouse

    release_memory()
    rules = settings.scoring_rules()
    with settings.open_warehouse(for_models=True) as warehouse:
        windows = settings.run_windows(warehouse, context.run_id)
        previous = _previous_publication(settings, warehouse)
        try:
            facts = score_in_warehouse(
                warehouse, as_of=windows.as_of, run_id=context.run_id, target=STAGED,
                sources=ScoringSources(previous=previous), rules=rules, rows=settings.scoring_batch_rows,
                on_batch=lambda done: context.log.info(f"scores written for {done:,} customers"), log=context.log.info)
        finally:
            if previous == PREVIOUS_COPY:
                warehouse.execute(f"drop table if exists {PREVIOUS_COPY}")
        warehouse.swap(STAGED, "scores.customer_scores")
        summary = _summary(warehouse)
    n = facts["customers"]
    context.log.info(f"scored {n:,} customers; {facts['clusters_k']} behavioural clusters "
                     f"(silhouette {facts['clusters_silhouette']:.3f})")
    release_memory()
    backtest = next_category_backtest(context, settings, windows)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            **summary,
            "clusters": dg.MetadataValue.json({str(k): v for k, v in facts["cluster_descriptions"].items()}),
            "clusters_silhouette": facts["clusters_silhouette"],
            "potential_weights": dg.MetadataValue.json(rules.weights),
            **backtest,
        }
    )


STAGED = "scores.customer_scores__next"
PREVIOUS_COPY = "scores.scoring_previous"


def _previous_publication(settings: PipelineSettings, warehouse: Warehouse) -> str | None:
    """A table of the warehouse with the last publication's ``customer_id`` and ``PREVIOUS`` columns, or None
    before the first publication (or one from before those columns). On Spark the published view
    ``serving.customer_scores``; on DuckDB the publication is another file: its columns are copied in
    (``PREVIOUS_COPY``, dropped after scoring)."""
    from ml.scoring import PREVIOUS

    columns = ["customer_id", *PREVIOUS]
    if settings.engine == "spark":
        from orchestration.publication_spark import SERVING

        if "customer_scores" in warehouse.tables(SERVING, views=True) and \
                set(columns) <= set(warehouse.columns(f"{SERVING}.customer_scores")):
            return f"{SERVING}.customer_scores"
        return None
    with _serving(settings.serving_file) as serving:
        if serving is None:
            return None
        warehouse.execute(f"drop table if exists {PREVIOUS_COPY}")
        warehouse.execute("create schema if not exists scores")
        empty = serving.arrow(f"select {', '.join(columns)} from customer_scores limit 0")
        warehouse.write(PREVIOUS_COPY, empty)
        for batch in serving.stream(f"select {', '.join(columns)} from customer_scores"):
            warehouse.write(PREVIOUS_COPY, pa.Table.from_batches([batch]), append=True)
    return PREVIOUS_COPY


def _summary(warehouse: Warehouse) -> dict:
    """Asset metadata from the table just written."""
    mean_churn, total_clv, model = warehouse.rows(
        "select avg(churn_probability), coalesce(sum(clv), 0), min(clv_model) from scores.customer_scores")[0]
    tiers = dict(warehouse.rows("select priority_tier, count(*) from scores.customer_scores group by 1 order by 1"))
    actions = dict(warehouse.rows("select next_best_action, count(*) from scores.customer_scores group by 1 "
                                  "order by 2 desc, 1"))
    return {"clv_model": model or "", "mean_churn_probability": float(mean_churn) if mean_churn is not None else
            float("nan"), "total_clv": float(total_clv), "tier_counts": dg.MetadataValue.json(tiers),
            "action_counts": dg.MetadataValue.json(actions)}


@contextmanager
def _serving(serving_file: Path):
    """The current publication (a DuckDB file), read-only, for last night's segments (None before the first, or
    when it predates those columns)."""
    from ml.scoring import PREVIOUS

    con = None
    if Path(serving_file).exists():
        try:
            con = duckdb.connect(str(serving_file), read_only=True)
            con.execute(f"select customer_id, {', '.join(PREVIOUS)} from customer_scores limit 0")
        except duckdb.Error:  # a publication from before these columns existed
            if con is not None:
                con.close()
            con = None
    try:
        yield None if con is None else DuckDBWarehouse(con)
    finally:
        if con is not None:
            con.close()


CATEGORIES_AT = ("select customer_id, product_category, n_orders, last_ordered_at, category_rank "
                 "from intermediate.int_customer_categories where cutoff_date = ?")


def _categories_of(warehouse: Warehouse, day, customers) -> pd.DataFrame:
    """``CATEGORIES_AT`` ``day`` for ``customers`` (an array of ids; None: every customer)."""
    if customers is None:
        return warehouse.frame(CATEGORIES_AT, [day])
    return warehouse.frame(CATEGORIES_AT + " and customer_id in (select customer_id from _wanted_customers)", [day],
                           {"_wanted_customers": pa.table({"customer_id": customers})})


def next_category_backtest(context: dg.AssetExecutionContext, settings: PipelineSettings, windows: Windows) -> dict:
    """Back-tests ``next_category`` at the churn test cutoff against the popular and most-frequent baselines
    (on a sample of at most ``EVAL_ROWS`` customers known at the cutoff, drawn by the engine), replaces this run's ``next_category`` rows in ``ops.model_performance`` and returns asset metadata.
    Writes no rows (and says why) when the cutoff or its categories are missing or nobody can be evaluated."""
    from ml.clusters import behaviour_clusters
    from ml.cutoff_data import EVAL_ROWS, CutoffData
    from ml.next_category import (CLUSTER_COLUMNS, TASK, backtest_next_category, beats_baselines, performance_rows,
                                  summary_markdown)

    as_of, cutoff = windows.as_of, windows.churn_test
    with settings.open_warehouse(for_models=True) as warehouse:
        known = warehouse.scalar("select count(*) from intermediate.int_cutoffs where cutoff_date = ?", [cutoff])
        if known:
            data = CutoffData(warehouse)
            customers = data.sample(cutoff, EVAL_ROWS, seed=2)  # None: every customer
            features = data.features(cutoff, CLUSTER_COLUMNS, customers=customers)
            at_cutoff, now = (_categories_of(warehouse, day, customers) for day in (cutoff, as_of))
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
    with settings.open_warehouse(for_models=True) as warehouse:
        ensure_model_performance(warehouse)
        warehouse.replace_rows("ops.model_performance", pd.DataFrame(rows), {"run_id": context.run_id, "task": TASK})
    if why:
        context.log.info(f"next category: not back-tested: {why}")
        return {"next_category_backtest": f"not back-tested: {why}"}
    beats = beats_baselines(metrics)
    context.log.info(f"next category back-test at {cutoff} (top-1 / top-3 hit rates; beats both baselines: {beats}):\n"
                     + summary_markdown(metrics))
    return {"next_category_backtest": dg.MetadataValue.md(summary_markdown(metrics)),
            "next_category_beats_baselines": dg.MetadataValue.json(beats)}
