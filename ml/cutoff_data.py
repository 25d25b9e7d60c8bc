"""Reads of the per-cutoff marts (``customer_features_history``, ``customer_outcomes``) for the models.

The models never hold every cutoff in memory at once. Each read asks the warehouse for one cutoff, in customer
order, as Arrow: a whole cutoff (optionally only some columns), the rows of a sample of customers, or
the cutoff streamed in batches. At a million customers one cutoff's features are about 1.3 GB as
float64; the six cutoffs the models use were 8 GB when loaded together.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

# Sized samples for large populations (see bench/results.md, "Training sample size"): the learned models
# train on at most TRAIN_ROWS rows and are back-tested on at most EVAL_ROWS customers of a held-out cutoff.
TRAIN_ROWS = 200_000
EVAL_ROWS = 250_000

FEATURES_TABLE = "marts.customer_features_history"
OUTCOMES_TABLE = "marts.customer_outcomes"


class CutoffData:
    """Per-cutoff reads from the warehouse (``orchestration/warehouse.py``: DuckDB or Spark), or from frames in
    memory."""

    def __init__(self, warehouse, features: str = FEATURES_TABLE, outcomes: str = OUTCOMES_TABLE):
        self.warehouse = warehouse
        self.features_table = features
        self.outcomes_table = outcomes
        self._counts: dict[date, int] = {}

    @classmethod
    def from_frames(cls, history: pd.DataFrame, outcomes: pd.DataFrame) -> "CutoffData":
        """The same reads over in-memory frames (tests, notebooks): an in-memory DuckDB."""
        from orchestration.warehouse import DuckDBWarehouse

        warehouse = DuckDBWarehouse.in_memory()
        warehouse.write("features_history", history)
        warehouse.write("outcomes", outcomes)
        return cls(warehouse, "features_history", "outcomes")

    # ------------------------------------------------------------------ reads
    def _sql(self, table: str, columns: list[str] | None, with_sample: bool) -> str:
        cols = "*" if columns is None else ", ".join(columns)
        sample = " and customer_id in (select customer_id from _wanted_customers)" if with_sample else ""
        return f"select {cols} from {table} where as_of_date = cast(? as date){sample} order by customer_id"

    def _read(self, table: str, cutoff: date, columns: list[str] | None, customers) -> pd.DataFrame:
        inputs = None if customers is None else {"_wanted_customers": pa.table({"customer_id": np.asarray(customers)})}
        return self.warehouse.frame(self._sql(table, columns, customers is not None), [str(cutoff)], inputs)

    def features(self, cutoff: date, columns: list[str] | None = None, customers=None) -> pd.DataFrame:
        """Feature rows at ``cutoff`` (all customers, or those in ``customers``), ordered by customer."""
        return self._read(self.features_table, cutoff, columns, customers)

    def outcomes(self, cutoff: date, columns: list[str] | None = None, customers=None) -> pd.DataFrame:
        return self._read(self.outcomes_table, cutoff, columns, customers)

    def batches(self, cutoff: date, size: int) -> Iterator[pd.DataFrame]:
        """Every feature row at ``cutoff`` in customer order, ``size`` rows (about) at a time."""
        return self.warehouse.batches(self.batch_query(), [str(cutoff)], size)

    def batch_query(self) -> str:
        """The query behind ``batches`` (one parameter: the cutoff), for ``Warehouse.write_mapped``."""
        return self._sql(self.features_table, None, False)

    # ------------------------------------------------------------------ customers
    def customer_ids(self, cutoff: date) -> np.ndarray:
        """Every customer id at ``cutoff``, in order; read each time, not kept: at ten million customers the
        ids of the six cutoffs were 2 GB of Python strings."""
        return self.features(cutoff, ["customer_id"]).customer_id.to_numpy()

    def count(self, cutoff: date) -> int:
        if cutoff not in self._counts:
            self._counts[cutoff] = self.warehouse.scalar(
                f"select count(*) from {self.features_table} where as_of_date = cast(? as date)", [str(cutoff)])
        return self._counts[cutoff]

    def sample(self, cutoff: date, n: int, seed: int = 0) -> np.ndarray | None:
        """``n`` customers drawn at random (same seed, same customers; in order), or None when all fit. The
        engine draws them (by ``md5`` of the id and the seed): the ids of every customer never leave it."""
        if self.count(cutoff) <= n:
            return None
        picked = self.warehouse.frame(
            f"select customer_id from {self.features_table} where as_of_date = cast(? as date) "
            f"order by md5(concat(customer_id, '/{int(seed)}')) limit {int(n)}", [str(cutoff)])
        return np.sort(picked.customer_id.to_numpy())

    def _leads(self) -> str:
        return (f"from {self.outcomes_table} o where o.as_of_date = cast(? as date) and o.customer_id in "
                f"(select customer_id from {self.features_table} where as_of_date = cast(? as date) and n_orders = 0)")

    def lead_count(self, cutoff: date) -> int:
        """Customers without a purchase at ``cutoff`` (leads) that have outcomes there."""
        return int(self.warehouse.scalar(f"select count(*) {self._leads()}", [str(cutoff)] * 2))

    def lead_outcomes(self, cutoff: date, columns: list[str], limit: int, total: int | None = None) -> pd.DataFrame:
        """The outcome ``columns`` of the leads at ``cutoff``, in customer order: at most ``limit`` of them, a
        sample drawn by the engine (by ``md5`` of the id) when there are more (``total``: ``lead_count``, when
        the caller has it)."""
        cols = ", ".join(f"o.{c}" for c in columns)
        total = self.lead_count(cutoff) if total is None else total
        sample = "" if total <= limit else f" order by md5(o.customer_id) limit {int(limit)}"
        return self.warehouse.frame(f"select * from (select {cols} {self._leads()}{sample}) l order by customer_id",
                                    [str(cutoff)] * 2)

    def btyd_summary(self, cutoff: date):
        """The buyers' BTYD summaries at ``cutoff``, aggregated by the engine (``ml/btyd_summary.py``)."""
        from ml.btyd_summary import SPEND_ROWS, BtydSummary

        at = [str(cutoff)]
        where = f"from {self.features_table} where as_of_date = cast(? as date) and n_orders > 0"
        rows = self.warehouse.frame(
            f"select frequency as x, btyd_recency_days as tx, btyd_t_days as T, count(*) as n {where} "
            "group by 1, 2, 3 order by 1, 2, 3", at)
        repeat = f"{where} and frequency > 0 and repeat_spend_mean is not null"
        spend_of, corr = self.warehouse.rows(f"select count(*), corr(frequency, repeat_spend_mean) {repeat}", at)[0]
        picked = (f"select frequency, repeat_spend_mean {repeat}" if spend_of <= SPEND_ROWS else
                  f"select frequency, repeat_spend_mean {repeat} order by md5(customer_id) limit {SPEND_ROWS}")
        spend = self.warehouse.frame(f"select frequency as x, repeat_spend_mean as m, count(*) as n from ({picked}) s "
                                     "group by 1, 2 order by 1, 2", at)
        return BtydSummary.from_rows(rows, spend, spend_of, corr if spend_of >= 3 else None)

    def category_levels(self, cutoffs, columns: list[str], limit: int = 250) -> dict[str, list]:
        """The categories of each column seen at any of ``cutoffs`` (sorted, at most ``limit``)."""
        dates = sorted({str(c) for c in cutoffs})
        placeholders = ", ".join("cast(? as date)" for _ in dates)
        present = set(self.warehouse.columns(self.features_table))
        levels = {}
        for col in columns:
            if col not in present:
                levels[col] = []
                continue
            rows = self.warehouse.rows(
                f"select distinct cast({col} as string) from {self.features_table} "
                f"where as_of_date in ({placeholders}) and {col} is not null", dates)
            levels[col] = sorted(r[0] for r in rows)[:limit]
        return levels
