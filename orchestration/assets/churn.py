"""Churn: reuse or retrain the registered champion, back-test against two baselines, score with reasons."""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd

from ml import plots
from ml.churn import (
    BTYD_BASELINE, CHURN_MODEL, LOGIT_BASELINE, ChurnTrainingError, churn_cutoffs, cutoff_rows, evaluate,
    feature_importance, history_flag, score, train_churn_models, training_set,
)
from ml.cutoff_data import EVAL_ROWS, CutoffData
from ml.registry import (
    ModelCard, Registry, fingerprint, library_versions, population_stability, retrain_reason, score_reference,
)
from ml.value_models import CATEGORICAL, leads_at
from orchestration.assets.value_models import CUSTOMER_VALUE, FEATURES_HISTORY, OUTCOMES
from orchestration.memory import release_memory
from orchestration.publication import ensure_ops_tables
from orchestration.settings import PipelineSettings

CUSTOMER_CHURN = dg.AssetKey(["scores", "customer_churn"])
PROMOTION_TOLERANCE = 0.005  # ROC AUC a challenger may lose against the champion and still be promoted
DEGRADE_TOLERANCE = 0.05
PSI_THRESHOLD = 0.25


def _performance_rows(run_id, as_of, metrics, card_version, champion_name, windows):
    rows = []
    for model_name, values in metrics.items():
        for metric, value in values.items():
            rows.append(dict(run_id=run_id, as_of_date=as_of, model_name=model_name,
                             model_version=card_version if model_name == CHURN_MODEL else f"{model_name}@{windows['test_window_start']}",
                             task="churn", metric=metric, value=float(value), is_champion=model_name == champion_name,
                             **windows))
    return rows


