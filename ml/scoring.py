"""customer_scores: the models' predictions plus potential score, rank, tier, segments, next category and
next best action, one row per customer.

* Model outputs: ``p_alive``, ``expected_purchases``, ``expected_spend`` and ``clv`` from the back-tested value
  champion (``ml/value_models.py``); ``churn_probability``, ``churn_flag`` and ``top_reasons`` from the
  registered churn champion (``ml/churn.py``). ``p_alive`` is null for customers without a purchase (a BTYD
  model says nothing about a lead: their churn probability is the leads' rate); ``churn_flag`` is null where
  the score rests on the usual evidence.
* ``potential_score``, its parts and the words behind it (``potential_drivers``, ``value_reasons``;
  ``ml/potential.py``), ``potential_rank`` and ``priority_tier``
  (``ml/ranking.py``), RFM scores and segments (``ml/segments.py``), ``lifecycle_stage`` (dbt macro
  ``lifecycle_stage``, carried in the features), ``value_segment`` (below), behavioural clusters
  (``ml/clusters.py``), ``next_category`` (``ml/next_category.py``) and the next best action
  (``ml/actions.py`` with its rule table).
* ``previous_*``: the customer's segment, stage, tier and rank in the last publication (null if none).

How (``score_in_warehouse``; one path on every engine, so no step pulls every customer through one process):

1. the clusters are fitted on a sample of buyers pulled to this process (``ml/clusters.py``);
2. **pass one** (SQL, then a mapped function): the percentiles that compare a customer with everyone (CLV,
   spend growth, R, F and M among buyers; pandas' average-rank percentile, in exact bucketed SQL,
   ``ml/ranks.py``) and the most categories anyone bought come from the engine; ``PassOne`` turns each
   customer's row into the parts, the potential score, RFM, value segment and cluster
   (``scores.scoring_pass1``);
3. the categories' mix per cluster is summed where the data is (``MixSums``, then a ``group by``), and the
   population means behind ``value_reasons`` are one ``avg`` query;
4. ``potential_rank`` and the tier's rank percentile within its group are bucketed window functions
   (``ml/ranks.py``) on a narrow table; the next category is a mapped pass of its own (``NextCategories``)
   over narrow rows, a customer's id and cluster once per category bought, grouped by block
   (``ml/blocks.py``) so that a customer's categories reach one call;
5. **pass two**: ``PassTwo`` writes every ``customer_scores`` column for any customers, with their rank, tier
   position, next category, reasons, key and last publication's segments joined in.

The mapped functions depend on each customer's rows (and the small state they carry) alone:
DuckDB runs them batch by batch in this process, Spark on its executors (``Warehouse.write_mapped``).
``score_customers`` scores frames in memory through the same path (an in-memory DuckDB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from ml.actions import load_rules, next_best_actions
from ml.blocks import block_key
from ml.clusters import FIT_SAMPLE, ClusterModel, fit_clusters
from ml.next_category import CLUSTER_COLUMNS, CategoryMix, category_weight, next_category
from ml.potential import (DEFAULT_WEIGHTS, HEADROOM_PARTS, PARTS, Population, headroom_parts, potential_drivers,
                          potential_parts, potential_score, value_reasons)
from ml.ranking import DEFAULT_TIER_BOUNDS, tier_group, tier_of
from ml.ranks import cut_points, percentile_query, rank_query, sample_rows
from ml.segments import rfm_from_percentiles, rfm_segment

RULES_VERSION = "rules-3"
SCORE_COLUMNS = [
    "customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_model", "potential_score", "potential_rank", "priority_tier",
    "rfm_segment", "lifecycle_stage", "value_segment", "next_best_action", "next_category",
    "top_reasons", "model_versions", "churn_flag", "potential_drivers", "r_score", "f_score", "m_score", "customer_key",
    "score_value", "score_retention", "score_headroom", "score_reach", "behaviour_cluster", "behaviour_cluster_label",
    "next_category_probability", "action_channel", "action_reason",
    "previous_rfm_segment", "previous_lifecycle_stage", "previous_priority_tier", "previous_potential_rank",
    "expected_purchases_low", "expected_purchases_high", "clv_low", "clv_high", "value_reasons",
]
PREVIOUS = ["rfm_segment", "lifecycle_stage", "priority_tier", "potential_rank"]
# The columns of marts.customer_features that scoring reads: the step reads only these (all 87 columns of a
# million customers were the run's memory peak); tests/test_scoring_rules.py checks the scores are the same.
FEATURE_COLUMNS = [
    "customer_id", "as_of_date", "lifecycle_stage", "tenure_days", "marketing_consent", "preferred_channel",
    "n_orders", "recency_days", "monetary_total", "orders_last_90d", "orders_last_365d", "order_trend",
    "spend_last_365d", "n_categories", "n_interactions_90d", "n_interactions_365d",
]
VALUE_COLUMNS = ["p_alive", "expected_purchases", "expected_spend", "clv", "clv_model", "expected_purchases_low",
                 "expected_purchases_high", "clv_low", "clv_high"]
CHURN_COLUMNS = ["churn_probability", "churn_flag", "churn_model"]
PASS1 = "scores.scoring_pass1"  # work tables, dropped when the step ends
MIX = "scores.scoring_mix"
RANKS = "scores.scoring_ranks"
NEXT = "scores.scoring_next"
CLUSTER_ROWS = 5 * FIT_SAMPLE  # buyers pulled to fit the clusters' scaling (k-means: FIT_SAMPLE of them)
BLOCK = "score_block"


@dataclass
class ScoringRules:
    """The configurable parts of scoring (settings: potential_weights, tier_bounds, action_rules_file)."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    tier_bounds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIER_BOUNDS))
    action_rules: pd.DataFrame = field(default_factory=load_rules)


