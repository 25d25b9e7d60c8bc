"""BG/NBD and Gamma-Gamma ("buy till you die") fitted exactly by maximum likelihood with scipy only.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while active a customer buys
at Poisson rate ``lambda ~ Gamma(r, alpha)``; after each repeat purchase they drop out with probability
``p ~ Beta(a, b)``. Per customer the data are ``x`` (repeat purchases), ``t_x`` (time of the last
purchase) and ``T`` (time observed), all measured from the first purchase. The log-likelihood is

    ln L = lnG(r+x) - lnG(r) + r ln(alpha) - lnB(a, b)
           + ln[ exp(lnB(a, b+x) - (r+x) ln(alpha+T))
                 + [x > 0] exp(lnB(a+1, b+x-1) - (r+x) ln(alpha+t_x)) ]

evaluated with ``gammaln``/``betaln`` and ``logaddexp`` (never a ratio of huge numbers), with its analytic
gradient (digamma terms), optimised by L-BFGS-B over the logarithms of the parameters.

Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"): a customer's spend per transaction is
``Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)``; for ``x`` repeat transactions with mean value ``m``

    ln L = lnG(px+q) - lnG(px) - lnG(q) + q ln(gamma) + (px-1) ln(m) + px ln(x) - (px+q) ln(gamma + m x).

Speed: both models are fitted on the unique data rows with their counts as weights, and the special
functions are evaluated once per unique ``x``, ``t_x`` and ``T`` value and gathered, so a million
customers cost about what a few thousand distinct rows cost. Time is whatever unit the inputs use
(the pipeline uses days; the CDNOW reference values are in weeks); ``time_unit`` records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1

MIN_REPEAT_BUYERS = 10


class BtydFitError(RuntimeError):
    """A BTYD model could not be fitted; the message carries the data facts that explain why."""


# ---------------------------------------------------------------------------------------------
# BG/NBD
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FitFacts:
    """What every fit of a BTYD purchase model records besides its parameters (keyword-only, so each model's
    parameters stay first and positional)."""

    time_unit: str = "days"
    log_likelihood: float = float("nan")
    n_customers: int = 0
    n_unique_rows: int = 0
    iterations: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BgNbdParams(FitFacts):
    r: float
    alpha: float
    a: float
    b: float


@dataclass
class _BgData:
    """Unique (x, t_x, T) rows with weights, indexed into the unique values of each column."""

    w: np.ndarray
    x: np.ndarray
    ux: np.ndarray
    ix: np.ndarray
    uT: np.ndarray
    iT: np.ndarray
    utx: np.ndarray
    itx: np.ndarray
    w_by_x: np.ndarray  # total weight per unique x
    T_row: np.ndarray  # T per row (scaled at fit time)
    tx_row: np.ndarray  # t_x per row (scaled at fit time)


def _validate_summary(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    if not (x.shape == t_x.shape == T.shape):
        raise ValueError("frequency, recency and T must have the same length")
    bad = ~np.isfinite(x) | ~np.isfinite(t_x) | ~np.isfinite(T) | (x < 0) | (t_x < 0) | (t_x > T + 1e-9)
    bad |= (x == 0) & (t_x != 0)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} customer summary row(s) are invalid: need frequency >= 0, 0 <= recency <= T, "
            "and recency = 0 when frequency = 0 (first row index "
            f"{int(np.flatnonzero(bad)[0])})"
        )
    return x, t_x, T


def _unique_rows(x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    """Unique (x, t_x, T) rows, inverse and counts. Integer data (days) take a fast 1-D key."""
    if all(np.all(v == np.round(v)) for v in (x, t_x, T)) and max(x.max(), T.max()) < 2**20:
        key = (x.astype(np.int64) << 42) | (t_x.astype(np.int64) << 21) | T.astype(np.int64)
        ukey, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        uniq = np.column_stack([ukey >> 42, (ukey >> 21) & (2**21 - 1), ukey & (2**21 - 1)]).astype(float)
        return uniq, inverse.ravel(), counts
    uniq, inverse, counts = np.unique(np.column_stack([x, t_x, T]), axis=0, return_inverse=True, return_counts=True)
    return uniq, inverse.ravel(), counts


def _compress(x, t_x, T, weights=None) -> tuple[_BgData, np.ndarray]:
    uniq, inverse, counts = _unique_rows(x, t_x, T)
    if weights is not None:
        counts = np.bincount(inverse, weights=np.asarray(weights, float), minlength=len(uniq))
    w = counts.astype(float)
    ux, ix = np.unique(uniq[:, 0], return_inverse=True)
    utx, itx = np.unique(uniq[:, 1], return_inverse=True)
    uT, iT = np.unique(uniq[:, 2], return_inverse=True)
    w_by_x = np.bincount(ix, weights=w, minlength=len(ux))
    data = _BgData(w, uniq[:, 0], ux, ix, uT, iT, utx, itx, w_by_x, uniq[:, 2], uniq[:, 1])
    return data, inverse


def _scaled(d: _BgData, scale: float) -> _BgData:
    """The same rows with time divided by ``scale`` (for conditioning)."""
    return _BgData(d.w, d.x, d.ux, d.ix, d.uT / scale, d.iT, d.utx / scale, d.itx, d.w_by_x,
                   d.T_row / scale, d.tx_row / scale)


def _bgnbd_nll_grad(log_params: np.ndarray, d: _BgData, penalizer: float):
    """Mean negative log-likelihood and its gradient in log-parameters.

    Terms that depend on x alone are computed per unique x and summed with per-x weights
    (``np.bincount``); only the terms that mix x with T or t_x are evaluated per row.
    """
    r, alpha, a, b = np.exp(log_params)
    ux = d.ux
    pos = ux > 0
    bx1 = np.where(pos, b + ux - 1, 1.0)
    lb_a_bx = betaln(a, b + ux)
    lb_a1_bx1 = np.where(pos, betaln(a + 1, bx1), -np.inf)
    ln_aT = np.log(alpha + d.uT)
    ln_atx = np.log(alpha + d.utx)

    rx = r + d.x
    g_aT, g_atx = ln_aT[d.iT], ln_atx[d.itx]
    A = lb_a_bx[d.ix] - rx * g_aT
    e = np.exp(lb_a1_bx1[d.ix] - rx * g_atx - A)  # exp(B - A); 0 for x = 0
    lse = A + np.log1p(e)
    wA = 1.0 / (1.0 + e)  # posterior weight of "still active"
    w = d.w
    total = w.sum()
    wwA = w * wA
    wA_by_x = np.bincount(d.ix, weights=wwA, minlength=len(ux))
    wB_by_x = d.w_by_x - wA_by_x

    ll = (d.w_by_x @ gammaln(r + ux)) + total * (-gammaln(r) + r * np.log(alpha) - betaln(a, b)) + (w @ lse)
    # d/dr and d/dalpha need the row-level mix of T and t_x
    ln_mix = g_atx + wA * (g_aT - g_atx)  # wA ln(alpha+T) + wB ln(alpha+t_x)
    inv_mix = wA / (alpha + d.T_row) + (1 - wA) / (alpha + d.tx_row)
    d_r = d.w_by_x @ digamma(r + ux) + total * (np.log(alpha) - digamma(r)) - w @ ln_mix
    d_alpha = total * r / alpha - (w * rx) @ inv_mix
    dg_abx = digamma(a + b + ux)
    dg_a, dg_ab = digamma(a), digamma(a + b)
    d_a = total * (dg_ab - dg_a) + wA_by_x @ (dg_a - dg_abx) + wB_by_x @ (digamma(a + 1) - dg_abx)
    d_b = (
        total * (dg_ab - digamma(b))
        + wA_by_x @ (digamma(b + ux) - dg_abx)
        + wB_by_x @ np.where(pos, digamma(bx1) - dg_abx, 0.0)
    )
    theta = np.exp(log_params)
    nll = -ll / total + penalizer * np.sum(theta**2)
    grad = -np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b]) / total + penalizer * 2 * theta**2
    return nll, grad


def _minimize(fun, *args, n_params: int, starts):
    """L-BFGS-B in log-parameter space; a second start only when the first does not converge."""
    best = None
    for start in starts:
        res = minimize(
            fun, start, args=args, jac=True, method="L-BFGS-B",
            bounds=[(-15, 15)] * n_params, options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-14},
        )
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
        if best is not None and best.success:
            break
    return best


def _fit_facts(x: np.ndarray, weights: np.ndarray | None = None) -> str:
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    n = w.sum()
    repeat = w[x > 0].sum()
    return (
        f"{n:,.0f} customers, {repeat:,.0f} with a repeat purchase ({100 * repeat / max(n, 1):.1f}%), "
        f"max frequency {x.max() if x.size else 0:.0f}"
    )


def _prepare(label: str, frequency, recency, T, weights):
    """Validated, compressed data and the time scale (mean T) for any BTYD purchase model's fit, or
    ``BtydFitError`` with the data facts (zero-weight rows, as bootstrap weights make, are dropped)."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    if x.size == 0:
        raise BtydFitError(f"{label}: no customers with a purchase to fit on")
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.shape != x.shape or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite, non-negative and one per customer")
    n_repeat = float((x > 0).sum()) if weights is None else float(weights[x > 0].sum())
    if n_repeat < MIN_REPEAT_BUYERS:
        raise BtydFitError(
            f"{label} cannot be fitted: too few repeat buyers ({_fit_facts(x, weights)}); need at least "
            f"{MIN_REPEAT_BUYERS} customers with a repeat purchase. Use a longer history (earlier data) "
            "or an interim score."
        )
    data, _ = _compress(x, t_x, T, weights)
    keep = data.w > 0
    if not keep.all():  # zero-weight rows carry no information (bootstrap weights)
        data, _ = _compress(data.x[keep], data.tx_row[keep], data.T_row[keep], data.w[keep])
    scale = float(np.average(data.T_row, weights=data.w)) or 1.0  # work in units of the mean T
    return x, weights, data, scale