@dg.asset(
    key=CUSTOMER_CHURN,
    deps=[FEATURES_HISTORY, OUTCOMES, CUSTOMER_VALUE],
    group_name="models",
    kinds={"python", "scikitlearn", "duckdb"},
    description="Churn probability (no completed purchase within the churn horizon) from the registered champion "
    "(calibrated HistGradientBoosting), its back-test against logistic regression and BG/NBD, and reason codes.",
)
def customer_churn(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    h = settings.churn_horizon_days
    with settings.warehouse() as con:
        as_of = settings.resolve_as_of(con)
        cut = churn_cutoffs(as_of, h, settings.churn_stacked_cutoffs)
        data = CutoffData(con)
        registry = Registry(settings.model_registry_dir, "churn")
        champion = registry.champion()
        # one BTYD fit per cutoff for every call below (each cutoff is used up to three times); the
        # held-out window and today's population are monitored on the same random sample of customers
        kw = dict(horizon_days=h, clv_horizon_days=settings.clv_horizon_days, fits={})
        test_ids, now_ids = data.sample(cut["test"], EVAL_ROWS, seed=1), data.sample(as_of, EVAL_ROWS, seed=1)
        notes: list[str] = []
        performance: list[dict] = []
        windows = dict(train_window_start=min(cut["backtest_train"]), train_window_end=cut["test"],
                       test_window_start=cut["test"], test_window_end=as_of)

        # the champion's view of today's customers, to decide whether it still serves
        reason = None
        if champion is not None:
            card, models = champion
            _, X_now, _, _ = cutoff_rows(data, as_of, levels=models.levels, with_labels=False, customers=now_ids, **kw)
            psi = population_stability(card.score_reference, models.predict(X_now)) if set(card.features) <= set(X_now) else None
            current_auc = None
            if str(cut["test"]) >= card.label_window_end and set(card.features) <= set(X_now):
                try:  # the newest window the champion has not seen
                    _, X_t, y_t, _ = cutoff_rows(data, cut["test"], levels=models.levels, customers=test_ids, **kw)
                    current_auc = evaluate(y_t, {CHURN_MODEL: models.predict(X_t)})[CHURN_MODEL]["roc_auc"]
                except (ChurnTrainingError, ValueError) as exc:
                    notes.append(f"champion not re-evaluated: {exc}")
            reason = retrain_reason(card, as_of=as_of, cadence_days=settings.churn_retrain_days, features=list(X_now.columns),
                                    psi=psi, psi_threshold=PSI_THRESHOLD, current_auc=current_auc,
                                    degrade_tolerance=DEGRADE_TOLERANCE)
        else:
            reason = retrain_reason(None, as_of=as_of, cadence_days=0, features=[], psi=None, psi_threshold=0,
                                    current_auc=None, degrade_tolerance=0)

        active = champion  # (card, models) used for scoring; None = BG/NBD fallback
        decision = {"as_of": as_of, "run_id": context.run_id, "champion": champion[0].version if champion else None}
        if reason is None:
            decision.update(action="reuse", reason="champion within cadence, no drift, no degradation")
            card = champion[0]
            performance += _performance_rows(context.run_id, as_of, {CHURN_MODEL: card.metrics, **card.baseline_metrics},
                                             card.version, CHURN_MODEL, windows)
        else:
            decision.update(action="retrain", reason=reason)
            context.log.info(f"churn: retraining ({reason})")
            try:
                levels = data.category_levels([as_of, *cut["production_train"], *cut["backtest_train"]], CATEGORICAL)
                ts_bt = training_set(data, cut["backtest_train"], levels=levels, **kw)
                bt_models = train_churn_models(ts_bt, min_customers=settings.churn_min_customers)
                _, X_t, y_t, quiet_t = cutoff_rows(data, cut["test"], levels=levels, customers=test_ids, **kw)
                if test_ids is not None:
                    notes.append(f"back-test on {len(test_ids):,} of {data.count(cut['test']):,} customers at {cut['test']}")
                # leads have no BG/NBD estimate: the share of leads that did not buy in the window before
                quiet_t = np.where(np.isnan(quiet_t), leads_at(data, cut["backtest_train"][0], "churn").no_purchase_share, quiet_t)
                preds_t = {CHURN_MODEL: bt_models.predict(X_t), LOGIT_BASELINE: bt_models.predict_logit(X_t),
                           BTYD_BASELINE: quiet_t}
                metrics = evaluate(y_t, preds_t)
                ts_prod = training_set(data, cut["production_train"], levels=levels, **kw)
                models = train_churn_models(ts_prod, min_customers=settings.churn_min_customers, baseline=False)
                models.levels = levels
                _, X_now, _, _ = cutoff_rows(data, as_of, levels=levels, with_labels=False, customers=now_ids, **kw)
                version = f"churn-hgb-{as_of}-{fingerprint(ts_prod.X, ts_prod.y)[:8]}"
                card = ModelCard(
                    task="churn", version=version, model_name=CHURN_MODEL, trained_for_as_of=str(as_of),
                    trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    train_cutoffs=[str(c) for c in cut["production_train"]], label_window_end=str(as_of),
                    backtest_train_cutoffs=[str(c) for c in cut["backtest_train"]], backtest_test_cutoff=str(cut["test"]),
                    features=models.features, metrics=metrics[CHURN_MODEL],
                    baseline_metrics={k: v for k, v in metrics.items() if k != CHURN_MODEL},
                    data_fingerprint=fingerprint(ts_prod.X, ts_prod.y), library_versions=library_versions(),
                    n_train_rows=models.n_train, calibration=models.calibration,
                    score_reference=score_reference(models.predict(X_now)), notes=models.notes + bt_models.notes,
                )
                registry.save(card, models)
                old = champion[0].metrics.get("roc_auc") if champion else None
                promote = old is None or card.metrics["roc_auc"] >= old - PROMOTION_TOLERANCE
                decision.update(challenger=version, challenger_auc=card.metrics["roc_auc"], champion_auc=old,
                                promoted=promote)
                if promote:
                    registry.promote(version)
                    active = (card, models)
                else:
                    notes.append(f"challenger {version} (AUC {card.metrics['roc_auc']:.3f}) not promoted over "
                                 f"{champion[0].version} (AUC {old:.3f})")
                champ_name = CHURN_MODEL
                performance += _performance_rows(context.run_id, as_of, metrics, version, champ_name, windows)
                if not promote:  # the challenger's rows are kept for the record; the champion stays in charge
                    for row in performance:
                        if row["model_name"] == CHURN_MODEL:
                            row["is_champion"] = False
                    performance += [row for row in _performance_rows(context.run_id, as_of, {CHURN_MODEL: champion[0].metrics},
                                                                     champion[0].version, CHURN_MODEL, windows)]
            except ChurnTrainingError as exc:
                decision.update(action="fallback", error=str(exc))
                notes.append(f"churn model not trained: {exc}")
                if champion is None:
                    active = None
        registry.log(decision)
        context.log.info(f"churn: {decision['action']} ({decision.get('reason') or decision.get('error')})")

        plot_paths = {}
        if decision["action"] == "retrain":
            plot_paths = plots.churn_plots(y_t, preds_t, feature_importance(bt_models, X_t),
                                           settings.reports_dir / context.run_id)
            del ts_bt, ts_prod, X_t, X_now  # the training and evaluation frames are not needed for scoring
        release_memory()

        # scoring: every customer, in batches
        if active is not None:
            card, models = active
            result = score(data, as_of, models, on_batch=lambda done, total: context.log.info(
                f"churn: scored {done:,} of {total:,} customers"), **kw)
            result.insert(2, "churn_model", card.version)
        else:
            now_feats = data.features(as_of, ["customer_id", "n_orders", "tenure_days"])
            value = con.sql("select customer_id, prob_no_purchase_churn_horizon from scores.customer_value").to_arrow_table().to_pandas()
            result = pd.DataFrame({
                "customer_id": now_feats.customer_id,
                "churn_probability": now_feats[["customer_id"]].merge(value, on="customer_id", how="left")
                .prob_no_purchase_churn_horizon.to_numpy(),
                "churn_model": "bgnbd_no_purchase (fallback)", "churn_flag": history_flag(now_feats, h).to_numpy(),
                "churn_reasons": "churn model unavailable: BG/NBD estimate",
            })
    result["churn_probability"] = result.churn_probability.clip(0, 1)
    model_version = str(result.churn_model.iloc[0]) if len(result) else "none"
    with settings.warehouse() as con:
        con.register("churn_df", result)
        con.execute("create or replace table scores.customer_churn as select * from churn_df")
        con.unregister("churn_df")
        ensure_ops_tables(con)
        con.execute("delete from ops.model_performance where run_id = ? and task = 'churn'", [context.run_id])
        if performance:
            con.register("perf_df", pd.DataFrame(performance))
            con.execute("insert into ops.model_performance by name select * from perf_df")
            con.unregister("perf_df")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(result),
        "decision": dg.MetadataValue.json({k: str(v) for k, v in decision.items()}),
        "churn_model": model_version,
        "notes": dg.MetadataValue.json(notes),
        "mean_churn_probability": float(result.churn_probability.mean()),
        **{f"plot_{k}": dg.MetadataValue.path(str(v)) for k, v in plot_paths.items()},
    })

