"""How large a training sample the learned models need: back-test metrics and fit time by sample size.

On a warehouse built by the nightly job (the largest benchmark size), the churn model (calibrated
HistGradientBoosting, stacked back-test cutoffs) and the learned spend model (HistGradientBoosting,
Poisson) are trained on random samples of growing size and scored on the same held-out customers
(the back-test cutoff's evaluation sample, ``EVAL_ROWS``), exactly as the pipeline back-tests them.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np

SIZES = (25_000, 50_000, 100_000, 200_000, 400_000)


def measure(warehouse: Path, sizes=SIZES) -> tuple[list[dict], dict]:
    from ml.churn import cutoff_rows, evaluate, train_churn_models, training_set
    from ml.cutoff_data import EVAL_ROWS, CutoffData
    from ml.metrics import value_metrics
    from ml.value_models import (
        BTYD_INPUTS, CATEGORICAL, LeadRates, btyd_predict, design_matrix, fit_btyd, predict_spend, train_spend_model,
    )
    from orchestration.settings import PipelineSettings
    from orchestration.warehouse import DuckDBWarehouse

    settings = PipelineSettings(warehouse_path=str(warehouse))
    rows: list[dict] = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        data = CutoffData(DuckDBWarehouse(con))
        w = settings.resolve_windows(DuckDBWarehouse(con))
        as_of = w.as_of
        kw = dict(horizon_days=settings.churn_horizon_days, clv_horizon_days=settings.clv_horizon_days, fits={})
        levels = data.category_levels([as_of, *w.churn_production_train, *w.churn_backtest_train], CATEGORICAL)
        _, X_t, y_t, _ = cutoff_rows(data, w.churn_test, levels=levels, customers=data.sample(w.churn_test, EVAL_ROWS, 1), **kw)

        cutoffs = {"clv_test": w.value_test, "clv_train": w.value_train}
        value_kw = dict(horizon_days=w.value_window_days, churn_horizon_days=settings.churn_horizon_days,
                        annual_discount_rate=settings.annual_discount_rate, leads=LeadRates())
        test_ids = data.sample(cutoffs["clv_test"], EVAL_ROWS, seed=1)
        test = data.features(cutoffs["clv_test"], customers=test_ids)
        actual = test[["customer_id"]].merge(data.outcomes(cutoffs["clv_test"], customers=test_ids), on="customer_id",
                                             how="left").spend_value_window.fillna(0).to_numpy()
        X_value_test = design_matrix(test, btyd_predict(fit_btyd(data.features(cutoffs["clv_test"], BTYD_INPUTS)), test,
                                                        **value_kw), levels)
        train_fit = fit_btyd(data.features(cutoffs["clv_train"], BTYD_INPUTS))
        population = {"churn": sum(data.count(c) for c in w.churn_backtest_train),
                      "value": data.count(cutoffs["clv_train"]), "eval": len(y_t)}

        for n in sizes:
            if n > population["churn"]:
                break
            t0 = time.perf_counter()
            models = train_churn_models(training_set(data, w.churn_backtest_train, levels=levels, max_rows=n, **kw),
                                        min_customers=settings.churn_min_customers, max_rows=n)
            fit_s = time.perf_counter() - t0
            m = evaluate(y_t, {"hgb": models.predict(X_t)})["hgb"]
            row = {"rows": n, "churn_fit_s": fit_s, "roc_auc": m["roc_auc"], "brier": m["brier"]}
            if n <= population["value"]:
                ids = data.sample(cutoffs["clv_train"], n)
                train = data.features(cutoffs["clv_train"], customers=ids)
                y = train[["customer_id"]].merge(data.outcomes(cutoffs["clv_train"], customers=ids), on="customer_id",
                                                 how="left").spend_value_window.fillna(0).to_numpy()
                t0 = time.perf_counter()
                model = train_spend_model(design_matrix(train, btyd_predict(train_fit, train, **value_kw), levels), y,
                                          max_rows=n)
                row["value_fit_s"] = time.perf_counter() - t0
                v = value_metrics(actual, predict_spend(model, X_value_test))
                row["gini"], row["spearman"] = v["normalised_gini"], v["spearman"]
            rows.append(row)
            print(f"sample: {n:,} rows: churn AUC {row['roc_auc']:.4f} ({fit_s:.1f} s), "
                  f"value Gini {row.get('gini', np.nan):.4f} ({row.get('value_fit_s', np.nan):.1f} s)", flush=True)
    return rows, population


def section(warehouse: Path, customers: int) -> list[str]:
    from ml.cutoff_data import TRAIN_ROWS

    rows, population = measure(warehouse)
    lines = [f"## Training sample size ({customers:,} customers)", "",
             "The learned models train on a random sample of customers once the population is large "
             f"(default: at most {TRAIN_ROWS:,} rows, stacked over cutoffs for churn). "
             f"Each line trains on a sample of that size and is scored on the same {population['eval']:,} "
             "held-out customers of the back-test cutoff (one fit per size; fit time includes the logistic "
             "baseline and calibration for churn).", "",
             "| training rows | churn ROC AUC | churn Brier | churn fit (s) | spend model normalised Gini | "
             "spend Spearman | spend fit (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        spend = (f"{r['gini']:.4f} | {r['spearman']:.4f} | {r['value_fit_s']:.1f}" if "gini" in r else
                 f"- | - | - (only {population['value']:,} customers at the training cutoff)")
        lines.append(f"| {r['rows']:,} | {r['roc_auc']:.4f} | {r['brier']:.4f} | {r['churn_fit_s']:.1f} | {spend} |")
    return lines