def fit_bgnbd(
    frequency, recency, T, *, weights=None, time_unit: str = "days", penalizer: float = 0.0
) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters from per-customer (x, t_x, T)."""
    x, weights, data, scale = _prepare("BG/NBD", frequency, recency, T, weights)
    best = _minimize(
        _bgnbd_nll_grad, _scaled(data, scale), penalizer, n_params=4, starts=(np.zeros(4), np.log([0.5, 1.0, 1.0, 5.0]))
    )
    if best is None or not best.success and np.max(np.abs(best.jac)) > 1e-4:
        msg = best.message if best is not None else "non-finite likelihood"
        raise BtydFitError(f"BG/NBD fit did not converge ({msg}); data: {_fit_facts(x, weights)}")
    r, alpha_scaled, a, b = np.exp(best.x)
    if np.any(np.abs(best.x) >= 14.9):
        raise BtydFitError(
            f"BG/NBD parameters ran to the bounds (r={r:.3g}, alpha={alpha_scaled * scale:.3g}, a={a:.3g}, "
            f"b={b:.3g}); the data carry no information about heterogeneity or dropout: {_fit_facts(x, weights)}"
        )
    n = float(data.w.sum())
    # log-likelihood on the original time scale: scaling time by s shifts each customer's ll by -x ln s
    ll = -best.fun * n - float(data.w @ data.x) * np.log(scale)
    return BgNbdParams(
        r=float(r), alpha=float(alpha_scaled * scale), a=float(a), b=float(b), time_unit=time_unit,
        log_likelihood=float(ll), n_customers=int(round(n)), n_unique_rows=len(data.w), iterations=int(best.nit),
    )


def bgnbd_log_likelihood(params: BgNbdParams, frequency, recency, T) -> np.ndarray:
    """Per-customer log-likelihood (for tests and diagnostics)."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    A = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    B = np.where(x > 0, betaln(a + 1, np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b) + np.logaddexp(A, B)