@dataclass(frozen=True)
class ScoringSources:
    """Where scoring reads: tables (or parenthesised queries) of the warehouse. ``categories`` has a
    ``cutoff_date``; ``previous`` (the last publication's ``customer_id`` and ``PREVIOUS`` columns) and
    ``pseudonyms`` may be missing (then those columns are null)."""

    features: str = "marts.customer_features"
    value: str = "scores.customer_value"
    churn: str = "scores.customer_churn"
    categories: str = "intermediate.int_customer_categories"
    pseudonyms: str | None = "ops.customer_pseudonyms"
    previous: str | None = None


def value_segment(clv: pd.Series, pct=None) -> pd.Series:
    """high (top 20 % by CLV), medium (next 30 %), low, or none (no value expected); ``pct``: the CLV
    percentiles when ``clv`` is a batch of the customers."""
    pct = clv.rank(method="average", pct=True).to_numpy() if pct is None else np.asarray(pct, float)
    out = np.where(clv <= 0, "none", np.where(pct > 0.8, "high", np.where(pct > 0.5, "medium", "low")))
    return pd.Series(out, index=clv.index, dtype=object)


def _joined_query(src: ScoringSources) -> str:
    """A row per customer: the features scoring reads, the value and churn predictions, spend growth, buyer."""
    return f"""
with f as (select {', '.join(FEATURE_COLUMNS)} from {src.features}),
v as (select customer_id, {', '.join(VALUE_COLUMNS)} from {src.value}),
c as (select customer_id, {', '.join(CHURN_COLUMNS)} from {src.churn})
select f.*, {', '.join('v.' + c for c in VALUE_COLUMNS)}, {', '.join('c.' + c for c in CHURN_COLUMNS)},
       v.expected_spend - coalesce(f.spend_last_365d, 0) as growth,
       case when f.n_orders > 0 then 1 else 0 end as buyer
from f left join v on v.customer_id = f.customer_id left join c on c.customer_id = f.customer_id"""


# the percentiles that compare a customer with everyone (with the buyers, for R, F and M): name -> (column,
# descending, buyers only); each a work table of value -> percentile (ml/ranks.py)
PERCENTILES = {"clv_pct": ("clv", False, False), "growth_pct": ("growth", False, False),
               "r_pct": ("recency_days", True, True), "f_pct": ("n_orders", False, True),
               "m_pct": ("monetary_total", False, True)}


def _pct_table(name: str) -> str:
    return f"scores.scoring_{name}"


