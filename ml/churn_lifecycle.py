"""The churn model's nightly lifecycle: reuse, retrain, back-test, promote or fall back, then score.

One function, ``run_churn_models``, makes every decision; the Dagster asset only reads settings, calls it
and writes what it returns. The decisions, in order:

1. **May the registered champion score this run at all?** (``registry.reuse_blockers``) Not when it was
   trained on another warehouse or source, on labels after this run's as-of date, or on other features
   than today's columns. Such a champion is ignored everywhere below, including the fallback path.
2. **Reuse** a usable champion when it is within the retrain cadence, today's scores have not drifted
   (PSI) and its ROC AUC on the newest complete window has not degraded.
3. Otherwise **retrain**: a back-test (trained on the stacked cutoffs before ``as_of - h``, tested on
   ``as_of - h`` against logistic regression, the BTYD probability and recency) when the history allows it,
   then the production model on the stacked cutoffs up to ``as_of - h``. The challenger is **promoted** when
   there is no usable champion or its back-test ROC AUC is within ``promotion_tolerance`` of the champion's.
4. When training is impossible (too few customers, one outcome only): **fall back** to the usable champion,
   else to the BTYD probability of no purchase in the churn horizon (``fallback`` frame), with reasons that
   say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd

from ml.churn import (
    BTYD_CHURN, CHURN_MODEL, LOGIT_BASELINE, ChurnTrainingError, cutoff_rows, evaluate, feature_importance,
    ChurnScorer, churn_scorer, history_flag, recency_baseline, score, train_churn_models, training_set,
)
from ml.cutoff_data import EVAL_ROWS, CutoffData
from ml.registry import (
    Lineage, ModelCard, Registry, fingerprint, library_versions, population_stability, retrain_reason,
    reuse_blockers, score_reference,
)
from ml.value_models import CATEGORICAL, leads_at
from ml.windows import Windows

RECENCY_BASELINE = "churn_recency"


@dataclass(frozen=True)
class ChurnPolicy:
    cadence_days: int = 7
    min_customers: int = 500
    promotion_tolerance: float = 0.005  # ROC AUC a challenger may lose against the champion and still be promoted
    degrade_tolerance: float = 0.05
    psi_threshold: float = 0.25


@dataclass
class ChurnOutcome:
    """What the churn step decided, and how every customer at the as-of date is scored: by ``scorer`` (the
    model in charge) or, without one, the BTYD estimate ``fallback``. Rows: customer_id, churn_probability,
    churn_model, churn_flag, churn_reasons."""
    scorer: ChurnScorer | None
    fallback: pd.DataFrame | None
    performance: list[dict]
    decision: dict
    data: CutoffData
    as_of: object
    notes: list[str] = field(default_factory=list)
    evaluation: tuple | None = None  # (y, {model: predictions}, importance) of a back-test, for plots

    @property
    def predictions(self) -> pd.DataFrame:
        """Every customer's row, in memory."""
        return self.fallback if self.scorer is None else score(self.data, self.as_of, self.scorer)

    def write(self, warehouse, table: str, on_batch=None) -> int:
        """Every customer's row into ``table`` where the data is (``Warehouse.write_mapped``: batch by batch here,
        on the executors on Spark); returns the rows written. ``on_batch(rows done)`` where batches pass here."""
        if self.scorer is None:
            warehouse.write(table, self.fallback)
            return len(self.fallback)
        return warehouse.write_mapped(table, self.data.batch_query(), [str(self.as_of)], self.scorer,
                                      self.scorer.batch, on_batch)


def _performance_rows(run_id, as_of, metrics, card: ModelCard, champion: bool, windows):
    """One row per model and metric; the card's published model carries the card's version (and is the
    champion when ``champion``)."""
    rows = []
    for model_name, values in metrics.items():
        for metric, value in values.items():
            mine = model_name == card.model_name
            rows.append(dict(run_id=run_id, as_of_date=as_of, model_name=model_name,
                             model_version=card.version if mine else f"{model_name}@{windows['test_window_start']}",
                             task="churn", metric=metric, value=float(value), is_champion=champion and mine,
                             **windows))
    return rows


def published_model(metrics: dict[str, dict], btyd_name: str) -> str:
    """The back-test winner whose probability is published: the BTYD estimate unless a learned model (the
    gradient-boosting model or the logistic regression) has a higher ROC AUC; the two learned models by AUC.
    Without a back-test, the gradient-boosting model."""
    auc = {name: m.get("roc_auc", float("nan")) for name, m in metrics.items()}
    if not auc:
        return CHURN_MODEL
    best = btyd_name if btyd_name in auc else CHURN_MODEL
    for name in (LOGIT_BASELINE, CHURN_MODEL):
        if name in auc and np.isfinite(auc[name]) and not auc[name] <= auc.get(best, -np.inf):
            best = name
    return best