def p_alive(params: BgNbdParams, frequency, recency, T) -> np.ndarray:
    """P(still active | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_odds = np.where(
        x > 0,
        np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)),
        -np.inf,
    )
    return 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700)))


def _survival_term(params: BgNbdParams, x: np.ndarray, T: np.ndarray, t: float) -> np.ndarray:
    """((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z), z = t/(alpha+T+t), computed stably.

    By Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z), and (1-z) is the
    ratio above, so the term equals (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): small first parameters
    whatever x is, so no overflow and a fast-converging series for large x.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)
    return (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)


def expected_purchases(params: BgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (conditional expectation, FHL 2005 eq. 10)."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if t <= 0:
        return np.zeros_like(x)
    key = np.column_stack([x, T])
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    if abs(a - 1) < 1e-9:
        raise BtydFitError("BG/NBD with a == 1 has no closed-form conditional expectation; refit with a penalizer")
    ux, uT = uniq[:, 0], uniq[:, 1]
    active = (a + b + ux - 1) / (a - 1) * (1 - _survival_term(params, ux, uT, t))
    # scipy's hyp2f1 loses its digits (or returns nan) for z = t/(alpha+T+t) > 0.99: integrate there instead
    far = t / (alpha + uT + t) > 0.99
    if far.any():
        from ml.btyd_family import _future_by_quadrature  # the family module imports this one

        active[far] = [_future_by_quadrature(r + xi, t / (alpha + Ti), a, b + xi) for xi, Ti in zip(ux[far], uT[far])]
    result = active[inverse.ravel()] * p_alive(params, x, t_x, T)
    return np.maximum(np.nan_to_num(result, nan=0.0, posinf=0.0), 0.0)


def prob_no_purchase(params: BgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """P(no purchase in (T, T+t]) = P(inactive) + P(active) ((alpha+T)/(alpha+T+t))^(r+x)."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    alive = p_alive(params, x, t_x, T)
    quiet_if_alive = np.exp((params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + T + t)))
    return np.clip(1 - alive + alive * quiet_if_alive, 0.0, 1.0)


def expected_purchases_unconditional(params: BgNbdParams, t) -> np.ndarray:
    """E[X(t)] for a new customer (FHL 2005 eq. 7); used for plots and sanity checks."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    t = np.asarray(t, float)
    z = t / (alpha + t)
    return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, z))


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    n_customers: int = 0
    n_excluded_nonpositive: int = 0
    iterations: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def population_mean_spend(self) -> float:
        return self.p * self.gamma / (self.q - 1)