def _percentiles(warehouse, src: ScoringSources) -> None:
    """The work tables of ``PERCENTILES``, exact, in buckets where the engine wants them."""
    buckets = warehouse.rank_buckets
    columns = sorted({column for column, _, _ in PERCENTILES.values()})
    sample = sample_rows(warehouse, _joined_query(src), [*columns, "buyer"], buckets)
    for name, (column, descending, buyers) in PERCENTILES.items():
        rows = sample if sample is None or not buyers else sample[sample["buyer"] == 1]
        source = f"select * from ({_joined_query(src)}) j" + (" where buyer = 1" if buyers else "")
        warehouse.create_table_as(_pct_table(name), percentile_query(
            source, column, descending, cut_points(rows, [(column, descending)], buckets)))


def _pass1_query(src: ScoringSources) -> str:
    picked, joins = [], []
    for name, (column, _, buyers) in PERCENTILES.items():
        picked.append(f"{name}.pct as {name}")
        joins.append(f"left join {_pct_table(name)} {name} on {name}.pct_value = j.{column}"
                     + (" and j.buyer = 1" if buyers else ""))
    lines = "\n".join(joins)
    return f"""
select j.*, {', '.join(picked)}, m.most_categories
from ({_joined_query(src)}) j
{lines}
cross join (select max(n_categories) as most_categories from {src.features}) m"""


@dataclass
class PassOne:
    """Pass one for any customers' rows of ``_pass1_query``: every number of ``customer_scores`` that does not
    need a rank (kept here unrounded: ``part_*``, ``sub_*``, for pass two), and the cluster."""

    weights: dict[str, float]
    clusters: ClusterModel

    def __call__(self, s: pd.DataFrame) -> pd.DataFrame:
        s = s.sort_values("customer_id").reset_index(drop=True)
        out = pd.DataFrame({"customer_id": s["customer_id"].astype(str), "as_of_date": s["as_of_date"]})
        out["churn_probability"] = s["churn_probability"].astype(float).clip(0, 1)
        no_purchase = s["n_orders"].fillna(0).eq(0).to_numpy()
        out["p_alive"] = np.where(no_purchase, np.nan, s["p_alive"].astype(float).clip(0, 1).to_numpy())
        for col in VALUE_COLUMNS[1:]:
            out[col] = s[col].to_numpy()
        sub = headroom_parts(s, out, spend_growth=s["growth_pct"], most_categories=s["most_categories"].max())
        parts = potential_parts(s, out, sub, value=s["clv_pct"])
        out["potential_score"] = potential_score(parts, self.weights)
        out["tier_group"] = tier_group(s["lifecycle_stage"]).to_numpy()
        rfm = rfm_from_percentiles(s["r_pct"], s["f_pct"], s["m_pct"])
        out["rfm_segment"] = rfm_segment(rfm["r_score"], rfm["f_score"], rfm["m_score"]).to_numpy()
        out["lifecycle_stage"] = s["lifecycle_stage"].astype(object).to_numpy()
        out["value_segment"] = value_segment(out["clv"], s["clv_pct"]).to_numpy()
        versions = pd.Series(list(zip(s["clv_model"].astype(str), s["churn_model"].astype(str))), dtype=object)
        codes, pairs = pd.factorize(versions)
        texts = np.array([json.dumps({"clv": a, "churn": b, "scores": RULES_VERSION}, sort_keys=True)
                          for a, b in pairs] or [""], dtype=object)
        out["model_versions"] = texts[codes] if len(s) else pd.Series([], dtype=object)
        flag = s["churn_flag"].astype(object)
        out["churn_flag"] = pd.array(flag.where(flag.notna() & flag.ne(""), None), dtype="string")
        for col in ("r_score", "f_score", "m_score"):
            out[col] = rfm[col].to_numpy()
        for part in PARTS:
            out[f"score_{part}"] = np.round(parts[part].to_numpy(), 4)
        out["behaviour_cluster"], out["behaviour_cluster_label"] = self.clusters.assign(s)
        for part in PARTS:
            out[f"part_{part}"] = parts[part].to_numpy()
        for column in (*HEADROOM_PARTS, "growth", "trend", "n_categories", "n_sold"):
            out[f"sub_{column}"] = sub[column].to_numpy(float)
        out["marketing_consent"] = s["marketing_consent"].to_numpy()
        out["preferred_channel"] = s["preferred_channel"].to_numpy()
        return out