def run_churn_models(data: CutoffData, *, windows: Windows, registry: Registry, lineage: Lineage,
                     policy: ChurnPolicy, run_id: str, fallback: pd.DataFrame, btyd_model: str = "bgnbd",
                     eval_rows: int = EVAL_ROWS, log=lambda message: None) -> ChurnOutcome:
    """Decide, train if needed and score every customer at the as-of date (see the module docstring).

    ``fallback``: ``customer_id`` and ``prob_no_purchase_churn_horizon`` (the value models' BTYD estimate)."""
    as_of, h = windows.as_of, windows.churn_horizon_days
    kw = dict(horizon_days=h, clv_horizon_days=windows.clv_horizon_days, fits={}, btyd_model=btyd_model)
    test_ids, now_ids = data.sample(windows.churn_test, eval_rows, seed=1), data.sample(as_of, eval_rows, seed=1)
    notes: list[str] = []
    performance: list[dict] = []
    window_cols = dict(train_window_start=min(windows.churn_backtest_train, default=None), train_window_end=windows.churn_test,
                       test_window_start=windows.churn_test, test_window_end=as_of)
    levels = data.category_levels([as_of, *windows.churn_production_train, *windows.churn_backtest_train], CATEGORICAL)
    _, X_now, _, _ = cutoff_rows(data, as_of, levels=levels, with_labels=False, customers=now_ids, **kw)

    # 1. may the registered champion score this run at all?
    champion = registry.champion()
    if champion is not None:
        blockers = reuse_blockers(champion[0], lineage=lineage, as_of=as_of, features=list(X_now.columns))
        if blockers:
            notes.append(f"registered champion {champion[0].version} not used: {'; '.join(blockers)}")
            champion = None
    decision = {"as_of": as_of, "run_id": run_id, "champion": champion[0].version if champion else None}

    # 2. reuse it?
    reason = "no usable champion for this warehouse, source and as-of date"
    if champion is not None:
        card, models = champion
        _, X_c, _, _ = cutoff_rows(data, as_of, levels=models.levels, with_labels=False, customers=now_ids, **kw)
        psi = population_stability(card.score_reference, models.predict_published(X_c))
        current_auc = None
        if str(windows.churn_test) >= card.label_window_end:
            try:  # the newest window the champion has not seen
                _, X_t, y_t, _ = cutoff_rows(data, windows.churn_test, levels=models.levels, customers=test_ids, **kw)
                current_auc = evaluate(y_t, {CHURN_MODEL: models.predict_published(X_t)})[CHURN_MODEL]["roc_auc"]
            except (ChurnTrainingError, ValueError) as exc:
                notes.append(f"champion not re-evaluated: {exc}")
        reason = retrain_reason(card, as_of=as_of, cadence_days=policy.cadence_days, features=list(X_c.columns), psi=psi,
                                psi_threshold=policy.psi_threshold, current_auc=current_auc,
                                degrade_tolerance=policy.degrade_tolerance)

    active = champion  # (card, models) that scores; None = the BTYD fallback
    evaluation = None
    if reason is None:
        decision.update(action="reuse", reason="champion within cadence, no drift, no degradation")
        card = champion[0]
        performance += _performance_rows(run_id, as_of, {card.model_name: card.metrics, **card.baseline_metrics},
                                         card, True, window_cols)
    else:
        # 3. retrain
        decision.update(action="retrain", reason=reason)
        log(f"churn: retraining ({reason})")
        try:
            metrics, bt_cutoffs, evaluation = _backtest(data, windows, levels, kw, test_ids, policy, notes)
            ts_prod = training_set(data, windows.churn_production_train, levels=levels, **kw)
            btyd_name = f"churn_{btyd_model}"
            winner = published_model(metrics, btyd_name)
            models = train_churn_models(ts_prod, min_customers=policy.min_customers, baseline=winner == LOGIT_BASELINE)
            models.levels = levels
            models.published = {btyd_name: BTYD_CHURN}.get(winner, winner)
            models.lead_share = leads_at(data, windows.churn_test, "churn").no_purchase_share
            version = f"churn-{winner.removeprefix('churn_')}-{as_of}-{fingerprint(ts_prod.X, ts_prod.y)[:8]}"
            if winner != CHURN_MODEL:
                notes.append(f"{winner} won the back-test (ROC AUC {metrics[winner]['roc_auc']:.3f} against "
                             f"{metrics[CHURN_MODEL]['roc_auc']:.3f} for {CHURN_MODEL}): its probability is published, "
                             f"the reasons still come from {CHURN_MODEL}")
            card = ModelCard(
                task="churn", version=version, model_name=winner, trained_for_as_of=str(as_of),
                trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                train_cutoffs=[str(c) for c in ts_prod.cutoffs], label_window_end=str(as_of),
                backtest_train_cutoffs=[str(c) for c in bt_cutoffs],
                backtest_test_cutoff=str(windows.churn_test) if metrics else "",
                features=models.features, metrics=metrics.get(winner, {}),
                baseline_metrics={k: v for k, v in metrics.items() if k != winner},
                data_fingerprint=fingerprint(ts_prod.X, ts_prod.y), library_versions=library_versions(),
                n_train_rows=models.n_train, calibration=models.calibration,
                score_reference=score_reference(models.predict_published(X_now)),
                notes=models.notes + kw["fits"].get("notes", []) + notes, warehouse=lineage.warehouse, source=lineage.source,
            )
            registry.save(card, models)
            old = champion[0].metrics.get("roc_auc") if champion else None
            new = card.metrics.get("roc_auc")
            promote = old is None or (new is not None and new >= old - policy.promotion_tolerance)
            decision.update(challenger=version, challenger_auc=new, champion_auc=old, promoted=promote)
            if promote:
                registry.promote(version)
                active = (card, models)
            else:
                notes.append(f"challenger {version} (AUC {new:.3f}) not promoted over {champion[0].version} (AUC {old:.3f})")
            performance += _performance_rows(run_id, as_of, metrics, card, promote, window_cols)
            if not promote:  # the challenger's rows are kept for the record; the champion stays in charge
                performance += _performance_rows(run_id, as_of, {champion[0].model_name: champion[0].metrics},
                                                 champion[0], True, window_cols)
        except ChurnTrainingError as exc:
            # 4. fall back: the usable champion, else the BTYD estimate
            decision.update(action="fallback", error=str(exc), fallback=champion[0].version if champion else "btyd")
            notes.append(f"churn model not trained: {exc}")
    registry.log(decision)
    log(f"churn: {decision['action']} ({decision.get('reason') or decision.get('error')})")

    if active is not None:
        card, models = active
        scorer = churn_scorer(data, as_of, models, model_version=card.version, **kw)
        return ChurnOutcome(scorer, None, performance, decision, data, as_of, notes, evaluation)
    else:
        now_feats = data.features(as_of, ["customer_id", "n_orders", "tenure_days"])
        est = now_feats[["customer_id"]].merge(fallback, on="customer_id", how="left").prob_no_purchase_churn_horizon
        result = pd.DataFrame({
            "customer_id": now_feats.customer_id,
            "churn_probability": est.to_numpy(),
            "churn_model": f"{btyd_model}_no_purchase (fallback)",
            "churn_flag": history_flag(now_feats, h).to_numpy(),
            "churn_reasons": f"churn model unavailable ({decision.get('error', 'no model')}): {btyd_model} estimate",
        })
    result["churn_probability"] = result.churn_probability.clip(0, 1)
    return ChurnOutcome(None, result, performance, decision, data, as_of, notes, evaluation)


