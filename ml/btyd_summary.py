"""What the BTYD fits read: the buyers' summaries as unique rows with their number of customers.

A BTYD purchase model's likelihood depends on a customer only through ``(x, t_x, T)``, so the fit on the
unique rows weighted by their number of customers is the fit on every customer. The engine aggregates them
(``CutoffData.btyd_summary``: a ``group by``; on Spark it runs on the executors), and this process only
holds the distinct rows: with recency and age in days they stay small however many customers there are.

Gamma-Gamma reads ``(x, mean repeat spend)``; the spend is continuous, so its distinct rows are about the
repeat buyers. It is fitted on at most ``SPEND_ROWS`` of them (chosen by ``md5(customer_id)``: the same on
every engine), which leaves its three parameters' sampling error far below their bootstrap spread; the
independence check (``corr``) is computed over every repeat buyer by the engine.

The bootstrap (``ml/intervals.py``) reweights rows: the sum of ``n`` customers' Poisson(1) weights is
Poisson(n), so drawing one Poisson(n) per row is the customer bootstrap of each fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPEND_ROWS = 1_000_000


@dataclass(frozen=True)
class BtydSummary:
    """Unique ``(x, tx, T)`` rows of buyers with ``n`` customers each; unique ``(spend_x, spend_m)`` rows of
    repeat buyers with a mean spend (``spend_n`` customers each; a sample of ``spend_of`` when fewer); ``corr``:
    the correlation of frequency and mean spend among every repeat buyer (NaN with fewer than 3)."""

    x: np.ndarray
    tx: np.ndarray
    T: np.ndarray
    n: np.ndarray
    spend_x: np.ndarray
    spend_m: np.ndarray
    spend_n: np.ndarray
    spend_of: int
    corr: float

    @classmethod
    def of(cls, x, tx, T, m) -> BtydSummary:
        """From per-buyer arrays (every buyer, aligned; ``m`` NaN without a repeat purchase)."""
        x, tx, T, m = (np.asarray(v, dtype=float) for v in (x, tx, T, m))
        rows, n = np.unique(np.column_stack([x, tx, T]).reshape(-1, 3), axis=0, return_counts=True)
        repeat = (x > 0) & np.isfinite(m)
        spend, spend_n = np.unique(np.column_stack([x[repeat], m[repeat]]).reshape(-1, 2), axis=0,
                                   return_counts=True)
        corr = float(np.corrcoef(x[repeat], m[repeat])[0, 1]) if repeat.sum() >= 3 else float("nan")
        return cls(rows[:, 0], rows[:, 1], rows[:, 2], n.astype(float), spend[:, 0], spend[:, 1],
                   spend_n.astype(float), int(repeat.sum()), corr)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, spend: pd.DataFrame, spend_of: int, corr) -> BtydSummary:
        """From the engine's aggregates: ``rows`` (x, tx, T, n) and ``spend`` (x, m, n)."""
        return cls(*(rows[c].to_numpy(float) for c in ("x", "tx", "T", "n")),
                   *(spend[c].to_numpy(float) for c in ("x", "m", "n")), int(spend_of),
                   float("nan") if corr is None else float(corr))

    @property
    def customers(self) -> int:
        return int(self.n.sum())
