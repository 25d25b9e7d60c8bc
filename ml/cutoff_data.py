"""Reads of the per-cutoff marts (``customer_features_history``, ``customer_outcomes``) for the models.

The models never hold every cutoff in memory at once. Each read asks DuckDB for one cutoff, in customer
order, as Arrow: a whole cutoff (optionally only some columns), the rows of a sample of customers, or
the cutoff streamed in batches. At a million customers one cutoff's features are about 1.3 GB as
float64; the six cutoffs the models use were 8 GB when loaded together.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import duckdb
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
    """Per-cutoff reads from a DuckDB connection (the warehouse, or frames registered in memory)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, features: str = FEATURES_TABLE,
                 outcomes: str = OUTCOMES_TABLE):
        self.con = con
        self.features_table = features
        self.outcomes_table = outcomes
        self._counts: dict[date, int] = {}

    @classmethod
    def from_frames(cls, history: pd.DataFrame, outcomes: pd.DataFrame) -> "CutoffData":
        """The same reads over in-memory frames (tests, notebooks)."""
        con = duckdb.connect()
        for name, frame in (("features_history", history), ("outcomes", outcomes)):
            con.register("_frame", frame)  # a view on this connection only: copied into a table every cursor sees
            con.execute(f"create table {name} as select * from _frame")
            con.unregister("_frame")
        return cls(con, "features_history", "outcomes")

    # ------------------------------------------------------------------ reads
    def _sql(self, table: str, columns: list[str] | None, with_sample: bool) -> str:
        cols = "*" if columns is None else ", ".join(columns)
        sample = " and customer_id in (select customer_id from _wanted_customers)" if with_sample else ""
        return f"select {cols} from {table} where as_of_date = cast(? as date){sample} order by customer_id"

    def _read(self, table: str, cutoff: date, columns: list[str] | None, customers) -> pd.DataFrame:
        con = self.con.cursor()  # own query state: safe while a batch stream is open on another cursor
        try:
            if customers is not None:
                con.register("_wanted_customers", pa.table({"customer_id": np.asarray(customers)}))
            sql = self._sql(table, columns, customers is not None)
            return con.sql(sql, params=[str(cutoff)]).to_arrow_table().to_pandas()
        finally:
            con.close()

    def features(self, cutoff: date, columns: list[str] | None = None, customers=None) -> pd.DataFrame:
        """Feature rows at ``cutoff`` (all customers, or those in ``customers``), ordered by customer."""
        return self._read(self.features_table, cutoff, columns, customers)

    def outcomes(self, cutoff: date, columns: list[str] | None = None, customers=None) -> pd.DataFrame:
        return self._read(self.outcomes_table, cutoff, columns, customers)

    def batches(self, cutoff: date, size: int) -> Iterator[pd.DataFrame]:
        """Every feature row at ``cutoff`` in customer order, ``size`` rows (about) at a time."""
        con = self.con.cursor()
        try:
            reader = con.sql(self._sql(self.features_table, None, False), params=[str(cutoff)]).to_arrow_reader(size)
            pending, rows = [], 0
            for batch in reader:  # DuckDB hands out chunks of its own size: regroup them to about ``size``
                pending.append(batch)
                rows += batch.num_rows
                if rows >= size:
                    yield pa.Table.from_batches(pending).to_pandas()
                    pending, rows = [], 0
            if rows:
                yield pa.Table.from_batches(pending).to_pandas()
        finally:
            con.close()

    # ------------------------------------------------------------------ customers
    def customer_ids(self, cutoff: date) -> np.ndarray:
        """Every customer id at ``cutoff``, in order; read each time, not kept: at ten million customers the
        ids of the six cutoffs were 2 GB of Python strings."""
        return self.features(cutoff, ["customer_id"]).customer_id.to_numpy()

    def count(self, cutoff: date) -> int:
        if cutoff not in self._counts:
            con = self.con.cursor()
            try:
                self._counts[cutoff] = con.execute(f"select count(*) from {self.features_table} "
                                                   "where as_of_date = cast(? as date)", [str(cutoff)]).fetchone()[0]
            finally:
                con.close()
        return self._counts[cutoff]

    def sample(self, cutoff: date, n: int, seed: int = 0) -> np.ndarray | None:
        """``n`` customers drawn at random (same seed, same customers), or None when all fit."""
        if self.count(cutoff) <= n:
            return None
        ids = self.customer_ids(cutoff)
        return np.sort(ids[np.random.default_rng(seed).choice(len(ids), n, replace=False)])

    def category_levels(self, cutoffs, columns: list[str], limit: int = 250) -> dict[str, list]:
        """The categories of each column seen at any of ``cutoffs`` (sorted, at most ``limit``)."""
        dates = sorted({str(c) for c in cutoffs})
        placeholders = ", ".join("cast(? as date)" for _ in dates)
        present = set(self.con.sql(f"select * from {self.features_table} limit 0").columns)
        levels = {}
        for col in columns:
            if col not in present:
                levels[col] = []
                continue
            rows = self.con.execute(
                f"select distinct cast({col} as varchar) from {self.features_table} "
                f"where as_of_date in ({placeholders}) and {col} is not null", dates).fetchall()
            levels[col] = sorted(r[0] for r in rows)[:limit]
        return levels