@dataclass
class MixSums:
    """The categories' own-history weights of some customers, summed per (cluster, category)."""

    as_of: date

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame({"cluster": rows["cluster"].astype("int64"),
                              "product_category": rows["product_category"].astype(str),
                              "weight": category_weight(rows, self.as_of) if len(rows) else np.array([], float)})
        return frame.groupby(["cluster", "product_category"], as_index=False)["weight"].sum()


@dataclass
class NextCategories:
    """``next_category`` and its probability for whole blocks of customers (rows of ``_next_query``: a
    customer's id and cluster, once per category bought or once without any)."""

    mix: CategoryMix
    as_of: date

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        customers = rows.drop_duplicates("customer_id").sort_values("customer_id")
        cats = rows.loc[rows["product_category"].notna(),
                        ["customer_id", "product_category", "n_orders", "last_ordered_at"]]
        nxt = next_category(customers["customer_id"], customers["behaviour_cluster"].to_numpy(np.int64), cats,
                            self.as_of, mix=self.mix)
        return pd.DataFrame({"customer_id": customers["customer_id"].to_numpy(),
                             "next_category": nxt["next_category"].to_numpy(),
                             "next_category_probability": nxt["next_category_probability"].to_numpy(float)})


def _next_query(src: ScoringSources, customers: int) -> str:
    """A row per customer and category bought (one per customer without any), narrow, with the block: the
    categories of a customer reach one call (``group=BLOCK``) without pass one's columns sorted along."""
    return f"""
select p.customer_id, p.behaviour_cluster, g.product_category, g.n_orders, g.last_ordered_at,
       {block_key('p.customer_id', customers)} as {BLOCK}
from {PASS1} p
left join (select customer_id, product_category, n_orders, last_ordered_at from {src.categories}
           where cutoff_date = ?) g on g.customer_id = p.customer_id"""


@dataclass
class PassTwo:
    """Pass two for any customers' rows of ``_pass2_query``: every ``customer_scores`` column, in
    ``SCORE_COLUMNS`` order."""

    rules: ScoringRules
    population: Population
    run_id: str

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        out = rows.sort_values("customer_id").reset_index(drop=True)
        out["run_id"] = self.run_id
        out["priority_tier"] = tier_of(out["tier_pct"], self.rules.tier_bounds)
        parts = pd.DataFrame({p: out[f"part_{p}"].astype(float) for p in PARTS})
        sub = pd.DataFrame({c: out[f"sub_{c}"].astype(float)
                            for c in (*HEADROOM_PARTS, "growth", "trend", "n_categories", "n_sold")})
        actions = next_best_actions(out, out["marketing_consent"], out["preferred_channel"], self.rules.action_rules)
        for col in ("next_best_action", "action_channel", "action_reason"):
            out[col] = actions[col].to_numpy()
        out["next_category_probability"] = np.round(out["next_category_probability"].astype(float).to_numpy(), 4)
        churn = out["churn_probability"].to_numpy(float)
        out["potential_drivers"] = potential_drivers(parts, out, churn, self.rules.weights)
        out["value_reasons"] = value_reasons(parts, out, out, self.rules.weights, sub=sub, population=self.population)
        for col in ("potential_rank", "behaviour_cluster"):
            out[col] = out[col].astype("int64")
        for col in ("r_score", "f_score", "m_score", "previous_potential_rank"):
            out[col] = out[col].astype("Int64")
        for col in ("churn_flag", "previous_rfm_segment", "previous_lifecycle_stage", "previous_priority_tier"):
            out[col] = out[col].astype("string")
        out["next_category"] = out["next_category"].astype(object)
        return out[SCORE_COLUMNS]