@dataclass
class _GgData:
    x: np.ndarray  # per row (repeat buyers with positive spend)
    mx: np.ndarray  # m * x / scale per row
    w: np.ndarray
    ux: np.ndarray
    ix: np.ndarray
    w_by_x: np.ndarray
    const_wxlnm: float  # sum w x ln(m/scale)
    const_wlnm: float  # sum w ln(m/scale)
    wx_by_x: np.ndarray


def _gg_nll_grad(log_params, d: _GgData):
    p, q, g = np.exp(log_params)
    ux = d.ux
    pux = p * ux
    ln_gmx = np.log(g + d.mx)
    total = d.w.sum()
    w_ln = d.w @ ln_gmx
    wx_ln = (d.w * d.x) @ ln_gmx
    ll = (
        d.w_by_x @ (gammaln(pux + q) - gammaln(pux) + pux * np.log(ux))
        + total * (-gammaln(q) + q * np.log(g))
        + p * d.const_wxlnm - d.const_wlnm
        - p * wx_ln - q * w_ln
    )
    dg_pxq = digamma(pux + q)
    d_p = d.wx_by_x @ (dg_pxq - digamma(pux) + np.log(ux)) + d.const_wxlnm - wx_ln
    d_q = d.w_by_x @ dg_pxq + total * (np.log(g) - digamma(q)) - w_ln
    d_g = total * q / g - (d.w * (p * d.x + q)) @ (1.0 / (g + d.mx))
    return -ll / total, -np.array([d_p * p, d_q * q, d_g * g]) / total


