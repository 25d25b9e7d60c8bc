"""Customer scores: reads ``marts.customer_features`` and writes ``scores.customer_scores``; then back-tests
``next_category`` at the churn test cutoff (``ml/next_category.py``) into ``ops.model_performance``.

scikit-learn (clusters) is imported when the step runs (see ``value_models.py``)."""

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

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
    from ml.scoring import FEATURE_COLUMNS, Scorer

    release_memory()
    rules = settings.scoring_rules()
    with settings.open_warehouse(for_models=True) as warehouse:
        windows = settings.run_windows(warehouse, context.run_id)
        as_of = windows.as_of
        features = warehouse.frame(f"select {', '.join(FEATURE_COLUMNS)} from marts.customer_features")
        value = warehouse.frame("select * from scores.customer_value")
        churn_columns = [c for c in warehouse.columns("scores.customer_churn") if c != "churn_reasons"]
        churn = warehouse.frame(f"select {', '.join(churn_columns)} from scores.customer_churn")
        names = warehouse.frame("select distinct product_category from intermediate.int_customer_categories "
                                "where cutoff_date = ? order by 1", [as_of])
    # pass 1, with the connection closed: DuckDB's cache of what was just read is not held meanwhile
    scorer = Scorer(features, value, churn, run_id=context.run_id, rules=rules)
    del features, value, churn
    release_memory()
    names = names["product_category"].astype(str).to_numpy(dtype=object)
    with settings.open_warehouse(for_models=True) as warehouse, _serving(settings.serving_file) as serving:
        _write_in_batches(warehouse, serving, scorer, names, as_of, settings.scoring_batch_rows, context.log)
        summary = _summary(warehouse)
    facts, n = scorer.facts, len(scorer)
    del scorer
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


CATEGORIES = "select customer_id, product_category, n_orders, last_ordered_at from intermediate.int_customer_categories"


def _write_in_batches(warehouse: Warehouse, serving: Warehouse | None, scorer, names, as_of, batch_rows: int,
                      log) -> None:
    """Pass 2 of ``Scorer``: learns the categories' mix per cluster, then writes ``scores.customer_scores``
    ``batch_rows`` customers at a time into a new table that replaces the old one in one transaction. Each batch
    reads its customers' reasons, keys, categories and last publication's segments by ``customer_id`` range."""
    from ml.scoring import PREVIOUS

    n = len(scorer)
    batches = [(start, min(start + batch_rows, n)) for start in range(0, n, batch_rows)]
    # one batch: its categories are read once, learnt from and predicted for
    everyone = _batch_rows(warehouse, CATEGORIES, scorer, *batches[0], as_of) if len(batches) == 1 else None

    def categories(start: int, stop: int) -> pd.DataFrame:
        return everyone if everyone is not None else _batch_rows(warehouse, CATEGORIES, scorer, start, stop, as_of)

    for start, stop in batches:
        scorer.learn_categories(categories(start, stop), names, start, stop)
    warehouse.execute("create schema if not exists scores")
    warehouse.execute("drop table if exists scores.customer_scores__next")
    for number, (start, stop) in enumerate(batches or [(0, 0)], 1):
        part = scorer.batch(
            start, stop,
            churn_reasons=_batch_rows(warehouse, "select customer_id, churn_reasons from scores.customer_churn",
                                      scorer, start, stop),
            categories=categories(start, stop),
            pseudonyms=_batch_rows(warehouse, "select customer_id, customer_key from ops.customer_pseudonyms",
                                   scorer, start, stop),
            previous=None if serving is None else _batch_rows(
                serving, f"select customer_id, {', '.join(PREVIOUS)} from customer_scores", scorer, start, stop))
        warehouse.write("scores.customer_scores__next", part, append=number > 1)
        del part
        if len(batches) > 1:
            log.info(f"scores written for {stop:,} of {n:,} customers (batch {number} of {len(batches)})")
    warehouse.swap("scores.customer_scores__next", "scores.customer_scores")


def _batch_rows(warehouse: Warehouse, select: str, scorer, start: int, stop: int, as_of=None) -> pd.DataFrame:
    """``select``'s rows for the customers ``start:stop`` of ``scorer`` (a range of ``customer_id``; the engines
    and Python order text the same way, by code point), at ``as_of``'s cutoff when given."""
    ids = scorer.customer_ids(start, stop)
    if ids.empty:
        return warehouse.frame(f"select * from ({select}) picked limit 0")
    where = " where customer_id between ? and ?" + (" and cutoff_date = ?" if as_of is not None else "")
    return warehouse.frame(select + where, [ids.iloc[0], ids.iloc[-1]] + ([as_of] if as_of is not None else []))


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


def next_category_backtest(context: dg.AssetExecutionContext, settings: PipelineSettings, windows: Windows) -> dict:
    """Back-tests ``next_category`` at the churn test cutoff against the popular and most-frequent baselines,
    replaces this run's ``next_category`` rows in ``ops.model_performance`` and returns asset metadata.
    Writes no rows (and says why) when the cutoff or its categories are missing or nobody can be evaluated."""
    from ml.clusters import behaviour_clusters
    from ml.cutoff_data import CutoffData
    from ml.next_category import (CLUSTER_COLUMNS, TASK, backtest_next_category, beats_baselines, performance_rows,
                                  summary_markdown)

    as_of, cutoff = windows.as_of, windows.churn_test
    with settings.open_warehouse(for_models=True) as warehouse:
        known = warehouse.scalar("select count(*) from intermediate.int_cutoffs where cutoff_date = ?", [cutoff])
        if known:
            features = CutoffData(warehouse).features(cutoff, CLUSTER_COLUMNS)
            at_cutoff = warehouse.frame(CATEGORIES_AT, [cutoff])
            now = warehouse.frame(CATEGORIES_AT, [as_of])
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
