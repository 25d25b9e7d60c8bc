"""80 % prediction intervals from BTYD models: exact maths, hold-out coverage on data simulated from known
parameters, reproducibility, and the interval rule on atoms and ties."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from ml import btyd
from ml.intervals import (
    BootstrapFits,
    bootstrap_fits,
    interval_coverage,
    predictive_intervals,
    purchase_distribution,
)
from ml.sample_data import TRUE_PARAMS, simulate_btyd

HAS_FAMILY = importlib.util.find_spec("ml.btyd_family") is not None
needs_family = pytest.mark.skipif(not HAS_FAMILY, reason="ml/btyd_family.py (MBG/NBD, Pareto/NBD) does not exist yet")
GG = {"p": TRUE_PARAMS["p"], "q": TRUE_PARAMS["q"], "gamma": TRUE_PARAMS["gamma"]}
PARETO = {"r": 0.9, "alpha": 30.0, "s": 0.8, "beta": 400.0}
HOLDOUT_DAYS = 180.0


def _spend(rng, owner, in_calibration, n):
    """Gamma-Gamma amounts for every repeat purchase: ``Gamma(p, nu)``, ``nu ~ Gamma(q, gamma)`` per customer.
    Returns the calibration mean ``m`` (NaN without a repeat purchase) and the hold-out total."""
    nu = rng.gamma(GG["q"], 1 / GG["gamma"], n)
    amount = rng.gamma(GG["p"], 1.0, owner.size) / nu[owner]
    x = np.bincount(owner[in_calibration], minlength=n)
    total = np.bincount(owner[in_calibration], weights=amount[in_calibration], minlength=n)
    m = np.where(x > 0, total / np.maximum(x, 1), np.nan)
    return m, np.bincount(owner[~in_calibration], weights=amount[~in_calibration], minlength=n)


def simulate(model: str, n: int, *, seed: int = 0, calibration_days: float = 730.0,
             holdout_days: float = HOLDOUT_DAYS) -> pd.DataFrame:
    """Customers of a known BTYD model (``TRUE_PARAMS`` per day; Pareto/NBD: ``PARETO``), first purchase at
    day 0, observed for ``T ~ U(0, calibration_days)`` days, then a hold-out of ``holdout_days``.

    BG/NBD is ``ml.sample_data.simulate_btyd``; MBG/NBD is BG/NBD where a share ``p`` of customers is gone
    right after the first purchase; Pareto/NBD buys as a Poisson process until an ``Exp(mu)`` lifetime."""
    rng = np.random.default_rng(seed)
    T = np.floor(rng.uniform(0, calibration_days, n))
    end = T + holdout_days
    if model in ("bgnbd", "mbgnbd"):
        lam = rng.gamma(TRUE_PARAMS["r"], 1 / TRUE_PARAMS["alpha"], n)
        p = rng.beta(TRUE_PARAMS["a"], TRUE_PARAMS["b"], n)
        if model == "mbgnbd":
            lam = np.where(rng.random(n) < p, 0.0, lam)  # dropped out right after the first purchase
        sim = simulate_btyd(rng, lam, p, end)
        owner, day = sim.customer_index, sim.purchase_day
    else:
        lam = rng.gamma(PARETO["r"], 1 / PARETO["alpha"], n)
        tau = rng.exponential(1 / rng.gamma(PARETO["s"], 1 / PARETO["beta"], n))
        active = np.minimum(tau, end)
        count = rng.poisson(lam * active)
        owner = np.repeat(np.arange(n), count)
        day = rng.uniform(0, 1, owner.size) * active[owner]
    cal = day <= T[owner]
    x = np.bincount(owner[cal], minlength=n).astype(float)
    tx = np.zeros(n)
    np.maximum.at(tx, owner[cal], day[cal])
    m, holdout_spend = _spend(rng, owner, cal, n)
    return pd.DataFrame({"x": x, "tx": tx, "T": T, "m": m,
                         "holdout_purchases": np.bincount(owner[~cal], minlength=n), "holdout_spend": holdout_spend})


def _summary(d: pd.DataFrame):
    return d.x.to_numpy(), d.tx.to_numpy(), d["T"].to_numpy(), d.m.to_numpy()


@pytest.fixture(scope="module")
def bg_case():
    d = simulate("bgnbd", 20_000, seed=1)
    boot = bootstrap_fits("bgnbd", *_summary(d), n_boot=12, seed=0)
    iv = predictive_intervals("bgnbd", boot, *_summary(d), horizon=HOLDOUT_DAYS, seed=1)
    return d, boot, iv


# --- the maths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["bgnbd", pytest.param("mbgnbd", marks=needs_family)])
def test_exact_purchase_distribution_matches_the_closed_forms(model):
    """Mean and P(0) of the distribution the intervals are read from equal the model's own conditional
    expectation and P(no purchase), also for heavy buyers whose P(N = 0) underflows (walked in logs)."""
    from ml.intervals import _model

    spec = _model(model)
    if model == "bgnbd":
        params = btyd.BgNbdParams(r=0.9, alpha=30.0, a=0.9, b=10.0)
    else:
        from ml.btyd_family import MbgNbdParams

        params = MbgNbdParams(r=0.9, alpha=30.0, a=0.9, b=10.0)
    x = np.array([0.0, 0.0, 1.0, 4.0, 12.0, 40.0, 5000.0])
    tx = np.array([0.0, 0.0, 20.0, 100.0, 690.0, 300.0, 729.0])
    T = np.array([5.0, 700.0, 400.0, 365.0, 700.0, 700.0, 730.0])
    t = 200.0
    assert (0.9 + 5000) * np.log((30 + 730) / (30 + 730 + t)) < -700  # the last row takes the log path
    pmf = purchase_distribution(model, params, t, x, tx, T, max_count=3000)
    assert np.allclose(pmf.sum(axis=1), 1.0, atol=1e-12) and (pmf >= -1e-12).all()  # summation rounding
    assert pmf[:, -1].max() < 1e-9  # nothing left beyond max_count
    mean = pmf[:, :-1] @ np.arange(pmf.shape[1] - 1)
    expected = spec.expected_purchases(params, t, x, tx, T)
    assert mean == pytest.approx(expected, rel=1e-7, abs=1e-10)
    assert pmf[:, 0] == pytest.approx(spec.prob_no_purchase(params, t, x, tx, T), abs=1e-12)


@needs_family
def test_pareto_purchase_draws_match_the_closed_forms():
    """Simulated Pareto/NBD purchases: per customer, mean and share of zeros agree with the model's conditional
    expectation and P(no purchase) within sampling error (z-scores ~ N(0, 1))."""
    from ml.btyd_family import MODELS, ParetoNbdParams
    from ml.intervals import _lifetime_count_draws, _model

    params = ParetoNbdParams(**PARETO)
    d = simulate("pareto_nbd", 300, seed=3)
    x, tx, T, _ = _summary(d)
    draws = _lifetime_count_draws(_model("pareto_nbd"), [params], x, tx, T, HOLDOUT_DAYS, 10_000,
                                  np.random.default_rng(0))
    spec = MODELS["pareto_nbd"]
    expected = spec.expected_purchases(params, HOLDOUT_DAYS, x, tx, T)
    p0 = spec.prob_no_purchase(params, HOLDOUT_DAYS, x, tx, T)
    mid = (p0 > 0.01) & (p0 < 0.99)
    assert mid.sum() > 150
    n = draws.shape[1]
    z_mean = (draws.mean(axis=1) - expected)[mid] / (draws.std(axis=1)[mid] / np.sqrt(n))
    z_zero = ((draws == 0).mean(axis=1) - p0)[mid] / np.sqrt(p0 * (1 - p0) / n)[mid]
    for z in (z_mean, z_zero):
        assert abs(z.mean()) < 0.25 and 0.8 < z.std() < 1.2 and np.abs(z).max() < 5.5


def test_spend_draws_follow_gamma_gamma_given_the_purchase_count():
    """Given n purchases the spend draw is a sum of n Gamma(p, nu) transactions with nu from its posterior,
    so spend / (spend + gamma + m x) ~ Beta(n p, p x + q) exactly (the transactions' own spread included)."""
    from scipy import stats

    from ml.intervals import _dropout_counts, _model, _spend_draws

    params = btyd.BgNbdParams(r=0.9, alpha=30.0, a=0.9, b=10.0)
    gg = btyd.GammaGammaParams(p=6.0, q=4.0, gamma=30.0)
    x, tx, T, m = np.array([4.0, 0.0]), np.array([300.0, 0.0]), np.array([500.0, 20.0]), np.array([50.0, np.nan])
    rng = np.random.default_rng(0)
    _, _, _, counts = _dropout_counts(_model("bgnbd"), [params], x, tx, T, 365.0, 20_000, 0.8, rng)
    spend = _spend_draws([gg], counts, x, m, 20_000, rng)
    assert (spend[counts == 0] == 0).all() and (spend[counts > 0] > 0).all()
    for i, (shape_nu, rate_nu) in enumerate([(gg.p * 4 + gg.q, gg.gamma + 50.0 * 4), (gg.q, gg.gamma)]):
        for n in (1, 3):
            s = spend[i][counts[i] == n]
            assert s.size > 500
            assert stats.kstest(s / (s + rate_nu), stats.beta(n * gg.p, shape_nu).cdf).pvalue > 1e-3


# --- calibration on a hold-out ---------------------------------------------------------------------


def test_bgnbd_holdout_coverage_matches_the_interval_probability(bg_case):
    """Fitted on the calibration period, the 80 % intervals cover the hold-out as often as they claim:
    purchase counts tie, so an interval holds >= 80 % (``purchases_interval_prob``); the observed share
    inside must match that, and spend (continuous apart from the atom at 0) must be close to 0.8."""
    d, boot, iv = bg_case
    assert len(boot) == 12 and boot.n_failed == 0
    cov_p = interval_coverage(iv.expected_purchases_low, iv.expected_purchases_high, d.holdout_purchases)
    cov_s = interval_coverage(iv.spend_low, iv.spend_high, d.holdout_spend)
    prob_p, prob_s = iv.purchases_interval_prob.mean(), iv.spend_interval_prob.mean()
    assert (iv.purchases_interval_prob >= 0.8 - 1e-9).all()
    assert 0.8 <= prob_p < 0.93 and 0.8 <= prob_s < 0.88
    assert cov_p == pytest.approx(prob_p, abs=0.015), (cov_p, prob_p)
    assert cov_s == pytest.approx(prob_s, abs=0.02), (cov_s, prob_s)
    assert 0.78 <= cov_s <= 0.88
    # calibrated where it matters too: active buyers, whose intervals are wide
    wide = iv.expected_purchases_high.to_numpy() >= 3
    assert wide.mean() > 0.2
    cov_wide = interval_coverage(iv.expected_purchases_low[wide], iv.expected_purchases_high[wide],
                                 d.holdout_purchases[wide])
    assert cov_wide == pytest.approx(iv.purchases_interval_prob[wide].mean(), abs=0.03)


def test_intervals_without_the_purchase_process_would_not_cover(bg_case):
    """Control: the interval is not a parameter-uncertainty band. The spread of the bootstrap's point
    predictions is far narrower than the intervals, which is why they cover."""
    d, boot, iv = bg_case
    x, tx, T, _ = _summary(d)
    points = np.stack([btyd.expected_purchases(params, HOLDOUT_DAYS, x, tx, T) for params, _ in boot])
    band_low, band_high = points.min(axis=0), points.max(axis=0)
    assert interval_coverage(band_low, band_high, d.holdout_purchases) < 0.3
    assert np.median(iv.expected_purchases_high - iv.expected_purchases_low) > 5 * np.median(band_high - band_low)


def test_intervals_hold_the_point_prediction_for_most_customers(bg_case):
    """The point prediction is a mean and the interval quantiles: a customer who most likely buys nothing
    gets [0, 0] (right: it holds >= 80 %) while the mean, say 0.2, lies above it. Customers who are more
    likely than not to buy have their mean inside."""
    d, boot, iv = bg_case
    x, tx, T, m = _summary(d)
    params, gg = boot[0]
    point = btyd.expected_purchases(params, HOLDOUT_DAYS, x, tx, T)
    inside = (iv.expected_purchases_low <= point) & (point <= iv.expected_purchases_high)
    assert inside.mean() > 0.7
    buying = btyd.prob_no_purchase(params, HOLDOUT_DAYS, x, tx, T) < 0.5
    assert buying.mean() > 0.3 and inside[buying].mean() > 0.99
    spend = point * btyd.expected_average_spend(gg, x, m)
    assert ((iv.spend_low <= spend) & (spend <= iv.spend_high))[buying].mean() > 0.99
    quiet = btyd.prob_no_purchase(params, HOLDOUT_DAYS, x, tx, T) > 0.88
    assert quiet.sum() > 100 and (iv.expected_purchases_high[quiet] == 0).all()  # [0, 0] is right
    assert (iv.spend_high[quiet] == 0).mean() > 0.95


@needs_family
@pytest.mark.parametrize("model", ["mbgnbd", "pareto_nbd"])
def test_other_family_members_are_calibrated_on_their_own_data(model):
    d = simulate(model, 8_000, seed=4)
    boot = bootstrap_fits(model, *_summary(d), n_boot=6, seed=0)
    assert len(boot) + boot.n_failed == 6 and len(boot) >= 5
    iv = predictive_intervals(model, boot, *_summary(d), horizon=HOLDOUT_DAYS, draws=120, seed=2)
    cov_p = interval_coverage(iv.expected_purchases_low, iv.expected_purchases_high, d.holdout_purchases)
    cov_s = interval_coverage(iv.spend_low, iv.spend_high, d.holdout_spend)
    assert cov_p == pytest.approx(iv.purchases_interval_prob.mean(), abs=0.025)
    assert cov_s == pytest.approx(iv.spend_interval_prob.mean(), abs=0.03)
    assert 0.76 <= cov_s <= 0.9


# --- the interval rule, CLV, reproducibility ---------------------------------------------------------


def test_the_interval_rule_on_atoms_and_continuous_values():
    """Lower end at the 10th percentile; upper end the smallest value giving >= 80 % inside. Without an atom
    that is the equal-tailed interval; with P(0) >= 10 % it is [0, 80th percentile], not [0, 90th]."""
    params = btyd.BgNbdParams(r=0.9, alpha=30.0, a=0.9, b=10.0)
    gg = btyd.GammaGammaParams(p=6.0, q=4.0, gamma=30.0)
    x, tx, T = np.array([0.0, 30.0, 30.0]), np.array([0.0, 699.0, 100.0]), np.array([30.0, 700.0, 700.0])
    m = np.array([np.nan, 60.0, 60.0])
    iv = predictive_intervals("bgnbd", [(params, gg)], x, tx, T, m, horizon=365, draws=4000, seed=0)
    pmf = purchase_distribution("bgnbd", params, 365, x, tx, T, max_count=400)
    cdf = np.cumsum(pmf, axis=1)
    for i in range(3):
        low = int(np.argmax(cdf[i] >= 0.1))
        below = cdf[i, low - 1] if low > 0 else 0.0
        high = int(np.argmax(cdf[i] >= below + 0.8 - 1e-12))
        assert (iv.expected_purchases_low[i], iv.expected_purchases_high[i]) == (low, high)
        assert iv.purchases_interval_prob[i] == pytest.approx(cdf[i, high] - below)
    assert iv.expected_purchases_low[0] == 0 and pmf[0, 0] > 0.1  # atom at 0: [0, 80th percentile]
    assert iv.expected_purchases_high[0] < int(np.argmax(cdf[0] >= 0.9))
    assert iv.expected_purchases_high[2] == 0 and iv.purchases_interval_prob[2] > 0.95  # likely gone: [0, 0]
    # the active heavy buyer has no atom at 0: spend interval is equal-tailed with 80 % of the draws inside
    assert iv.spend_low[1] > 0 and iv.spend_interval_prob[1] == pytest.approx(0.8, abs=1e-3)
    assert iv.spend_interval_prob[0] == pytest.approx(0.8, abs=1e-3)  # [0, 80th percentile] holds 80 %


def test_clv_is_spend_discounted_over_the_horizon(bg_case):
    from ml.value_models import discount_factor

    d, boot, _ = bg_case
    sub = d.iloc[:2000]
    iv = predictive_intervals("bgnbd", boot, *_summary(sub), horizon=365, annual_discount_rate=0.1, seed=3)
    factor = discount_factor(365, 0.1)
    assert 0.9 < factor < 1.0
    assert np.allclose(iv.clv_low, iv.spend_low * factor) and np.allclose(iv.clv_high, iv.spend_high * factor)
    assert (iv.clv_low <= iv.clv_high).all() and (iv.clv_low >= 0).all()


def test_reproducible_with_a_seed_and_independent_of_batching(bg_case):
    d, boot, _ = bg_case
    sub = d.iloc[:3000]
    a = predictive_intervals("bgnbd", boot, *_summary(sub), horizon=HOLDOUT_DAYS, seed=7, batch_rows=1000)
    b = predictive_intervals("bgnbd", boot, *_summary(sub), horizon=HOLDOUT_DAYS, seed=7, batch_rows=1000)
    c = predictive_intervals("bgnbd", boot, *_summary(sub), horizon=HOLDOUT_DAYS, seed=8, batch_rows=700)
    pd.testing.assert_frame_equal(a, b)
    # purchase intervals are exact (no Monte Carlo): the same whatever the seed or the batches
    for col in ("expected_purchases_low", "expected_purchases_high", "purchases_interval_prob"):
        assert np.array_equal(a[col], c[col])
    assert not np.array_equal(a.spend_high, c.spend_high)
    assert np.median(np.abs(a.spend_high - c.spend_high) / np.maximum(a.spend_high, 1)) < 0.1
    again = bootstrap_fits("bgnbd", *_summary(d), n_boot=2, seed=0)
    assert [f[0].r for f in again] == [f[0].r for f in boot[:2]]


# --- the bootstrap -------------------------------------------------------------------------------


def test_bootstrap_spread_shrinks_like_one_over_root_n():
    """Poisson(1) weights really resample: the replicates scatter around the full-data fit, and four times
    the customers halve the scatter."""
    spread = {}
    for n in (4_000, 16_000):
        d = simulate("bgnbd", n, seed=11)
        full = btyd.fit_bgnbd(d.x, d.tx, d["T"])
        boot = bootstrap_fits("bgnbd", *_summary(d), n_boot=24, seed=1)
        r = np.array([f[0].r for f in boot])
        q = np.array([f[1].q for f in boot])
        assert abs(np.mean(r) - full.r) < 3 * np.std(r)
        assert np.std(r) > 0 and np.std(q) > 0
        # the scatter of all four parameters: one parameter's spread over 24 replicates is itself +-15 %
        spread[n] = np.mean([np.std(np.log([getattr(f[0], p) for f in boot])) for p in ("r", "alpha", "a", "b")])
    assert 1.4 < spread[4_000] / spread[16_000] < 2.9


def test_failed_refits_are_skipped_and_counted():
    """Barely enough repeat buyers: some replicates keep fewer than the fit's minimum and fail."""
    rng = np.random.default_rng(5)
    n = 400
    x = np.where(rng.random(n) < 0.03, 1.0 + rng.integers(0, 3, n), 0.0)
    T = np.full(n, 300.0)
    tx = np.where(x > 0, rng.uniform(1, 300, n), 0.0)
    m = np.where(x > 0, rng.gamma(6, 10, n), np.nan)
    boot = bootstrap_fits("bgnbd", x, tx, T, m, n_boot=30, seed=0)
    assert isinstance(boot, BootstrapFits) and boot.n_requested == 30
    assert boot.n_failed > 0 and len(boot) + boot.n_failed == 30
    assert all(msg for msg in boot.failures) and any("too few repeat buyers" in msg for msg in boot.failures)
    assert len(boot) > 0 and isinstance([boot[0]] + boot, list)  # the caller prepends the point fit


def test_clear_errors():
    params, gg = btyd.BgNbdParams(r=0.9, alpha=30.0, a=0.9, b=10.0), btyd.GammaGammaParams(p=6.0, q=4.0, gamma=30.0)
    args = (np.array([1.0]), np.array([5.0]), np.array([10.0]), np.array([20.0]))
    with pytest.raises(ValueError, match="no parameter draws"):
        predictive_intervals("bgnbd", [], *args, horizon=30)
    with pytest.raises(ValueError, match="unknown BTYD model"):
        predictive_intervals("bgnbd_gg", [(params, gg)], *args, horizon=30)
    with pytest.raises(ValueError, match="horizon"):
        predictive_intervals("bgnbd", [(params, gg)], *args, horizon=0)
    with pytest.raises(ValueError, match="monetary_value"):
        predictive_intervals("bgnbd", [(params, gg)], *args[:3], np.array([1.0, 2.0]), horizon=30)
    with pytest.raises(ValueError, match="invalid"):
        predictive_intervals("bgnbd", [(params, gg)], args[0], np.array([50.0]), args[2], args[3], horizon=30)
    with pytest.raises(ValueError, match="differ in length"):
        interval_coverage([0, 1], [1, 2], [1])
    assert interval_coverage([0, 1, 2], [0, 3, 2], [0, 3, 3]) == pytest.approx(2 / 3)  # ends are inside
