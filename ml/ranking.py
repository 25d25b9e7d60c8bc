"""Potential rank (1..N, no gaps, deterministic) and priority tiers from rank percentiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.name_numbers import parse_name_numbers

# upper rank-percentile bound of each tier: A = top 10 %, B = next 20 %, C = next 30 %, D = the rest
DEFAULT_TIER_BOUNDS = {"A": 0.10, "B": 0.30, "C": 0.60, "D": 1.0}


def parse_tier_bounds(text: str) -> dict[str, float]:
    """``"A=0.10,B=0.30,C=0.60,D=1.0"`` -> ordered dict of upper rank-percentile bounds."""
    bounds = parse_name_numbers(text, "tier bounds", "A=0.10")
    values = list(bounds.values())
    if not values or values != sorted(values) or abs(values[-1] - 1.0) > 1e-9 or values[0] <= 0:
        raise ValueError(f"tier bounds {text!r}: fractions must rise and the last must be 1.0 (e.g. A=0.10,B=0.30,C=0.60,D=1.0)")
    return bounds


def potential_rank(score: pd.Series, clv: pd.Series, customer_id: pd.Series) -> pd.Series:
    """1 = highest score; ties broken by higher CLV, then by customer_id (ascending)."""
    order = np.lexsort((customer_id.astype(str).to_numpy(), -clv.to_numpy(dtype=float), -score.to_numpy(dtype=float)))
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.arange(1, len(score) + 1)
    return pd.Series(rank, index=score.index)


def priority_tier(rank: pd.Series, bounds: dict[str, float] = DEFAULT_TIER_BOUNDS) -> pd.Series:
    """Tier by rank percentile: the first tier whose bound is >= rank / N."""
    if not bounds or abs(max(bounds.values()) - 1.0) > 1e-9:
        raise ValueError("tier bounds must end at 1.0 so that every customer gets a tier")
    names = list(bounds)
    edges = np.array([bounds[n] for n in names])
    pct = rank.to_numpy(dtype=float) / max(len(rank), 1)
    idx = np.searchsorted(edges, pct - 1e-12, side="left")
    return pd.Series(np.array(names, dtype=object)[idx], index=rank.index)
