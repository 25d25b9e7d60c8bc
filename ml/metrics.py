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


def poisson_deviance(actual, predicted) -> float:
    """Mean Poisson deviance of counts (a proper score for predicted means; 0 = perfect). Predictions are
    floored at 1e-9 so a zero prediction for a customer who bought is heavily, not infinitely, penalised."""
    y = np.asarray(actual, float)
    mu = np.maximum(np.asarray(predicted, float), 1e-9)
    if y.size == 0:
        return float("nan")
    term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(np.mean(2 * (term - (y - mu))))


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


def churn_metrics(y, p, deciles: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC, Brier, log loss, top-decile lift and the calibration curve by predicted decile.

    ``calib_dXX_expected`` / ``calib_dXX_observed``: mean predicted and observed churn in decile XX of
    the predicted probability (01 = lowest risk).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, int)
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    order = np.argsort(-p, kind="stable")
    top = order[: max(1, len(p) // 10)]
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "top_decile_lift": float(y[top].mean() / y.mean()) if y.mean() > 0 else float("nan"),
        "base_rate": float(y.mean()),
        "n_customers": float(len(y)),
    }
    ranks = np.empty(len(p), int)
    ranks[np.argsort(p, kind="stable")] = np.arange(len(p))
    bins = ranks * deciles // len(p)
    for d in range(deciles):
        sel = bins == d
        if sel.any():
            out[f"calib_d{d + 1:02d}_expected"] = float(p[sel].mean())
            out[f"calib_d{d + 1:02d}_observed"] = float(y[sel].mean())
    return out
