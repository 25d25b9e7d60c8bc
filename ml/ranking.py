"""Potential rank (1..N, no gaps, deterministic) over all customers, and priority tiers from rank
percentiles within the customer's tier group.

Which comparison a tier makes (``TIER_GROUPS``): a tier says "among customers like this one, this is one
of the top 10 %", so it compares customers whose potential rests on the same kind of evidence:

* ``lead`` (lifecycle stage prospect): no purchase yet. A lead's CLV and churn probability are estimated
  from lead attributes, not from a purchase history, and its churn probability says whether it will buy at
  all, not whether it will stay. Ranked among all customers, nearly every lead lands in tier C or D (770
  of 790 on the 5,000-customer sample) while a lead a few days old could reach tier A on that estimate.
  Ranked among leads, the tier says which leads are the most promising.
* ``customer`` (everyone with a purchase: new, active, repeat, loyal, at risk, lapsed, churned): their
  potential comes from the same purchase-history models, so they are compared with each other. New
  customers are not ranked apart: their estimates rank genuinely valuable newcomers well (of the new
  customers among the generator's top 20 % by true value, 85 % are in tiers A/B when ranked with everyone,
  46 % when ranked among new customers only; 5,000-customer sample), and what keeps them from growth
  offers is their stage in the action rules, not their tier. At risk, lapsed and churned customers are not
  ranked apart either: their lower potential is the honest answer, and a "tier A churned customer" ranked
  among churned customers only would look as urgent as a tier A loyal one.

``potential_rank`` stays one ranking over everyone (1..N), and the tier follows it: within a group, the
customer with the better potential_rank always has the same or a better tier.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.name_numbers import parse_name_numbers

# upper rank-percentile bound of each tier: A = top 10 %, B = next 20 %, C = next 30 %, D = the rest
DEFAULT_TIER_BOUNDS = {"A": 0.10, "B": 0.30, "C": 0.60, "D": 1.0}
# lifecycle stage (dbt_project/macros/lifecycle_stage.sql) -> tier group; every other stage: CUSTOMER
TIER_GROUPS = {"prospect": "lead"}
CUSTOMER = "customer"


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


def tier_group(lifecycle_stage: pd.Series) -> pd.Series:
    """The group a customer's tier is computed in (``lead`` or ``customer``; see the module docstring)."""
    return lifecycle_stage.astype(object).map(TIER_GROUPS).fillna(CUSTOMER).astype(object)


def priority_tier(rank: pd.Series, bounds: dict[str, float] = DEFAULT_TIER_BOUNDS,
                  groups: pd.Series | None = None) -> pd.Series:
    """Tier by rank percentile: the first tier whose bound is >= rank / N. With ``groups`` (e.g.
    ``tier_group(lifecycle_stage)``, aligned with ``rank``), rank and N are taken within the customer's
    group: its position among the group's members ordered by ``rank``, over the group's size."""
    if not bounds or abs(max(bounds.values()) - 1.0) > 1e-9:
        raise ValueError("tier bounds must end at 1.0 so that every customer gets a tier")
    if groups is None:
        pct = rank.to_numpy(dtype=float) / max(len(rank), 1)
    else:
        if len(groups) != len(rank) or groups.isna().any():
            raise ValueError("tier groups must name a group for every ranked customer")
        by_group = pd.Series(rank.to_numpy(dtype=float)).groupby(groups.to_numpy())
        pct = (by_group.rank(method="first") / by_group.transform("size")).to_numpy()
    return pd.Series(tier_of(pct, bounds), index=rank.index)


def tier_of(pct, bounds: dict[str, float] = DEFAULT_TIER_BOUNDS) -> np.ndarray:
    """The tier of each rank percentile (position / size, in (0, 1]): the first whose bound is >= it."""
    names = list(bounds)
    edges = np.array([bounds[n] for n in names])
    idx = np.searchsorted(edges, np.asarray(pct, float) - 1e-12, side="left")
    return np.array(names, dtype=object)[idx]