def fit_gamma_gamma(frequency, monetary_value, *, weights=None) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from repeat buyers' (x, mean spend)."""
    x = np.asarray(frequency, float)
    m = np.asarray(monetary_value, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    repeat = (x > 0) & np.isfinite(m)
    nonpositive = int((repeat & (m <= 0)).sum())
    use = repeat & (m > 0)
    if use.sum() < MIN_REPEAT_BUYERS:
        raise BtydFitError(
            f"Gamma-Gamma cannot be fitted: {int(use.sum())} repeat buyer(s) with positive mean spend "
            f"({int(repeat.sum())} repeat buyers, {nonpositive} with zero or negative spend); need at least "
            f"{MIN_REPEAT_BUYERS}."
        )
    xu, mu, wu = x[use], m[use], w[use]
    scale = float(np.average(mu, weights=wu))  # spend in units of its mean, for conditioning
    ux, ix = np.unique(xu, return_inverse=True)
    ln_m = np.log(mu / scale)
    data = _GgData(
        x=xu, mx=mu / scale * xu, w=wu, ux=ux, ix=ix,
        w_by_x=np.bincount(ix, weights=wu, minlength=len(ux)),
        const_wxlnm=float((wu * xu) @ ln_m), const_wlnm=float(wu @ ln_m),
        wx_by_x=np.bincount(ix, weights=wu * xu, minlength=len(ux)),
    )
    best = _minimize(_gg_nll_grad, data, n_params=3, starts=(np.zeros(3), np.log([2.0, 2.0, 1.0])))
    if best is None or (not best.success and np.max(np.abs(best.jac)) > 1e-4):
        raise BtydFitError(f"Gamma-Gamma fit did not converge ({getattr(best, 'message', 'non-finite')})")
    p, q, g_scaled = np.exp(best.x)
    if q <= 1:
        raise BtydFitError(
            f"Gamma-Gamma fit gives q={q:.3f} <= 1: spend per customer is so heavy-tailed that its mean is "
            f"infinite ({int(use.sum())} repeat buyers, mean spend {scale:.2f}); check for outlier amounts"
        )
    n = float(wu.sum())
    # ll on the original money scale: each customer's ll shifts by -ln(scale)
    ll = -best.fun * n - n * np.log(scale)
    return GammaGammaParams(
        p=float(p), q=float(q), gamma=float(g_scaled * scale), log_likelihood=float(ll),
        n_customers=int(round(n)), n_excluded_nonpositive=nonpositive, iterations=int(best.nit),
    )


def expected_average_spend(params: GammaGammaParams, frequency, monetary_value) -> np.ndarray:
    """E[spend per transaction | x, m] = p (gamma + m x) / (p x + q - 1); the population mean for x = 0."""
    x = np.asarray(frequency, float)
    m = np.nan_to_num(np.asarray(monetary_value, float), nan=0.0)
    has = (x > 0) & (m > 0)
    xm = np.where(has, x * m, 0.0)
    xx = np.where(has, x, 0.0)
    return params.p * (params.gamma + xm) / (params.p * xx + params.q - 1)


# ---------------------------------------------------------------------------------------------
# CLV
# ---------------------------------------------------------------------------------------------


def customer_lifetime_value(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    frequency,
    recency,
    T,
    monetary_value,
    *,
    horizon: float,
    annual_discount_rate: float,
    unit_days: float = 1.0,
    steps: int = 12,
) -> np.ndarray:
    """Discounted expected spend over ``horizon`` (in the model's time unit).

    The horizon is cut into ``steps`` equal parts; the expected purchases in each part are valued at
    the expected spend per purchase and discounted to the middle of the part at the annual rate
    (time converted with ``unit_days`` days per unit and 365.25 days a year).
    """
    spend = expected_average_spend(gg, frequency, monetary_value)
    edges = np.linspace(0.0, horizon, steps + 1)
    cumulative = [np.zeros(np.shape(frequency))] + [
        expected_purchases(bg, t, frequency, recency, T) for t in edges[1:]
    ]
    value = np.zeros(np.shape(frequency))
    for k in range(steps):
        mid_years = (edges[k] + edges[k + 1]) / 2 * unit_days / 365.25
        value += (cumulative[k + 1] - cumulative[k]) / (1 + annual_discount_rate) ** mid_years
    return np.maximum(value * spend, 0.0)