def _pass2_query(src: ScoringSources, pass1_columns: list[str]) -> str:
    """A row per customer: pass one's columns, rank, tier position, next category, reasons, key and last
    publication's segments."""
    def joined(table: str | None, alias: str, columns: dict[str, str]) -> tuple[str, str]:
        if table is None:
            return ", ".join(f"cast(null as {kind}) as {name}" for name, kind in columns.items()), ""
        picked = ", ".join(f"{alias}.{column} as {name}" for name, column in
                           ((n, n.removeprefix("previous_")) for n in columns))
        return picked, f"left join {table} {alias} on {alias}.customer_id = p.customer_id"

    prev_cols, prev_join = joined(src.previous, "pv", {f"previous_{k}": "bigint" if k == "potential_rank" else "string"
                                                       for k in PREVIOUS})
    key_cols, key_join = joined(src.pseudonyms, "k", {"customer_key": "string"})
    return f"""
select {', '.join('p.' + c for c in pass1_columns)}, r.potential_rank, r.tier_pct, n.next_category,
       n.next_category_probability, rs.churn_reasons as top_reasons, {key_cols}, {prev_cols}
from {PASS1} p
join {RANKS} r on r.customer_id = p.customer_id
join {NEXT} n on n.customer_id = p.customer_id
left join {src.churn} rs on rs.customer_id = p.customer_id
{key_join}
{prev_join}"""


# the rank over everyone (score, then CLV, then id) and the tier's rank percentile within the tier group
RANK_KEYS = [("potential_score", True), ("clv", True), ("customer_id", False)]


def _ranks(warehouse) -> None:
    buckets = warehouse.rank_buckets
    source = f"select customer_id, tier_group, potential_score, clv from {PASS1}"
    points = cut_points(sample_rows(warehouse, source, [k for k, _ in RANK_KEYS], buckets), RANK_KEYS, buckets)
    warehouse.create_table_as(RANKS, f"select customer_id, row_rank as potential_rank, group_pct as tier_pct "
                                     f"from ({rank_query(source, RANK_KEYS, 'tier_group', points)}) r")


def _clusters(warehouse, src: ScoringSources) -> ClusterModel:
    """Fitted on at most ``CLUSTER_ROWS`` buyers (by md5 of the id: any engine picks the same), in id order."""
    sample = warehouse.frame(f"select * from (select {', '.join(CLUSTER_COLUMNS)} from {src.features} "
                             f"where n_orders > 0 order by md5(customer_id) limit {CLUSTER_ROWS}) s order by customer_id")
    return fit_clusters(sample)


def _population(warehouse) -> Population:
    names = [f"part_{p}" for p in PARTS] + [f"sub_{p}" for p in HEADROOM_PARTS]
    found = warehouse.rows(f"select {', '.join(f'avg({n})' for n in names)}, count(*) from {PASS1}")[0]
    means = [float("nan") if x is None else float(x) for x in found[:-1]]
    return Population(pd.Series(means[:len(PARTS)], index=list(PARTS)),
                      pd.Series(means[len(PARTS):], index=list(HEADROOM_PARTS)), int(found[-1]))


def _mix(warehouse, src: ScoringSources, clusters: ClusterModel, as_of: date, rows: int) -> CategoryMix:
    at = [str(as_of)]
    names = warehouse.frame(f"select distinct product_category from {src.categories} where cutoff_date = ? "
                            "order by 1", at)["product_category"].astype(str).to_numpy(dtype=object)
    mix = CategoryMix(names, clusters.k + 1)
    warehouse.write_mapped(MIX, f"select g.product_category, g.n_orders, g.last_ordered_at, p.behaviour_cluster as cluster "
                           f"from {src.categories} g join {PASS1} p on p.customer_id = g.customer_id "
                           "where g.cutoff_date = ?", at, MixSums(as_of), rows)
    mix.add_sums(warehouse.frame(f"select cluster, product_category, sum(weight) as weight from {MIX} group by 1, 2"))
    return mix


