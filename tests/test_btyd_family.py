"""MBG/NBD and Pareto/NBD: published CDNOW values, the reference implementation, quadrature, simulation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import dblquad, quad
from scipy.special import gammaincinv

from ml import btyd
from ml import btyd_family as bf
from ml.btyd_family import (
    MODELS,
    BtydModel,
    MbgNbdParams,
    ParetoNbdParams,
    fit_mbgnbd,
    fit_pareto_nbd,
    mbgnbd_expected_purchases,
    mbgnbd_log_likelihood,
    mbgnbd_p_alive,
    mbgnbd_prob_no_purchase,
    pareto_nbd_expected_purchases,
    pareto_nbd_log_likelihood,
    pareto_nbd_p_alive,
    pareto_nbd_prob_no_purchase,
)
from ml.sample_data import simulate_btyd

# Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions": CDNOW sample,
# 2,357 customers, weeks.
PUBLISHED_PARETO = {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}
PUBLISHED_PARETO_LL = -9594.98

CHI2_4DF_999 = 18.467  # 0.999 quantile of chi-square with 4 degrees of freedom


def _cdnow() -> pd.DataFrame:
    spec = importlib.util.find_spec("lifetimes")  # test-only dependency (pyproject [dev])
    assert spec is not None, "install the dev extras: pip install -e '.[dev]'"
    return pd.read_csv(Path(spec.submodule_search_locations[0]) / "datasets" / "cdnow_customers_summary.csv")


@pytest.fixture(scope="module")
def cdnow():
    d = _cdnow()
    return d.frequency.to_numpy(float), d.recency.to_numpy(float), d["T"].to_numpy(float)


@pytest.fixture(scope="module")
def cdnow_pareto(cdnow):
    return fit_pareto_nbd(*cdnow, time_unit="weeks")


@pytest.fixture(scope="module")
def cdnow_mbg(cdnow):
    return fit_mbgnbd(*cdnow, time_unit="weeks")


def _close_to_published(value: float, published: float) -> bool:
    """Within half the last printed digit plus 1e-3 relative (as in tests/test_btyd.py)."""
    decimals = len(repr(published).split(".")[1])
    return abs(value - published) <= 0.5 * 10**-decimals + 1e-3 * abs(published)


# ---------------------------------------------------------------------------------------------
# Simulators (the generative stories, written independently of the likelihoods)
# ---------------------------------------------------------------------------------------------


def _split_at_T(owner, times, T, n):
    """Calibration summaries (x, t_x) on [0, T] and the count of purchases after T."""
    cal = times <= T[owner]
    x = np.bincount(owner[cal], minlength=n).astype(float)
    t_x = np.zeros(n)
    np.maximum.at(t_x, owner[cal], times[cal])
    return x, t_x, np.bincount(owner[~cal], minlength=n)


def _simulate_pareto(rng, n, r, alpha, s, beta, T, horizon=0.0):
    """Exp(mu) lifetime; repeat purchases a Poisson(lambda) process until death or T + horizon."""
    lam = rng.gamma(r, 1 / alpha, n)
    mu = rng.gamma(s, 1 / beta, n)
    end = np.minimum(rng.exponential(1 / mu), T + horizon)
    owner = np.repeat(np.arange(n), rng.poisson(lam * end))
    times = rng.uniform(size=owner.size) * end[owner]
    return _split_at_T(owner, times, T, n)


def _simulate_mbg(rng, n, r, alpha, a, b, T, horizon=0.0):
    """BG/NBD after surviving a first dropout chance p at time 0."""
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    sim = simulate_btyd(rng, lam, p, T + horizon)
    gone_at_once = rng.random(n) < p
    keep = ~gone_at_once[sim.customer_index]
    return _split_at_T(sim.customer_index[keep], sim.purchase_day[keep], T, n)


# ---------------------------------------------------------------------------------------------
# Published values and the reference implementation (lifetimes)
# ---------------------------------------------------------------------------------------------


def test_pareto_nbd_matches_published_cdnow_parameters(cdnow_pareto):
    for name, published in PUBLISHED_PARETO.items():
        assert _close_to_published(getattr(cdnow_pareto, name), published), (name, getattr(cdnow_pareto, name))
    assert cdnow_pareto.log_likelihood == pytest.approx(PUBLISHED_PARETO_LL, abs=0.01)
    assert cdnow_pareto.n_customers == 2357 and cdnow_pareto.time_unit == "weeks"


def test_pareto_nbd_functions_match_lifetimes(cdnow_pareto, cdnow):
    from lifetimes import ParetoNBDFitter

    x, tx, T = cdnow
    p = cdnow_pareto
    ref = ParetoNBDFitter()
    ref.params_ = pd.Series({"r": p.r, "alpha": p.alpha, "s": p.s, "beta": p.beta})
    ll_ref = ParetoNBDFitter._conditional_log_likelihood([p.r, p.alpha, p.s, p.beta], x.astype(int), tx, T)
    assert pareto_nbd_log_likelihood(p, x, tx, T) == pytest.approx(ll_ref, rel=1e-10)
    assert pareto_nbd_p_alive(p, x, tx, T) == pytest.approx(ref.conditional_probability_alive(x, tx, T), rel=1e-9)
    for t in (10.0, 39.0, 52.0):
        ours = pareto_nbd_expected_purchases(p, t, x, tx, T)
        theirs = ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T)
        assert ours == pytest.approx(theirs, rel=1e-9), t


def test_mbgnbd_matches_lifetimes_fit(cdnow_mbg, cdnow):
    from lifetimes import ModifiedBetaGeoFitter

    x, tx, T = cdnow
    ref = ModifiedBetaGeoFitter().fit(x, tx, T)
    theirs = MbgNbdParams(*(float(ref.params_[k]) for k in ("r", "alpha", "a", "b")))
    for name in ("r", "alpha", "a", "b"):
        assert getattr(cdnow_mbg, name) == pytest.approx(getattr(theirs, name), rel=1e-3), name
    # our per-customer likelihood is theirs (their mean negative log-likelihood at their parameters)
    log_params = np.log([theirs.r, theirs.alpha, theirs.a, theirs.b])
    mean_nll = ModifiedBetaGeoFitter._negative_log_likelihood(log_params, x, tx, T, np.ones_like(x), 0.0)
    ll_theirs = mbgnbd_log_likelihood(theirs, x, tx, T)
    assert -ll_theirs.mean() == pytest.approx(mean_nll, rel=1e-12)
    # and our fit is at least as likely
    assert cdnow_mbg.log_likelihood >= ll_theirs.sum() - 1e-6
    assert cdnow_mbg.log_likelihood == pytest.approx(mbgnbd_log_likelihood(cdnow_mbg, x, tx, T).sum(), abs=1e-6)


def test_mbgnbd_predictions_match_lifetimes(cdnow_mbg, cdnow):
    from lifetimes import ModifiedBetaGeoFitter

    x, tx, T = cdnow
    p = cdnow_mbg
    ref = ModifiedBetaGeoFitter()
    ref.params_ = pd.Series({"r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b})
    alive = mbgnbd_p_alive(p, x, tx, T)
    assert alive == pytest.approx(ref.conditional_probability_alive(x, tx, T), rel=1e-12)
    assert np.all(alive[x == 0] < 1)  # the model's point: a customer without a repeat purchase may be gone
    for t in (10.0, 39.0, 52.0):
        ours = mbgnbd_expected_purchases(p, t, x, tx, T)
        theirs = ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T)
        assert ours == pytest.approx(theirs, rel=1e-9), t


# ---------------------------------------------------------------------------------------------
# The hypergeometric tail integral against quadrature
# ---------------------------------------------------------------------------------------------


def _tail_by_quadrature(p, q, A, B, y) -> float:
    """ln of int_y^inf (A+v)^-p (B+v)^-q dv by adaptive quadrature on short pieces of u = ln((m+v)/(m+y)).

    The integrand rises (when the smaller constant's exponent is below 1) until ``m+v ~ M-m`` and then
    decays like ``e^-(p+q-1)u``, so the pieces cover both scales; it is scaled by its largest value.
    """
    m = min(A, B)
    base = m + y
    u_max = max(0.0, np.log(max(A, B) / base)) + 80.0 / (p + q - 1) + 5.0

    def g(u):
        e = base * np.exp(u)
        return np.log(base) + u - p * np.log(A - m + e) - q * np.log(B - m + e)

    edges = np.unique(np.concatenate([np.linspace(0, u_max, 120), np.linspace(0, min(u_max, 3.0), 40)]))
    g_max = max(g(u) for u in edges)
    total = sum(quad(lambda u: np.exp(g(u) - g_max), u0, u1, epsabs=0, epsrel=1e-13, limit=200)[0]
                for u0, u1 in zip(edges[:-1], edges[1:]))
    return float(np.log(total) + g_max)


TAIL_CASES = [
    # CDNOW-like (alpha < beta), several x and y
    (0.55, 1.61, 10.58, 11.67, 0.0), (3.55, 1.61, 10.58, 11.67, 20.0), (30.55, 1.61, 10.58, 11.67, 38.0),
    # the smaller constant tiny: z = 1 - 2e-5, exponents with integer d = q - 1 (0 and 1) and not
    (0.9, 1.0, 5.0, 1e-4, 0.0), (0.9, 2.0, 5.0, 1e-4, 0.0), (0.9, 1.7, 5.0, 1e-4, 0.0), (40.9, 1.7, 5.0, 1e-4, 1e-3),
    # alpha tiny instead: the large exponent r+x on the smaller constant
    (0.9, 1.7, 1e-4, 5.0, 0.0), (5.9, 1.7, 1e-4, 5.0, 0.0), (300.9, 1.7, 1e-4, 5.0, 0.01),
    # very large frequencies, z moderate and z near 1
    (2000.5, 1.3, 3.0, 0.5, 0.2), (2000.5, 1.3, 3.0, 0.5, 40.0), (2000.5, 1.3, 300.0, 0.5, 0.0),
    # a large s (no heterogeneity in dropout): the continued fraction and the split with it
    (0.6, 1690.0, 2.5, 25000.0, 0.0), (0.6, 1690.0, 2.5, 25000.0, 100.0), (3.6, 1690.0, 2.5, 25000.0, 30.0),
    # the no-purchase integral: q = s below and at 1
    (1.8, 0.6, 30.0, 50.0, 0.0), (11.8, 0.6, 50.0, 30.0, 100.0), (1.8, 1.0, 50.0, 3.0, 0.0),
]


@pytest.mark.parametrize("p, q, A, B, y", TAIL_CASES)
def test_tail_integral_matches_quadrature(p, q, A, B, y):
    ours, _ = bf._log_tail(np.array([p]), q, A, B, y)
    assert ours[0] == pytest.approx(_tail_by_quadrature(p, q, A, B, y), abs=1e-10)


@pytest.mark.parametrize("p, q, A, B, y", TAIL_CASES)
def test_tail_integral_derivatives_match_finite_differences(p, q, A, B, y):
    """d ln F / d(p, q, A, B): exact in the series region, difference quotients of G elsewhere."""
    point = np.array([p, q, A, B])
    value, grad = bf._log_tail(np.array([p]), q, A, B, y, grad=True)
    for k in range(4):
        # ln F reaches -17000 here: a step of 1e-4 keeps its rounding (1e-16 |ln F| / h) below 1e-7
        h = 1e-4 * point[k]
        up, down = point.copy(), point.copy()
        up[k] += h
        down[k] -= h
        numeric = (bf._log_tail(up[:1], *up[1:], y)[0][0] - bf._log_tail(down[:1], *down[1:], y)[0][0]) / (2 * h)
        assert grad[k][0] == pytest.approx(numeric, rel=1e-6, abs=1e-13 * abs(value[0]) / h), k


def test_tail_integral_closed_form_when_alpha_equals_beta():
    p, q, A, y = np.array([0.5, 7.5, 1500.5]), 1.6, 4.0, np.array([0.0, 3.0, 30.0])
    ours, _ = bf._log_tail(p, q, A, A, y)
    a = p + q - 1
    assert ours == pytest.approx(-a * np.log(A + y) - np.log(a), rel=1e-14)


def test_pareto_likelihood_matches_integration_over_lambda_and_mu(cdnow_pareto):
    """exp(ln L) equals the integral of the conditional likelihood over Gamma(r, alpha) x Gamma(s, beta)."""
    p = cdnow_pareto
    rows = [(0.0, 0.0, 38.86), (2.0, 30.43, 38.86), (5.0, 10.0, 32.0)]
    for x, tx, T in rows:
        def integrand(v, u, x=x, tx=tx, T=T):  # (u, v) are the quantiles of lambda and mu
            lam, mu = gammaincinv(p.r, u) / p.alpha, gammaincinv(p.s, v) / p.beta
            total = lam + mu
            return lam**x * (np.exp(-total * T) + mu / total * (np.exp(-total * tx) - np.exp(-total * T)))

        value, _ = dblquad(integrand, 0, 1, 0, 1, epsabs=0, epsrel=1e-9)
        ours = np.exp(pareto_nbd_log_likelihood(p, [x], [tx], [T])[0])
        assert ours == pytest.approx(value, rel=1e-6), (x, tx, T)


# ---------------------------------------------------------------------------------------------
# Gradients, recovery, simulation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, log_params", [
    ("mbgnbd", np.log([0.3, 0.2, 0.8, 2.0])),
    ("pareto_nbd", np.log([0.55, 0.3, 0.6, 0.4])),
    ("pareto_nbd", np.log([0.55, 0.01, 1.0, 3.0])),  # alpha << beta: z near 1 for small t_x
    ("pareto_nbd", np.log([0.55, 5.0, 2.0, 0.02])),  # beta << alpha
])
def test_analytic_gradient_matches_finite_differences(cdnow, model, log_params):
    data, _ = btyd._compress(*cdnow)
    scale = float(np.average(data.T_row, weights=data.w))
    if model == "mbgnbd":
        fun, d = bf._mbgnbd_nll_grad, btyd._scaled(data, scale)
    else:
        fun, d = bf._pnbd_nll_grad, bf._pnbd_scaled(bf._pnbd_data(data), scale)
    _, grad = fun(log_params, d, 0.01)
    h = 1e-6
    numeric = [(fun(log_params + e, d, 0.01)[0] - fun(log_params - e, d, 0.01)[0]) / (2 * h) for e in np.eye(4) * h]
    assert grad == pytest.approx(numeric, abs=1e-8)


def _recovery(fit, loglik, params_cls, truth, x, tx, T):
    est = fit(x, tx, T)
    for name, value in truth.items():
        assert getattr(est, name) == pytest.approx(value, rel=0.25), name
    # the truth lies inside the 99.9% likelihood-ratio region of the fit, and the fit beats it
    ll_truth = loglik(params_cls(**truth), x, tx, T).sum()
    assert 0 <= est.log_likelihood - ll_truth < CHI2_4DF_999 / 2


def test_pareto_nbd_recovers_simulated_parameters():
    truth = {"r": 0.8, "alpha": 25.0, "s": 0.7, "beta": 200.0}
    rng = np.random.default_rng(101)
    n = 8000
    T = np.floor(rng.uniform(365, 1095, n))
    x, tx, _ = _simulate_pareto(rng, n, *truth.values(), T)
    _recovery(fit_pareto_nbd, pareto_nbd_log_likelihood, ParetoNbdParams, truth, x, tx, T)


def test_mbgnbd_recovers_simulated_parameters():
    truth = {"r": 0.8, "alpha": 25.0, "a": 0.9, "b": 6.0}
    rng = np.random.default_rng(102)
    n = 8000
    T = np.floor(rng.uniform(365, 1095, n))
    x, tx, _ = _simulate_mbg(rng, n, *truth.values(), T)
    _recovery(fit_mbgnbd, mbgnbd_log_likelihood, MbgNbdParams, truth, x, tx, T)


def _check_against_holdout(quiet, expected, hold, x, naive_quiet=None):
    """Predicted P(no purchase) and E[purchases] against the simulated hold-out, overall and by x."""
    observed = hold == 0
    n = observed.size
    se = np.sqrt(quiet.mean() * (1 - quiet.mean()) / n)
    assert abs(observed.mean() - quiet.mean()) < 4 * se
    assert abs(hold.mean() - expected.mean()) < 4 * hold.std() / np.sqrt(n)
    for lo, hi in ((0, 1), (1, 3), (3, 10), (10, np.inf)):
        g = (x >= lo) & (x < hi)
        q = quiet[g].mean()
        assert abs(observed[g].mean() - q) < 4 * np.sqrt(q * (1 - q) / g.sum()), (lo, hi)
        assert abs(hold[g].mean() - expected[g].mean()) < 4 * hold[g].std() / np.sqrt(g.sum()), (lo, hi)
    if naive_quiet is not None:  # the test can tell a wrong formula apart
        assert abs(observed.mean() - naive_quiet.mean()) > 8 * se


def test_pareto_nbd_prob_no_purchase_and_expectation_match_simulation():
    params = ParetoNbdParams(r=0.8, alpha=25.0, s=0.7, beta=200.0)
    rng = np.random.default_rng(5)
    n, t = 150_000, 180.0
    T = rng.uniform(200, 700, n)
    x, tx, hold = _simulate_pareto(rng, n, params.r, params.alpha, params.s, params.beta, T, t)
    quiet = pareto_nbd_prob_no_purchase(params, t, x, tx, T)
    expected = pareto_nbd_expected_purchases(params, t, x, tx, T)
    alive = pareto_nbd_p_alive(params, x, tx, T)
    # the BG/NBD-style formula that forgets dying inside the window
    naive = 1 - alive + alive * ((params.alpha + T) / (params.alpha + T + t)) ** (params.r + x)
    _check_against_holdout(quiet, expected, hold, x, naive)


def test_mbgnbd_prob_no_purchase_and_expectation_match_simulation():
    params = MbgNbdParams(r=0.8, alpha=25.0, a=0.9, b=6.0)
    rng = np.random.default_rng(6)
    n, t = 150_000, 180.0
    T = rng.uniform(200, 700, n)
    x, tx, hold = _simulate_mbg(rng, n, params.r, params.alpha, params.a, params.b, T, t)
    quiet = mbgnbd_prob_no_purchase(params, t, x, tx, T)
    expected = mbgnbd_expected_purchases(params, t, x, tx, T)
    # BG/NBD's P(alive) = 1 at x = 0 would be wrong here
    bg_alive = btyd.p_alive(btyd.BgNbdParams(params.r, params.alpha, params.a, params.b), x, tx, T)
    naive = 1 - bg_alive + bg_alive * ((params.alpha + T) / (params.alpha + T + t)) ** (params.r + x)
    _check_against_holdout(quiet, expected, hold, x, naive)


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_mbgnbd_expectation_by_quadrature_where_hyp2f1_fails():
    """Beyond z = 0.99 (scipy's hyp2f1 returns nan there for integer x + r - a + 1) the expectation is
    integrated over p; the two agree where both work, and the switch is seamless."""
    for r, a, b, x, T, alpha, t in [(0.9, 1.5, 2.4, 2.0, 10.0, 5.0, 30.0), (0.25, 0.9, 10.0, 0.0, 0.0, 20.0, 100.0),
                                    (2.0, 3.0, 0.5, 50.0, 3.0, 1.0, 40.0)]:
        via_hyp2f1 = bf._mbg_future(r, alpha, a, b, np.array([x]), np.array([T]), t)[0]
        assert via_hyp2f1 == pytest.approx(bf._future_by_quadrature(r + x, t / (alpha + T), a, b + x + 1), rel=1e-9)
    # r=0.5, a=1.5, x=1 makes scipy's hyp2f1 nan at z = 0.999; a = 1 exactly is 0/0 in the closed form
    for r, a in [(0.5, 1.5), (0.9, 1.0), (0.9, 1.9)]:
        x, T = np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.0, 0.0])
        alpha = 1.0
        t_switch = bf._Z_HYP2F1 / (1 - bf._Z_HYP2F1) * alpha  # z = 0.99 at T = 0
        below = bf._mbg_future(r, alpha, a, 2.4, x, T, t_switch * (1 - 1e-9))
        above = bf._mbg_future(r, alpha, a, 2.4, x, T, t_switch * (1 + 1e-9))
        assert below == pytest.approx(above, rel=1e-7)
        far = bf._mbg_future(r, alpha, a, 2.4, x, T, 1000.0)
        assert np.all(np.isfinite(far)) and np.all(far > below)


def test_limits_are_continuous():
    x, tx, T = np.array([0.0, 3.0, 40.0]), np.array([0.0, 100.0, 300.0]), np.array([200.0, 300.0, 310.0])
    at_one = pareto_nbd_expected_purchases(ParetoNbdParams(0.8, 25.0, 1.0, 200.0), 180.0, x, tx, T)
    near = pareto_nbd_expected_purchases(ParetoNbdParams(0.8, 25.0, 1.0 + 1e-7, 200.0), 180.0, x, tx, T)
    assert at_one == pytest.approx(near, rel=1e-6)
    at_one = mbgnbd_expected_purchases(MbgNbdParams(0.8, 25.0, 1.0, 6.0), 180.0, x, tx, T)
    near = mbgnbd_expected_purchases(MbgNbdParams(0.8, 25.0, 1.0 + 3e-5, 6.0), 180.0, x, tx, T)
    assert at_one == pytest.approx(near, rel=1e-4) and np.all(at_one > 0)
    equal = ParetoNbdParams(0.8, 25.0, 0.7, 25.0)  # alpha == beta: z = 0
    near = ParetoNbdParams(0.8, 25.0, 0.7, 25.0 * (1 + 1e-9))
    assert pareto_nbd_log_likelihood(equal, x, tx, T) == pytest.approx(pareto_nbd_log_likelihood(near, x, tx, T))


def test_large_frequencies_stay_finite():
    x = np.array([0.0, 50.0, 400.0, 2000.0])
    T = np.array([10.0, 700.0, 1000.0, 1095.0])
    tx = np.array([0.0, 690.0, 999.0, 1090.0])
    for params in (ParetoNbdParams(0.9, 30.0, 0.8, 300.0), ParetoNbdParams(0.9, 300.0, 0.8, 3.0)):
        ll = pareto_nbd_log_likelihood(params, x, tx, T)
        e = pareto_nbd_expected_purchases(params, 365, x, tx, T)
        q = pareto_nbd_prob_no_purchase(params, 365, x, tx, T)
        assert np.all(np.isfinite(ll)) and np.all(np.isfinite(e)) and np.all((q >= 0) & (q <= 1))
        assert e[3] > e[2] > e[1] > e[0] > 0
    e = mbgnbd_expected_purchases(MbgNbdParams(0.9, 30.0, 0.9, 10.0), 365, x, tx, T)
    assert np.all(np.isfinite(e)) and e[3] > e[2] > e[1] > e[0] > 0


# ---------------------------------------------------------------------------------------------
# One interface
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(7)
    n = 3000
    lam = rng.gamma(0.9, 1 / 30, n)
    p = rng.beta(0.9, 10, n)
    T = np.floor(rng.uniform(30, 730, n))
    sim = simulate_btyd(rng, lam, p, T)
    tx = np.zeros(n)
    np.maximum.at(tx, sim.customer_index, np.floor(sim.purchase_day))  # integer days, as the pipeline
    return sim.n_repeat.astype(float), tx, T


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_fits_through_the_common_interface(name, small_data):
    model = MODELS[name]
    assert isinstance(model, BtydModel) and model.name == name and model.label
    x, tx, T = small_data
    params = model.fit(x, tx, T, weights=None, time_unit="days", penalizer=0.0)
    assert all(getattr(params, k) > 0 for k in model.param_names)
    assert params.as_dict()["time_unit"] == "days" and params.n_customers == len(x)
    assert model.log_likelihood(params, x, tx, T).sum() == pytest.approx(params.log_likelihood, abs=1e-6)
    alive = model.p_alive(params, x, tx, T)
    assert np.all((alive > 0) & (alive <= 1))
    e90, e365 = model.expected_purchases(params, 90, x, tx, T), model.expected_purchases(params, 365, x, tx, T)
    assert np.all(e365 >= e90) and np.all(e90 >= 0) and np.all(np.isfinite(e365))
    quiet = model.prob_no_purchase(params, 90, x, tx, T)
    assert np.all((quiet >= 0) & (quiet <= 1))
    assert np.all(quiet >= model.prob_no_purchase(params, 365, x, tx, T) - 1e-12)
    # weights are repeated rows
    half = slice(0, len(x) // 2)
    doubled = model.fit(x[half], tx[half], T[half], weights=np.full(len(x) // 2, 2.0))
    tiled = model.fit(np.tile(x[half], 2), np.tile(tx[half], 2), np.tile(T[half], 2))
    for k in model.param_names:
        assert getattr(doubled, k) == pytest.approx(getattr(tiled, k), rel=1e-6), k


@pytest.mark.parametrize("name", sorted(MODELS))
def test_too_few_repeat_buyers_raise_with_data_facts(name):
    model = MODELS[name]
    x, tx, T = np.r_[np.zeros(47), np.ones(3)], np.r_[np.zeros(47), np.full(3, 5.0)], np.full(50, 20.0)
    with pytest.raises(btyd.BtydFitError, match=rf"{model.label}.*too few repeat buyers \(50 customers, 3 with"):
        model.fit(x, tx, T)
    with pytest.raises(ValueError, match="recency <= T"):
        model.fit([1.0], [30.0], [20.0])
