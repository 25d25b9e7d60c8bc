"""Back-test metrics for value predictions (pure functions)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def gini(actual, predicted) -> float:
    """Gini of ``actual`` ordered by ``predicted`` (descending). Ties in the prediction are ordered
    with the smallest actual first, so a model gets no credit for separating what it did not rank."""
    actual = np.asarray(actual, float)
    predicted = np.asarray(predicted, float)
    n = actual.size
    if n == 0 or actual.sum() <= 0:
        return float("nan")
    order = np.lexsort((actual, -predicted))
    cumulative = np.cumsum(actual[order]) / actual.sum()
    return float(cumulative.sum() / n - (n + 1) / (2 * n))


def normalised_gini(actual, predicted) -> float:
    """Gini of the prediction divided by the Gini of a perfect ranking: 1 = perfect, 0 = random."""
    best = gini(actual, actual)
    return float(gini(actual, predicted) / best) if best and np.isfinite(best) else float("nan")


def value_metrics(actual, predicted) -> dict[str, float]:
    actual = np.asarray(actual, float)
    predicted = np.asarray(predicted, float)
    rho = spearmanr(actual, predicted).statistic if actual.size > 2 else float("nan")
    return {
        "normalised_gini": normalised_gini(actual, predicted),
        "spearman": float(rho),
        "total_predicted": float(predicted.sum()),
        "total_actual": float(actual.sum()),
        "total_ratio": float(predicted.sum() / actual.sum()) if actual.sum() > 0 else float("nan"),
        "mae": float(np.mean(np.abs(predicted - actual))),
        "n_customers": float(actual.size),
    }
