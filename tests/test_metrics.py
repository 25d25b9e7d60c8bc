"""Back-test metrics on known values."""

from __future__ import annotations

import numpy as np
import pytest

from ml.metrics import normalised_gini, value_metrics


def test_normalised_gini_extremes():
    actual = np.array([0, 0, 10, 50, 100.0])
    assert normalised_gini(actual, actual) == pytest.approx(1.0)
    assert normalised_gini(actual, -actual) < 0
    rng = np.random.default_rng(0)
    big = rng.gamma(0.5, 100, 20_000)
    assert abs(normalised_gini(big, rng.random(20_000))) < 0.03


def test_ties_earn_no_credit():
    actual = np.array([0, 0, 0, 100.0])
    assert normalised_gini(actual, np.ones(4)) < 0  # a constant prediction ranks the big spender last
    assert normalised_gini(actual, np.array([0, 0, 0, 1.0])) == pytest.approx(1.0)


def test_value_metrics_totals():
    m = value_metrics([10, 20, 30], [12, 18, 33])
    assert m["total_ratio"] == pytest.approx(63 / 60)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["n_customers"] == 3
