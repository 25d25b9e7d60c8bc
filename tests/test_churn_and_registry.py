"""Churn metrics, training failure modes, reason words, and the model registry's decisions."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from ml.churn import (
    ChurnTrainingError, TrainingSet, _at_reference, _units, describe_feature, reason_codes, train_churn_models, tree_effects,
)
from ml.cutoff_data import CutoffData
from ml.metrics import churn_metrics
from ml.registry import ModelCard, Registry, population_stability, retrain_reason, score_reference


def _training_set(n=2000, seed=0, single_class=False, null_column=False):
    rng = np.random.default_rng(seed)
    recency = rng.exponential(60, n)
    complaints = rng.poisson(0.3, n).astype(float)
    logit = -1.5 + recency / 40 + 0.8 * complaints
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    if single_class:
        y[:] = 1
    X = pd.DataFrame({"recency_days": recency, "unresolved_complaints": complaints, "noise": rng.normal(size=n)})
    if null_column:
        X["last_nps_score"] = np.nan
    X["country"] = pd.Categorical(rng.choice(["DE", "FR"], n), categories=["DE", "FR"])
    return TrainingSet(X, y, np.arange(n).astype(str), np.full(n, 0.5), [date(2026, 1, 1)])


def test_churn_model_learns_and_is_calibrated():
    ts = _training_set(6000)
    models = train_churn_models(ts, min_customers=100)
    test = _training_set(4000, seed=1)
    m = churn_metrics(test.y, models.predict(test.X))
    assert m["roc_auc"] > 0.75
    deciles = [(m[f"calib_d{d:02d}_expected"], m[f"calib_d{d:02d}_observed"]) for d in range(1, 11)]
    assert max(abs(e - o) for e, o in deciles) < 0.1
    assert models.calibration == "sigmoid"  # 1,200 calibration rows < 2,000


def test_single_class_is_a_clear_error():
    with pytest.raises(ChurnTrainingError, match="every one of the 2000 training examples churned"):
        train_churn_models(_training_set(single_class=True), min_customers=100)


def test_too_few_customers_is_a_clear_error():
    with pytest.raises(ChurnTrainingError, match="2000 customers .* the configured minimum is 5000"):
        train_churn_models(_training_set(), min_customers=5000)


def test_all_null_feature_is_left_out_and_noted():
    models = train_churn_models(_training_set(null_column=True), min_customers=100)
    assert "last_nps_score" not in models.features
    assert any("last_nps_score" in note for note in models.notes)


def test_tree_effects_equal_full_repredictions():
    """Re-running only the trees that split on a feature gives exactly the full model's difference,
    for numeric and categorical features alike."""
    ts = _training_set(6000)
    ts.X["country"] = pd.Categorical(np.where(ts.X.unresolved_complaints > 0, "FR", "DE"), categories=["DE", "FR"])
    models = train_churn_models(ts, min_customers=100)
    hgb = models.model.estimator.estimator
    X = ts.X[models.features].iloc[:400]
    effects = tree_effects(models, X)
    encoded = effects.encode(X)
    per_tree = effects.per_tree(encoded)
    assert np.allclose(per_tree.sum(axis=1) + hgb._baseline_prediction.ravel()[0], hgb.decision_function(X))
    checked = 0
    for unit, cols in _units(models.features).items():
        moved = _at_reference(models, X, cols)
        full = hgb.decision_function(X) - hgb.decision_function(moved)
        assert np.allclose(effects.difference(per_tree, encoded, cols), full, atol=1e-9), unit
        checked += bool(effects.trees_using(cols))
    assert checked >= 3  # recency, complaints, country (at least) are split on
    assert len(effects.trees_using(["country"])) < len(effects.trees)  # the saving is real
    reasons = reason_codes(models, X, batch=150)  # batches give the same words as one pass
    assert (reasons == reason_codes(models, X)).all()
    assert reasons.str.contains("unresolved complaint").any()


def test_cutoff_data_reads_one_cutoff_a_sample_or_batches():
    days = [date(2026, 1, 1), date(2026, 4, 1)]
    history = pd.DataFrame({"as_of_date": np.repeat(days, 50), "customer_id": [f"c{i:03d}" for i in range(50)] * 2,
                            "n_orders": np.arange(100), "country": ["DE", "FR"] * 50})
    history = history.sample(frac=1, random_state=0)  # stored in no particular order
    outcomes = history[["as_of_date", "customer_id"]].assign(churned=True)
    data = CutoffData.from_frames(history, outcomes)
    whole = data.features(days[1])
    assert list(whole.customer_id) == sorted(whole.customer_id) and whole.n_orders.min() == 50 and len(whole) == 50
    ids = data.sample(days[1], 10, seed=3)
    assert len(ids) == 10 and (ids == data.sample(days[1], 10, seed=3)).all() and data.sample(days[1], 50) is None
    part = data.features(days[1], ["customer_id", "n_orders"], customers=ids)
    assert list(part.columns) == ["customer_id", "n_orders"] and list(part.customer_id) == list(ids)
    assert len(data.outcomes(days[0], customers=ids)) == 10
    batches = list(data.batches(days[0], 2048))
    assert sum(map(len, batches)) == 50 and pd.concat(batches).customer_id.is_monotonic_increasing
    assert data.category_levels(days, ["country", "absent"]) == {"country": ["DE", "FR"], "absent": []}


def test_churn_metrics_known_values():
    y = np.array([0, 0, 1, 1])
    m = churn_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert m["top_decile_lift"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "name, value, reference, words",
    [("recency_days", 143.0, 30.0, "no purchase for 143 days"),
     ("unresolved_complaints", 2.0, 0.0, "2 unresolved complaints"),
     ("n_web_visit_90d", 1.0, 6.0, "only 1 web visit in the last 90 days"),
     ("n_complaint_30d", 2.0, 0.0, "2 complaints in the last 30 days"),
     ("last_nps_score", float("nan"), 8.0, "no NPS answer on record")],
)
def test_reason_words(name, value, reference, words):
    assert describe_feature(name, value, reference) == words


def _card(**kw):
    base = dict(task="churn", version="v1", model_name="churn_hgb", trained_for_as_of="2026-09-01",
                trained_at="t", train_cutoffs=[], label_window_end="2026-09-01", backtest_train_cutoffs=[],
                backtest_test_cutoff="2026-06-01", features=["a", "b"], metrics={"roc_auc": 0.9},
                baseline_metrics={}, data_fingerprint="f", library_versions={}, n_train_rows=1, calibration="isotonic")
    base.update(kw)
    return ModelCard(**base)


def test_retrain_decisions():
    card = _card()
    kw = dict(features=["a", "b"], psi=0.01, psi_threshold=0.25, current_auc=None, degrade_tolerance=0.05)
    assert retrain_reason(None, as_of=date(2026, 9, 1), cadence_days=7, **kw) == "no champion yet"
    assert retrain_reason(card, as_of=date(2026, 9, 3), cadence_days=7, **kw) is None
    assert retrain_reason(card, as_of=date(2026, 9, 8), cadence_days=7, **kw).startswith("cadence")
    assert retrain_reason(card, as_of=date(2026, 9, 3), cadence_days=7, **{**kw, "psi": 0.4}).startswith("drift")
    assert retrain_reason(card, as_of=date(2026, 9, 3), cadence_days=7, **{**kw, "current_auc": 0.8}).startswith("degraded")
    assert retrain_reason(card, as_of=date(2026, 9, 3), cadence_days=7, **{**kw, "features": ["a"]}).startswith("features changed")


def test_population_stability():
    rng = np.random.default_rng(0)
    ref = score_reference(rng.random(10_000))
    assert population_stability(ref, rng.random(10_000)) < 0.01
    assert population_stability(ref, rng.random(10_000) ** 4) > 0.25


def test_registry_roundtrip_and_decision_log(tmp_path):
    reg = Registry(tmp_path, "churn")
    assert reg.champion() is None
    card = _card()
    reg.save(card, {"weights": [1, 2, 3]})
    reg.promote("v1")
    loaded_card, model = reg.champion()
    assert loaded_card == card and model == {"weights": [1, 2, 3]}
    assert (tmp_path / "churn" / "v1" / "card.md").read_text().startswith("# Model card: churn / v1")
    reg.log({"action": "reuse"})
    assert reg.decisions()[0]["action"] == "reuse"


def test_published_churn_model_is_the_back_test_winner_and_btyd_wins_ties():
    from ml.churn_lifecycle import published_model

    m = lambda auc: {"roc_auc": auc}  # noqa: E731
    assert published_model({"churn_hgb": m(0.80), "churn_logit": m(0.78), "churn_mbgnbd": m(0.79)}, "churn_mbgnbd") == "churn_hgb"
    assert published_model({"churn_hgb": m(0.73), "churn_logit": m(0.743), "churn_mbgnbd": m(0.741)}, "churn_mbgnbd") == "churn_logit"
    # a learned model must beat the BTYD estimate, not tie it
    assert published_model({"churn_hgb": m(0.74), "churn_logit": m(0.74), "churn_bgnbd": m(0.74)}, "churn_bgnbd") == "churn_bgnbd"
    assert published_model({}, "churn_bgnbd") == "churn_hgb"  # no back-test: the learned model


def test_reuse_blockers_name_source_time_and_features():
    from ml.registry import Lineage, reuse_blockers

    card = _card(warehouse="/w.duckdb", source="/src")
    home = Lineage("/w.duckdb", "/src")
    assert reuse_blockers(card, lineage=home, as_of=date(2026, 9, 1), features=["a", "b"]) == []
    assert "another warehouse or source" in reuse_blockers(card, lineage=Lineage("/w.duckdb", "/other"),
                                                           as_of=date(2026, 9, 1), features=["a", "b"])[0]
    assert "after the as-of date" in reuse_blockers(card, lineage=home, as_of=date(2026, 8, 31), features=["a", "b"])[0]
    assert "new: c" in reuse_blockers(card, lineage=home, as_of=date(2026, 9, 1), features=["a", "b", "c"])[0]
    assert "no longer available: b" in reuse_blockers(card, lineage=home, as_of=date(2026, 9, 1), features=["a"])[0]
