"""The run's windows (ml/windows.py): one plan of every cutoff, sized to the history in view."""

from __future__ import annotations

from datetime import date, timedelta

from ml.windows import plan_windows


def test_long_history_uses_the_full_horizons():
    as_of = date(2026, 9, 30)
    w = plan_windows(as_of, date(2023, 10, 3), churn_horizon_days=90, clv_horizon_days=365, stacked=2)
    assert w.value_window_days == 365 and not w.short_history and w.notes == []
    assert (w.value_test, w.value_train) == (date(2025, 9, 30), date(2024, 9, 30))
    assert w.churn_test == as_of - timedelta(days=90)
    assert w.churn_backtest_train == [as_of - timedelta(days=180), as_of - timedelta(days=270)]
    assert w.churn_production_train == [as_of - timedelta(days=90), as_of - timedelta(days=180)]
    assert w.cutoffs() == sorted({w.value_test, w.value_train, w.churn_test, *w.churn_backtest_train})
    assert all(c < as_of for c in w.cutoffs())


def test_short_history_shrinks_the_value_window_and_keeps_one_churn_horizon_before_training():
    """CDNOW-like: nine months of history before the as-of date, CLV horizon 273 days, churn 90."""
    as_of, start = date(1997, 9, 30), date(1997, 1, 1)
    w = plan_windows(as_of, start, churn_horizon_days=90, clv_horizon_days=273, stacked=2)
    span = (as_of - start).days
    assert w.short_history and w.value_window_days == max(90, (span - 90) // 2) == 91
    assert w.value_train - start >= timedelta(days=90)  # one churn horizon of history before training
    assert any("scaled to 273 days" in n for n in w.notes)
    assert w.churn_backtest_train == [date(1997, 4, 3), date(1997, 1, 3)]


def test_very_short_history_drops_cutoffs_before_the_first_order():
    as_of, start = date(2026, 9, 30), date(2026, 6, 1)
    w = plan_windows(as_of, start, churn_horizon_days=90, clv_horizon_days=365, stacked=2)
    assert w.value_window_days == 90  # never shorter than the churn horizon
    assert w.churn_production_train == [date(2026, 7, 2)]
    assert w.churn_backtest_train == []
    assert any("before the first order left out" in n for n in w.notes)


def test_unknown_history_plans_as_if_long_enough():
    w = plan_windows(date(2026, 9, 30), None, churn_horizon_days=60, clv_horizon_days=180, stacked=3)
    assert w.value_window_days == 180 and len(w.churn_backtest_train) == 3
