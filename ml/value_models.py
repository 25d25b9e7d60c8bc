"""Customer value: BG/NBD + Gamma-Gamma, a learned challenger, a back-test that picks the champion.

Time windows (H = CLV horizon in days; all dates are cutoffs in ``customer_features_history``):

* **back-test**: every model predicts spend in ``(as_of - H, as_of]`` from what was known at
  ``as_of - H``, and is scored against what happened (normalised Gini, Spearman, total predicted vs
  actual). BG/NBD + Gamma-Gamma are fitted at ``as_of - H``; the learned model is trained at
  ``as_of - 2H`` with labels from ``(as_of - 2H, as_of - H]``; the naive baseline predicts last year's
  spend. Nothing a model sees is dated after its cutoff, and no metric uses training rows.
* **production**: the champion predicts ``(as_of, as_of + H]``. BG/NBD + Gamma-Gamma are refitted at the
  as-of date; the learned model is retrained at ``as_of - H`` with labels ``(as_of - H, as_of]``.

Customers without a purchase (leads) have no BTYD summary; they get the empirical rates of leads at
the latest complete back-dated window (purchases and spend per lead), so they are never a silent guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from ml import btyd
from ml.cutoff_data import EVAL_ROWS, TRAIN_ROWS, CutoffData
from ml.metrics import value_metrics

BTYD_MODEL = "bgnbd_gg"
LEARNED_MODEL = "hgb_poisson"
NAIVE_MODEL = "naive_last_year"
CATEGORICAL = ["country", "acquisition_channel", "age_band", "preferred_channel", "top_category", "gender"]
EXCLUDE = {"customer_id", "as_of_date", "created_at", "first_purchase_date", "last_purchase_date", "region"}
MIN_TRAIN_CUSTOMERS = 200
BTYD_COLUMNS = ["p_alive", "btyd_expected_purchases", "btyd_expected_avg_spend", "btyd_expected_spend"]
# what BG/NBD + Gamma-Gamma read per customer (fit and predictions)
BTYD_INPUTS = ["customer_id", "n_orders", "frequency", "btyd_recency_days", "btyd_t_days", "repeat_spend_mean"]
PREDICT_BATCH_ROWS = 200_000


@dataclass
class LeadRates:
    """What a customer without purchases does in a window, on average (from a complete past window)."""

    purchases_per_lead: float = 0.0
    spend_per_lead: float = 0.0
    no_purchase_share: float = 1.0
    source: str = "no complete window: leads get 0"


@dataclass
class BtydFit:
    bg: btyd.BgNbdParams
    gg: btyd.GammaGammaParams


@dataclass
class ValueResult:
    predictions: pd.DataFrame
    performance: list[dict]
    champion: str
    fits: dict[str, BtydFit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backtest: pd.DataFrame | None = None  # per customer at the back-test cutoff: actual and predictions


def lead_rates(features: pd.DataFrame, outcomes: pd.DataFrame, window: str) -> LeadRates:
    """Empirical lead behaviour at one cutoff (``features`` and ``outcomes`` of that cutoff)."""
    leads = features.loc[features.n_orders == 0, ["customer_id"]].merge(outcomes, on="customer_id")
    complete = leads[f"{window}_window_complete"].all() if len(leads) else False
    if len(leads) < 20 or not complete:
        return LeadRates()
    return LeadRates(
        purchases_per_lead=float(leads.purchase_days_clv_window.mean()),
        spend_per_lead=float(leads.spend_clv_window.mean()),
        no_purchase_share=float(leads.churned.mean()),
        source=f"{len(leads)} leads at {outcomes.as_of_date.iloc[0]}",
    )


def fit_btyd(features: pd.DataFrame) -> BtydFit:
    buyers = features[features.n_orders > 0]
    bg = btyd.fit_bgnbd(buyers.frequency, buyers.btyd_recency_days, buyers.btyd_t_days, time_unit="days")
    gg = btyd.fit_gamma_gamma(buyers.frequency, buyers.repeat_spend_mean)
    return BtydFit(bg, gg)


def btyd_predict(
    fit: BtydFit,
    features: pd.DataFrame,
    *,
    horizon_days: int,
    churn_horizon_days: int,
    annual_discount_rate: float,
    leads: LeadRates,
    with_clv: bool = True,
) -> pd.DataFrame:
    """Per customer: p_alive, expected purchases and spend over the horizon, P(no purchase in the churn
    horizon) and (``with_clv``) discounted CLV. Leads take ``leads``; nothing is NaN."""
    buyer = (features.n_orders > 0).to_numpy()
    x = features.frequency.to_numpy(float)[buyer]
    tx = features.btyd_recency_days.to_numpy(float)[buyer]
    T = features.btyd_t_days.to_numpy(float)[buyer]
    m = features.repeat_spend_mean.to_numpy(float)[buyer]
    n = len(features)
    out = pd.DataFrame({"customer_id": features.customer_id.to_numpy()})
    alive = np.ones(n)
    purchases = np.full(n, leads.purchases_per_lead)
    avg_spend = np.full(n, fit.gg.population_mean_spend)
    spend = np.full(n, leads.spend_per_lead)
    quiet = np.full(n, leads.no_purchase_share)
    alive[buyer] = btyd.p_alive(fit.bg, x, tx, T)
    purchases[buyer] = btyd.expected_purchases(fit.bg, horizon_days, x, tx, T)
    avg_spend[buyer] = btyd.expected_average_spend(fit.gg, x, m)
    spend[buyer] = purchases[buyer] * avg_spend[buyer]
    quiet[buyer] = btyd.prob_no_purchase(fit.bg, churn_horizon_days, x, tx, T)
    if with_clv:
        clv = spend * discount_factor(horizon_days, annual_discount_rate)
        clv[buyer] = btyd.customer_lifetime_value(
            fit.bg, fit.gg, x, tx, T, m, horizon=horizon_days, annual_discount_rate=annual_discount_rate
        )
        out["btyd_clv"] = clv
    out["p_alive"] = alive
    out["btyd_expected_purchases"] = purchases
    out["btyd_expected_avg_spend"] = avg_spend
    out["btyd_expected_spend"] = spend
    out["btyd_prob_no_purchase_churn"] = quiet
    return out


def discount_factor(horizon_days: int, annual_rate: float) -> float:
    """Mean discount over a horizon with spend spread evenly (continuous compounding)."""
    years = horizon_days / 365.25
    k = np.log1p(annual_rate)
    return 1.0 if k == 0 else float((1 - np.exp(-k * years)) / (k * years))


def design_matrix(features: pd.DataFrame, btyd_out: pd.DataFrame, categories: dict[str, list]) -> pd.DataFrame:
    """Model inputs: numeric and boolean features, fixed-category categoricals, and the BTYD outputs."""
    X = features.drop(columns=[c for c in features.columns if c in EXCLUDE or c in CATEGORICAL])
    X = X.apply(lambda s: s.astype(float) if s.dtype == bool or str(s.dtype) == "boolean" else s)
    X = X.select_dtypes(include=["number"]).astype(float)
    for col in CATEGORICAL:
        if col in features and categories.get(col):  # a column without any value carries no information
            X[col] = pd.Categorical(features[col].astype(object), categories=categories[col])
    for col in BTYD_COLUMNS:
        X[col] = btyd_out[col].to_numpy()
    return X


def leads_at(data: CutoffData, cutoff, window: str) -> LeadRates:
    """``lead_rates`` over every customer of a cutoff."""
    return lead_rates(data.features(cutoff, ["customer_id", "n_orders"]), data.outcomes(cutoff), window)


def train_spend_model(X: pd.DataFrame, y: np.ndarray, *, seed: int = 0, max_rows: int = TRAIN_ROWS):
    """HistGradientBoosting with a Poisson loss (spend is non-negative, skewed, often zero)."""
    if len(X) > max_rows:
        take = np.random.default_rng(seed).choice(len(X), max_rows, replace=False)
        X, y = X.iloc[np.sort(take)], y[np.sort(take)]
    X = X.loc[:, X.notna().any()]  # a column that is null throughout carries nothing (and breaks binning)
    model = HistGradientBoostingRegressor(
        loss="poisson", learning_rate=0.1, max_iter=400, max_leaf_nodes=31, min_samples_leaf=40,
        l2_regularization=1.0, early_stopping=True, validation_fraction=0.15, n_iter_no_change=25,
        categorical_features="from_dtype", random_state=seed,
    )
    model.fit(X, y)
    return model


def predict_spend(model, X: pd.DataFrame) -> np.ndarray:
    """Predictions on the columns the model was trained on, never negative."""
    return np.maximum(model.predict(X[list(model.feature_names_in_)]), 0.0)


def run_value_models(
    data: CutoffData,
    *,
    as_of: date,
    cutoffs: dict[str, date],
    horizon_days: int,
    churn_horizon_days: int,
    annual_discount_rate: float,
    run_id: str,
    max_train_rows: int = TRAIN_ROWS,
    max_eval_rows: int = EVAL_ROWS,
    batch_rows: int = PREDICT_BATCH_ROWS,
) -> ValueResult:
    """Back-test BTYD, the learned model and the naive baseline; predict with the champion.

    BG/NBD + Gamma-Gamma are fitted on every customer of a cutoff. On large populations the learned
    model trains on a random sample of at most ``max_train_rows`` customers, and the back-test compares
    all models on the same random sample of at most ``max_eval_rows`` customers of the held-out cutoff.
    Every customer is predicted (in batches of ``batch_rows``)."""
    notes: list[str] = []
    performance: list[dict] = []
    fits: dict[str, BtydFit] = {}
    now = data.features(as_of, BTYD_INPUTS)
    test_ids = data.sample(cutoffs["clv_test"], max_eval_rows, seed=1)
    train_ids = data.sample(cutoffs["clv_train"], max_train_rows)
    test, out_test = (data.features(cutoffs["clv_test"], customers=test_ids),
                      data.outcomes(cutoffs["clv_test"], customers=test_ids))
    train, out_train = (data.features(cutoffs["clv_train"], customers=train_ids),
                        data.outcomes(cutoffs["clv_train"], customers=train_ids))
    for name, ids, cutoff in (("back-test", test_ids, cutoffs["clv_test"]), ("training", train_ids, cutoffs["clv_train"])):
        if ids is not None:
            notes.append(f"{name} sample: {len(ids):,} of {data.count(cutoff):,} customers at {cutoff}")
    levels = data.category_levels([as_of, cutoffs["clv_test"], cutoffs["clv_train"]], CATEGORICAL)
    predict_kw = dict(horizon_days=horizon_days, churn_horizon_days=churn_horizon_days,
                      annual_discount_rate=annual_discount_rate)

    # leads at the as-of date behave like leads in the latest complete windows
    clv_leads = leads_at(data, cutoffs["clv_test"], "clv")
    churn_leads = leads_at(data, cutoffs["churn_test"], "churn")
    leads_now = LeadRates(
        clv_leads.purchases_per_lead, clv_leads.spend_per_lead, churn_leads.no_purchase_share,
        source=f"CLV window: {clv_leads.source}; churn window: {churn_leads.source}",
    )
    notes.append(f"lead rates from {leads_now.source}")

    # --- back-test at as_of - H -------------------------------------------------------------
    backtest = None
    champion = BTYD_MODEL
    window = dict(test_window_start=cutoffs["clv_test"], test_window_end=as_of)
    test_ready = len(test) >= MIN_TRAIN_CUSTOMERS and bool(out_test.clv_window_complete.all()) and len(out_test)
    if test_ready:
        actual = test[["customer_id"]].merge(out_test, on="customer_id", how="left").spend_clv_window.fillna(0).to_numpy()
        backtest = pd.DataFrame({"customer_id": test.customer_id, "frequency": test.frequency,
                                 "n_orders": test.n_orders, "actual_spend": actual,
                                 "actual_purchases": test[["customer_id"]].merge(out_test, on="customer_id", how="left")
                                 .purchase_days_clv_window.fillna(0).to_numpy()})
        scores: dict[str, dict] = {}
        # naive: last year's spend, scaled to the horizon
        backtest[NAIVE_MODEL] = test.spend_last_365d.to_numpy(float) * horizon_days / 365.0
        scores[NAIVE_MODEL] = value_metrics(actual, backtest[NAIVE_MODEL])
        # BTYD fitted at the test cutoff; leads from the window before it
        try:
            fits["backtest"] = fit_btyd(data.features(cutoffs["clv_test"], BTYD_INPUTS))
            leads_train = leads_at(data, cutoffs["clv_train"], "clv") if len(train) else LeadRates()
            bt = btyd_predict(fits["backtest"], test, leads=leads_train, with_clv=False, **predict_kw)
            backtest[BTYD_MODEL] = bt.btyd_expected_spend.to_numpy()
            backtest["btyd_expected_purchases"] = bt.btyd_expected_purchases.to_numpy()
            scores[BTYD_MODEL] = value_metrics(actual, backtest[BTYD_MODEL])
        except btyd.BtydFitError as exc:
            notes.append(f"BTYD back-test not possible: {exc}")
            bt = None
        # learned model: trained at as_of - 2H, evaluated at as_of - H
        train_ready = len(train) >= MIN_TRAIN_CUSTOMERS and len(out_train) and bool(out_train.clv_window_complete.all())
        if train_ready and bt is not None:
            try:
                fits["train"] = fit_btyd(data.features(cutoffs["clv_train"], BTYD_INPUTS))
                leads_older = LeadRates()
                bt_train = btyd_predict(fits["train"], train, leads=leads_older, with_clv=False, **predict_kw)
                y_train = train[["customer_id"]].merge(out_train, on="customer_id", how="left").spend_clv_window.fillna(0).to_numpy()
                model = train_spend_model(design_matrix(train, bt_train, levels), y_train, max_rows=max_train_rows)
                backtest[LEARNED_MODEL] = predict_spend(model, design_matrix(test, bt, levels))
                scores[LEARNED_MODEL] = value_metrics(actual, backtest[LEARNED_MODEL])
            except btyd.BtydFitError as exc:
                notes.append(f"learned model not back-tested: BTYD at the training cutoff failed: {exc}")
        else:
            notes.append(
                f"learned model not back-tested: {len(train)} customers at {cutoffs['clv_train']} "
                f"(need {MIN_TRAIN_CUSTOMERS} and a complete outcome window)"
            )
        candidates = {k: v for k, v in scores.items() if k in (BTYD_MODEL, LEARNED_MODEL)}
        if candidates:
            champion = max(candidates, key=lambda k: (np.nan_to_num(candidates[k]["normalised_gini"], nan=-1), k == BTYD_MODEL))
        for model_name, metrics in scores.items():
            train_start = cutoffs["clv_train"] if model_name == LEARNED_MODEL else None
            for metric, value in metrics.items():
                performance.append(dict(
                    run_id=run_id, as_of_date=as_of, model_name=model_name,
                    model_version=f"{model_name}@{cutoffs['clv_test']}", task="clv_spend", metric=metric,
                    value=float(value), train_window_start=train_start,
                    train_window_end=cutoffs["clv_test"] if model_name != NAIVE_MODEL else None,
                    is_champion=model_name == champion, **window,
                ))
    else:
        notes.append(
            f"no back-test: {len(test)} customers at {cutoffs['clv_test']} or its outcome window is incomplete; "
            "BG/NBD + Gamma-Gamma used without one"
        )

    # --- production at the as-of date -------------------------------------------------------
    fits["production"] = fit_btyd(now)
    pred = btyd_predict(fits["production"], now, leads=leads_now, **predict_kw)
    result = pd.DataFrame({"customer_id": now.customer_id})
    result["p_alive"] = pred.p_alive
    result["expected_purchases"] = pred.btyd_expected_purchases
    result["prob_no_purchase_churn_horizon"] = pred.btyd_prob_no_purchase_churn
    result["expected_spend"] = pred.btyd_expected_spend
    result["clv"] = pred.btyd_clv
    result["clv_model"] = f"{BTYD_MODEL}@{as_of}"
    if champion == LEARNED_MODEL:
        bt_test = btyd_predict(fits["backtest"], test, leads=leads_train, with_clv=False, **predict_kw)
        y = test[["customer_id"]].merge(out_test, on="customer_id", how="left").spend_clv_window.fillna(0).to_numpy()
        model = train_spend_model(design_matrix(test, bt_test, levels), y, max_rows=max_train_rows)
        spend = np.concatenate([
            predict_spend(model, design_matrix(feats, btyd_predict(fits["production"], feats, leads=leads_now, with_clv=False, **predict_kw), levels))
            for feats in data.batches(as_of, batch_rows)])
        if len(spend) != len(result):
            raise RuntimeError(f"{len(spend)} learned predictions for {len(result)} customers at {as_of}")
        result["expected_spend"] = spend
        result["clv"] = spend * discount_factor(horizon_days, annual_discount_rate)
        result["clv_model"] = f"{LEARNED_MODEL}@{as_of}"
    numeric = result.select_dtypes("number")
    if not np.isfinite(numeric.to_numpy()).all():
        raise btyd.BtydFitError("value predictions contain non-finite values; refusing to publish them")
    return ValueResult(result, performance, champion, fits, notes, backtest)