def score_in_warehouse(warehouse, *, as_of: date, run_id: str, target: str, sources: ScoringSources | None = None,
                       rules: ScoringRules | None = None, rows: int = 500_000, on_batch=None, log=None) -> dict:
    """Writes every customer's ``customer_scores`` row into ``target`` (replaced) and returns facts for metadata
    (the clusters). ``rows``: customers a mapped call takes at a time; ``on_batch(rows done)`` after each of
    pass two's batches (DuckDB)."""
    src, rules = sources or ScoringSources(), rules or ScoringRules()
    say = log or (lambda text: None)
    missing = warehouse.rows(
        f"select coalesce(sum(case when v.clv is null then 1 else 0 end), 0), "
        f"coalesce(sum(case when c.churn_probability is null then 1 else 0 end), 0), count(*) "
        f"from {src.features} f left join {src.value} v on v.customer_id = f.customer_id "
        f"left join {src.churn} c on c.customer_id = f.customer_id")[0]
    if missing[0] or missing[1]:
        raise ValueError(f"{int(missing[0])} customers have no value prediction, {int(missing[1])} no churn prediction")
    customers = int(missing[2])
    clusters = _clusters(warehouse, src)
    try:
        _percentiles(warehouse, src)
        warehouse.write_mapped(PASS1, _pass1_query(src), [], PassOne(rules.weights, clusters), rows)
        say(f"pass one: the numbers of {customers:,} customers; {clusters.k} behavioural clusters")
        mix = _mix(warehouse, src, clusters, as_of, rows)
        population = _population(warehouse)
        _ranks(warehouse)
        warehouse.write_mapped(NEXT, _next_query(src, customers), [str(as_of)], NextCategories(mix, as_of), rows,
                               group=BLOCK)
        warehouse.execute(f"drop table if exists {target}")
        warehouse.write_mapped(target, _pass2_query(src, warehouse.columns(PASS1)), [],
                               PassTwo(rules, population, run_id), rows, on_batch=on_batch)
    finally:
        for table in (PASS1, MIX, RANKS, NEXT, *map(_pct_table, PERCENTILES)):
            warehouse.execute(f"drop table if exists {table}")
    return {"clusters_k": clusters.k, "clusters_silhouette": clusters.silhouette,
            "cluster_descriptions": clusters.descriptions, "customers": customers}


def score_customers(
    features: pd.DataFrame,
    value: pd.DataFrame,
    churn: pd.DataFrame,
    *,
    run_id: str,
    categories: pd.DataFrame | None = None,
    pseudonyms: pd.DataFrame | None = None,
    previous: pd.DataFrame | None = None,
    rules: ScoringRules | None = None,
    batch_rows: int | None = None,
    rank_buckets: int = 1,
) -> tuple[pd.DataFrame, dict]:
    """``score_in_warehouse`` on frames (in an in-memory DuckDB): one row per customer of ``features`` with every
    ``customer_scores`` column (in ``customer_id`` order), and the facts. ``categories``: the customers' rows of
    int_customer_categories at the features' as-of date; ``batch_rows``: customers per mapped call;
    ``rank_buckets``: the buckets of the ranks over everyone (as a distributed engine cuts them)."""
    from orchestration.warehouse import DuckDBWarehouse

    as_of = pd.Timestamp(features["as_of_date"].iloc[0]).date() if len(features) else date.today()
    warehouse = DuckDBWarehouse.in_memory()
    warehouse.rank_buckets = rank_buckets
    try:
        cats = (categories if categories is not None else
                pd.DataFrame({"customer_id": pd.Series(dtype=str), "product_category": pd.Series(dtype=str),
                              "n_orders": pd.Series(dtype=float), "last_ordered_at": pd.Series(dtype="datetime64[us]")}))
        inputs = {"features": features, "value": value, "churn": churn,
                  "categories": cats.assign(cutoff_date=pd.Timestamp(as_of).date()),
                  "pseudonyms": pseudonyms, "previous": previous}
        for name, frame in inputs.items():
            if frame is not None:
                warehouse.write(f"inputs.{name}", frame)
        sources = ScoringSources(*(f"inputs.{n}" for n in ("features", "value", "churn", "categories")),
                                 pseudonyms=None if pseudonyms is None else "inputs.pseudonyms",
                                 previous=None if previous is None else "inputs.previous")
        facts = score_in_warehouse(warehouse, as_of=as_of, run_id=run_id, target="scores.customer_scores",
                                   sources=sources, rules=rules, rows=batch_rows or max(len(features), 1))
        scores = warehouse.frame("select * from scores.customer_scores order by customer_id")
    finally:
        warehouse.con.close()
    return scores, facts