def _backtest(data: CutoffData, windows: Windows, levels, kw, test_ids, policy: ChurnPolicy, notes: list[str]):
    """Back-test metrics of a model trained on the cutoffs before ``as_of - h``, tested on ``as_of - h``
    (empty when the history has no earlier window), the cutoffs trained on, and the evaluation for plots."""
    try:
        ts_bt = training_set(data, windows.churn_backtest_train, levels=levels, **kw)
        bt_models = train_churn_models(ts_bt, min_customers=policy.min_customers)
    except ChurnTrainingError as exc:
        notes.append(f"no churn back-test: {exc}")
        return {}, [], None
    feats_t, X_t, y_t, quiet_t = cutoff_rows(data, windows.churn_test, levels=levels, customers=test_ids, **kw)
    if test_ids is not None:
        notes.append(f"back-test on {len(test_ids):,} of {data.count(windows.churn_test):,} customers at {windows.churn_test}")
    # leads have no BTYD estimate: the share of leads that did not buy in the window before
    lead_share = leads_at(data, ts_bt.cutoffs[0], "churn").no_purchase_share
    quiet_t = np.where(np.isnan(quiet_t), lead_share, quiet_t)
    preds = {CHURN_MODEL: bt_models.predict(X_t), LOGIT_BASELINE: bt_models.predict_logit(X_t),
             f"churn_{kw['btyd_model']}": quiet_t, RECENCY_BASELINE: recency_baseline(feats_t)}
    return evaluate(y_t, preds), ts_bt.cutoffs, (y_t, preds, feature_importance(bt_models, X_t))
