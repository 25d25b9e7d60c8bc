"""The run's time windows: every back-dated cutoff the models train and back-test on, sized to the history.

One function (``plan_windows``) decides them, once per run, from the as-of date, the first order date in
view and the two horizons (h = churn horizon, H = CLV horizon):

* **value back-test window** ``L``: H when at least two CLV horizons of history are in view (the learned
  model trains at ``as_of - 2L`` with labels ``(as_of - 2L, as_of - L]`` and every model is tested on
  ``(as_of - L, as_of]``). With less history, the longest window that still leaves one churn horizon of
  history before the learned model's training cutoff: ``L = max(h, min(H, (span - h) // 2))``, where
  ``span`` is the days from the first order to the as-of date. Predictions over L days are compared with
  what happened in those L days; published predictions are for H days (see ``ml/value_models.py``).
* **churn**: back-test trained on ``as_of - 2h .. as_of - (k+1)h`` (k stacked cutoffs), tested on
  ``as_of - h``; production trained on ``as_of - h .. as_of - k h``. Cutoffs before the first order are
  dropped (no buyer to learn from); the training code also skips cutoffs with too few customers.

Nothing here reads data: the caller passes the first order date (``None`` = unknown, plan as if the
history were long enough).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass(frozen=True)
class Windows:
    as_of: date
    churn_horizon_days: int
    clv_horizon_days: int
    value_window_days: int  # L: the value back-test window (= clv_horizon_days with enough history)
    value_test: date  # as_of - L: every value model is tested on (value_test, as_of]
    value_train: date  # as_of - 2L: the learned value model's back-test training cutoff
    churn_test: date  # as_of - h
    churn_backtest_train: list[date] = field(default_factory=list)
    churn_production_train: list[date] = field(default_factory=list)
    history_start: date | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def short_history(self) -> bool:
        return self.value_window_days < self.clv_horizon_days

    def cutoffs(self) -> list[date]:
        """Every back-dated cutoff (sorted, unique), for the per-cutoff features and outcomes."""
        days = {self.value_test, self.value_train, self.churn_test, *self.churn_backtest_train,
                *self.churn_production_train}
        return sorted(d for d in days if d < self.as_of)


def plan_windows(as_of: date, history_start: date | None, *, churn_horizon_days: int, clv_horizon_days: int,
                 stacked: int = 2) -> Windows:
    """The run's windows (see the module docstring)."""
    h, H = churn_horizon_days, clv_horizon_days
    span = (as_of - history_start).days if history_start is not None else None
    notes = []
    if span is None or span >= 2 * H:
        L = H
    else:
        L = max(h, min(H, (span - h) // 2))
        notes.append(
            f"{span} days of order history before the as-of date (< 2 CLV horizons of {H} days): the value models are "
            f"back-tested on a {L}-day window and their predictions scaled to {H} days"
        )

    def in_view(days: list[date]) -> list[date]:
        return [d for d in days if history_start is None or d > history_start]

    backtest = [as_of - timedelta(days=(k + 1) * h) for k in range(1, stacked + 1)]
    production = [as_of - timedelta(days=k * h) for k in range(1, stacked + 1)]
    dropped = sorted(set(backtest + production) - set(in_view(backtest + production)))
    if dropped:
        notes.append(f"churn cutoffs before the first order left out: {', '.join(map(str, dropped))}")
    return Windows(
        as_of=as_of, churn_horizon_days=h, clv_horizon_days=H, value_window_days=L,
        value_test=as_of - timedelta(days=L), value_train=as_of - timedelta(days=2 * L),
        churn_test=as_of - timedelta(days=h), churn_backtest_train=in_view(backtest),
        churn_production_train=in_view(production), history_start=history_start, notes=notes,
    )
