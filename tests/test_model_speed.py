"""The model steps' shortcuts give the same numbers as the long way (issue 13): reason codes re-run only the
rows whose path in a tree passes a split on the moved features, and the value models reuse BTYD
predictions they already made instead of predicting the same rows again."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

from ml.churn import PROFILE_FEATURES, TrainingSet, _at_reference, _units, train_churn_models, tree_effects
from ml.sample_data import simulate_btyd
from ml.tree_effects import TreeEffects
from ml.value_models import ROW_BY_ROW, LeadRates, btyd_predict, fit_btyd


@lru_cache(maxsize=None)
def _fitted(n: int = 6000, seed: int = 0):
    """A churn model on numeric features with missing values, a categorical profile feature and a category
    no training row has (unknown to the trees), and the rows to explain."""
    rng = np.random.default_rng(seed)
    recency = rng.exponential(60, n)
    complaints = rng.poisson(0.3, n).astype(float)
    rate = rng.uniform(0, 1, n)
    rate[rng.random(n) < 0.15] = np.nan
    band = rng.choice(["18-24", "35-44", "55-64"], n, p=[0.3, 0.45, 0.25])
    logit = -1.5 + recency / 40 + 0.8 * complaints - np.nan_to_num(rate, nan=-0.5) + 1.0 * (band == "18-24")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = pd.DataFrame({"recency_days": recency, "unresolved_complaints": complaints, "campaign_response_rate": rate,
                      "n_web_visit_90d": rng.poisson(2.0, n).astype(float),
                      "age_band": pd.Categorical(band, categories=["18-24", "35-44", "55-64", "65+"])})
    models = train_churn_models(TrainingSet(X, y, np.arange(n).astype(str), np.full(n, 0.5), [date(2026, 1, 1)]),
                                min_customers=100, baseline=False)
    test = X.iloc[:1500].copy()
    test.loc[test.index[:40], "age_band"] = "65+"  # never seen in training
    test.loc[test.index[40:60], "age_band"] = np.nan
    test.loc[test.index[60:80], "recency_days"] = np.nan
    return models, test[models.features]


def test_leaf_path_shortcut_equals_full_repredictions_to_the_bit():
    models, X = _fitted()
    hgb = models.model.estimator.estimator
    effects = tree_effects(models, X)
    encoded = effects.encode(X)
    leaves = effects.leaves(encoded)
    per_tree = effects.per_tree(encoded, leaves)
    assert np.array_equal(per_tree, effects.per_tree(encoded))  # leaf values read off = the trees' predictions
    groups = {**_units(models.features), "profile": [c for c in PROFILE_FEATURES if c in models.features],
              "everything": list(models.features)}  # every split bypassed: each tree's one reference leaf
    rerun = {}  # unit -> (rows re-run, rows x trees splitting on the unit)
    for unit, cols in groups.items():
        short = effects.difference(per_tree, encoded, cols, leaves)
        assert np.array_equal(short, effects.difference(per_tree, encoded, cols)), unit
        full = hgb.decision_function(X) - hgb.decision_function(_at_reference(models, X, cols))
        assert np.allclose(short, full, atol=1e-9), unit
        rerun[unit] = (sum(int(below[leaves[:, t]].sum()) for t, _, below in effects._bypass(cols)),
                       len(X) * len(effects.trees_using(cols)))
    assert effects.trees_using(["recency_days"]) and effects.trees_using(["age_band"])
    # the saving is real: most rows never pass a split on a feature the model barely uses
    assert rerun["n_web_visit_90d"][0] < rerun["n_web_visit_90d"][1] / 2
    assert rerun["everything"][0] == rerun["everything"][1]  # ... but every row passes the root


@pytest.mark.parametrize("reference", [
    {"recency_days": np.nan, "age_band": np.nan},  # missing values follow each split's missing side
    {"recency_days": 1e9, "age_band": "65+"},  # beyond every threshold; a category the trees do not know
])
def test_bypassed_splits_follow_the_trees_own_rule_for_any_reference(reference):
    models, X = _fitted(3000, seed=1)
    hgb = models.model.estimator.estimator
    ref = _at_reference(models, X.iloc[:1], models.features)
    for col, value in reference.items():
        ref[col] = pd.Categorical([value], categories=X[col].cat.categories) if col == "age_band" else value
    effects = TreeEffects(hgb, models.features, ref)
    encoded = effects.encode(X)
    leaves = effects.leaves(encoded)
    per_tree = effects.per_tree(encoded, leaves)
    for cols in (["recency_days"], ["age_band"], ["recency_days", "age_band"]):
        assert np.array_equal(effects.difference(per_tree, encoded, cols, leaves),
                              effects.difference(per_tree, encoded, cols)), cols


@pytest.mark.parametrize("category", [np.nan, -1.0, 0.0, 1.0, 2.0, 3.0, 200.0])
def test_the_reference_side_of_every_split_is_the_one_scikit_learn_takes(category):
    """Per split: the side the reference row takes (the bypass) is the side scikit-learn's own predictor
    sends it to, for any encoded category (missing, negative, known, unknown to the trees) and numbers at,
    around and beyond the thresholds."""
    models, X = _fitted(3000, seed=1)
    effects = tree_effects(models, X)
    band, recency = effects._position["age_band"], effects._position["recency_days"]
    checked = set()
    for number in (np.nan, -1e300, 0.0, 41.5, 1e300):
        effects._reference[band], effects._reference[recency] = category, number
        for tree in effects.trees:
            nodes = tree.nodes
            goes_left = effects._reference_goes_left(tree)
            for n in np.flatnonzero(nodes["is_leaf"] == 0):
                probe = np.zeros(3, dtype=nodes.dtype)  # the split alone, its left leaf 0, its right leaf 1
                probe[0] = nodes[n]
                probe[0]["left"], probe[0]["right"] = 1, 2
                probe[1:]["is_leaf"], probe[2]["value"] = 1, 1.0
                side = TreePredictor(probe, tree.binned_left_cat_bitsets, tree.raw_left_cat_bitsets).predict(
                    effects._reference[None, :], effects._bitsets, effects._f_idx_map, 1)[0]
                assert goes_left[n] == (side == 0.0), (n, category, number)
                checked.add((bool(nodes["is_categorical"][n]), bool(goes_left[n])))
    assert len(checked) == 4  # categorical and numeric splits, each taken to the left and to the right


@pytest.mark.parametrize("family", ROW_BY_ROW)
def test_row_by_row_btyd_predictions_do_not_depend_on_the_batch(family):
    """The value models reuse the whole population's predictions for a batch of it (ROW_BY_ROW families)."""
    rng = np.random.default_rng(3)
    n = 4000
    T = np.floor(rng.uniform(30, 1095, n))
    sim = simulate_btyd(rng, rng.gamma(0.9, 1 / 30.0, n), rng.beta(0.9, 10.0, n), T)
    x = sim.n_repeat.astype(float)
    last = np.zeros(n)
    np.maximum.at(last, sim.customer_index, sim.purchase_day)
    feats = pd.DataFrame({"customer_id": [f"c{i:05d}" for i in range(n)], "n_orders": x + 1, "frequency": x,
                          "btyd_recency_days": last, "btyd_t_days": T,
                          "repeat_spend_mean": np.where(x > 0, rng.gamma(6.0, 5.0, n), np.nan)})
    feats.loc[feats.index[:50], ["n_orders", "frequency", "btyd_recency_days", "btyd_t_days"]] = [0, np.nan, np.nan, np.nan]
    fit = fit_btyd(feats, family)
    kw = dict(horizon_days=365, churn_horizon_days=90, annual_discount_rate=0.1, leads=LeadRates(1.0, 20.0, 0.6))
    whole = btyd_predict(fit, feats, **kw)
    parts = pd.concat([btyd_predict(fit, feats.iloc[s:s + 700], with_clv=False, **kw) for s in range(0, n, 700)],
                      ignore_index=True)
    for col in parts.columns:
        assert np.array_equal(whole[col].to_numpy(), parts[col].to_numpy()), col
