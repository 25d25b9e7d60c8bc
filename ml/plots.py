"""Plots for the value models (PNG, matplotlib Agg backend, no display or network needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402



def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration_by_frequency(backtest: pd.DataFrame, path: Path, max_group: int = 7, label: str = "BTYD") -> Path:
    """Mean holdout purchases, actual vs BTYD-predicted, by number of calibration repeat purchases."""
    buyers = backtest[backtest.n_orders > 0]
    group = np.minimum(buyers.frequency.to_numpy(int), max_group)
    table = pd.DataFrame({"group": group, "actual": buyers.actual_purchases, "predicted": buyers.btyd_expected_purchases})
    agg = table.groupby("group").mean()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(agg.index, agg.actual, "o-", label="actual")
    ax.plot(agg.index, agg.predicted, "s--", label=f"{label} predicted")
    ax.set_xticks(agg.index, [str(i) if i < max_group else f"{max_group}+" for i in agg.index])
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("mean purchases in the holdout window")
    ax.set_title(f"{label} calibration vs holdout")
    ax.legend()
    return _save(fig, path)


def frequency_recency_matrices(fit, horizon_days: int, T_days: float, path_expected: Path,
                               path_alive: Path, max_frequency: int = 30) -> tuple[Path, Path]:
    """Expected purchases in the horizon and P(alive) for a customer observed ``T_days`` days, from a fitted
    BTYD model (``ml.value_models.BtydFit``: any member of the family)."""
    freq = np.arange(0, max_frequency + 1, dtype=float)
    rec = np.linspace(0, T_days, 40)
    F, R = np.meshgrid(freq, rec, indexing="ij")
    R = np.where(F == 0, 0.0, R)
    T = np.full(F.size, T_days)
    expected = fit.spec.expected_purchases(fit.params, horizon_days, F.ravel(), R.ravel(), T).reshape(F.shape)
    alive = fit.spec.p_alive(fit.params, F.ravel(), R.ravel(), T).reshape(F.shape)
    paths = []
    for values, title, path in ((expected, f"expected purchases in the next {horizon_days} days", path_expected),
                                (alive, "probability alive", path_alive)):
        fig, ax = plt.subplots(figsize=(6.5, 5))
        im = ax.imshow(values, origin="lower", aspect="auto", extent=[0, T_days, 0, max_frequency], cmap="viridis")
        fig.colorbar(im, ax=ax)
        ax.set_xlabel("recency: days from first to last purchase")
        ax.set_ylabel("frequency: repeat purchases")
        ax.set_title(f"{fit.spec.label}: {title}\n(customers first seen {T_days:.0f} days ago)")
        paths.append(_save(fig, path))
    return paths[0], paths[1]


def spend_by_decile(backtest: pd.DataFrame, models: list[str], ranking_model: str, path: Path) -> Path:
    """Mean actual vs predicted spend per decile of the ranking model's prediction."""
    order = backtest[ranking_model].rank(method="first", ascending=False)
    decile = np.ceil(order / len(backtest) * 10).astype(int).clip(1, 10)
    agg = backtest.assign(decile=decile).groupby("decile")[["actual_spend", *models]].mean()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / (len(models) + 1)
    ax.bar(agg.index - 0.4 + width / 2, agg.actual_spend, width, label="actual")
    for i, m in enumerate(models, start=1):
        ax.bar(agg.index - 0.4 + width / 2 + i * width, agg[m], width, label=m)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel(f"decile of predicted spend ({ranking_model}; 1 = highest)")
    ax.set_ylabel("mean spend in the holdout window")
    ax.set_title("Predicted vs actual spend by decile (back-test)")
    ax.legend()
    return _save(fig, path)


def churn_plots(y: np.ndarray, predictions: dict[str, np.ndarray], importance: dict[str, float],
                folder: Path) -> dict[str, Path]:
    """ROC curves, calibration curves, lift chart (back-test window) and feature importance."""
    from sklearn.metrics import roc_curve

    paths = {}
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in predictions.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Churn ROC (back-test window)")
    ax.legend()
    paths["churn_roc"] = _save(fig, folder / "churn_roc.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in predictions.items():
        order = np.argsort(p)
        bins = np.array_split(order, 10)
        ax.plot([p[b].mean() for b in bins], [y[b].mean() for b in bins], "o-", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("predicted churn probability (decile mean)")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Churn calibration (back-test window)")
    ax.legend()
    paths["churn_calibration"] = _save(fig, folder / "churn_calibration.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(predictions)
    for i, (name, p) in enumerate(predictions.items()):
        order = np.argsort(-p, kind="stable")
        lift = [y[b].mean() / y.mean() for b in np.array_split(order, 10)]
        ax.bar(np.arange(1, 11) - 0.4 + width * (i + 0.5), lift, width, label=name)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("decile of predicted churn (1 = highest risk)")
    ax.set_ylabel("lift (churn rate / average)")
    ax.set_title("Churn lift by decile")
    ax.legend()
    paths["churn_lift"] = _save(fig, folder / "churn_lift.png")

    top = list(importance.items())[:15][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set_xlabel("mean |change in risk score| when set to a typical value")
    ax.set_title("Churn model: feature importance")
    paths["churn_feature_importance"] = _save(fig, folder / "churn_feature_importance.png")
    return paths
