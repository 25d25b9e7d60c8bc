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
    from ml.scoring import FEATURE_COLUMNS, Scorer

    release_memory()
    rules = settings.scoring_rules()
    with settings.warehouse(for_models=True) as con:
        windows = settings.run_windows(con, context.run_id)
        as_of = windows.as_of
        columns = ", ".join(FEATURE_COLUMNS)
        features = con.sql(f"select {columns} from marts.customer_features").to_arrow_table().to_pandas()
        value = con.sql("select * from scores.customer_value").to_arrow_table().to_pandas()
        churn = con.sql("select * exclude (churn_reasons) from scores.customer_churn").to_arrow_table().to_pandas()
        names = con.sql("select distinct product_category from intermediate.int_customer_categories "
                        "where cutoff_date = ? order by 1", params=[as_of]).to_arrow_table().to_pandas()
    # pass 1, with the connection closed: DuckDB's cache of what was just read is not held meanwhile
    scorer = Scorer(features, value, churn, run_id=context.run_id, rules=rules)
    del features, value, churn
    release_memory()
    names = names["product_category"].astype(str).to_numpy(dtype=object)
    with settings.warehouse(for_models=True) as con, _serving(settings.serving_file) as serving:
        _write_in_batches(con, serving, scorer, names, as_of, settings.scoring_batch_rows, context.log)
        summary = _summary(con)
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


def _write_in_batches(con: duckdb.DuckDBPyConnection, serving: duckdb.DuckDBPyConnection | None, scorer, names,
                      as_of, batch_rows: int, log) -> None:
    """Pass 2 of ``Scorer``: learns the categories' mix per cluster, then writes ``scores.customer_scores``
    ``batch_rows`` customers at a time into a new table that replaces the old one in one transaction. Each batch
    reads its customers' reasons, keys, categories and last publication's segments by ``customer_id`` range."""
    from ml.scoring import PREVIOUS

    n = len(scorer)
    batches = [(start, min(start + batch_rows, n)) for start in range(0, n, batch_rows)]
    # one batch: its categories are read once, learnt from and predicted for
    everyone = _batch_rows(con, CATEGORIES, scorer, *batches[0], as_of) if len(batches) == 1 else None

    def categories(start: int, stop: int) -> pd.DataFrame:
        return everyone if everyone is not None else _batch_rows(con, CATEGORIES, scorer, start, stop, as_of)

    for start, stop in batches:
        scorer.learn_categories(categories(start, stop), names, start, stop)
    con.execute("create schema if not exists scores")
    con.execute("drop table if exists scores.customer_scores__next")
    for number, (start, stop) in enumerate(batches or [(0, 0)], 1):
        part = scorer.batch(
            start, stop,
            churn_reasons=_batch_rows(con, "select customer_id, churn_reasons from scores.customer_churn",
                                      scorer, start, stop),
            categories=categories(start, stop),
            pseudonyms=_batch_rows(con, "select customer_id, customer_key from ops.customer_pseudonyms",
                                   scorer, start, stop),
            previous=None if serving is None else _batch_rows(
                serving, f"select customer_id, {', '.join(PREVIOUS)} from customer_scores", scorer, start, stop))
        con.register("scores_df", part)
        con.execute("create table scores.customer_scores__next as select * from scores_df" if number == 1
                    else "insert into scores.customer_scores__next select * from scores_df")
        con.unregister("scores_df")
        del part
        if len(batches) > 1:
            log.info(f"scores written for {stop:,} of {n:,} customers (batch {number} of {len(batches)})")
    con.execute("begin")
    con.execute("drop table if exists scores.customer_scores")
    con.execute("alter table scores.customer_scores__next rename to customer_scores")
    con.execute("commit")


def _batch_rows(con: duckdb.DuckDBPyConnection, select: str, scorer, start: int, stop: int,
                as_of=None) -> pd.DataFrame:
    """``select``'s rows for the customers ``start:stop`` of ``scorer`` (a range of ``customer_id``; DuckDB and
    Python order text the same way, by code point), at ``as_of``'s cutoff when given."""
    ids = scorer.customer_ids(start, stop)
    if ids.empty:
        return con.sql(f"select * from ({select}) limit 0").to_arrow_table().to_pandas()
    where = " where customer_id between ? and ?" + (" and cutoff_date = ?" if as_of is not None else "")
    params = [ids.iloc[0], ids.iloc[-1]] + ([as_of] if as_of is not None else [])
    return con.sql(select + where, params=params).to_arrow_table().to_pandas()


def _summary(con: duckdb.DuckDBPyConnection) -> dict:
    """Asset metadata from the table just written."""
    mean_churn, total_clv, model = con.execute(
        "select avg(churn_probability), coalesce(sum(clv), 0), min(clv_model) from scores.customer_scores").fetchall()[0]
    tiers = dict(con.execute("select priority_tier, count(*) from scores.customer_scores group by 1 "
                             "order by 1").fetchall())
    actions = dict(con.execute("select next_best_action, count(*) from scores.customer_scores group by 1 "
                               "order by 2 desc, 1").fetchall())
    return {"clv_model": model or "", "mean_churn_probability": float(mean_churn) if mean_churn is not None else
            float("nan"), "total_clv": float(total_clv), "tier_counts": dg.MetadataValue.json(tiers),
            "action_counts": dg.MetadataValue.json(actions)}


@contextmanager
def _serving(serving_file: Path):
    """The current publication, read-only, for last night's segments (None before the first, or when it
    predates those columns)."""
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
        yield con
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
