"""MBG/NBD and Pareto/NBD beside BG/NBD, fitted exactly by maximum likelihood, behind one interface.

All three "buy till you die" models share the data of ``ml/btyd.py``: per customer ``x`` repeat purchases,
``t_x`` the time of the last one and ``T`` the time observed, all from the first purchase. While active a
customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``; they differ in how customers drop out.

MBG/NBD (Batislam, Denizel & Filiztekin 2007, with Wagner & Hoppe's 2008 erratum; lifetimes'
``ModifiedBetaGeoFitter``): as BG/NBD, but the chance ``p ~ Beta(a, b)`` of dropping out also applies right
after the first purchase, so a customer without a repeat purchase may be gone too. Integrating
``(1-p)^(x+1) lambda^x e^(-lambda T) + p (1-p)^x lambda^x e^(-lambda t_x)`` over the two mixing laws gives

    ln L = lnG(r+x) - lnG(r) + r ln(alpha) - lnB(a, b)
           + ln[ exp(lnB(a, b+x+1) - (r+x) ln(alpha+T)) + exp(lnB(a+1, b+x) - (r+x) ln(alpha+t_x)) ],

evaluated with ``gammaln``/``betaln``/``logaddexp`` and fitted with its analytic gradient, exactly as
``ml.btyd`` fits BG/NBD. A customer alive at ``T`` continues as a BG/NBD customer with
``lambda ~ Gamma(r+x, alpha+T)`` and ``p ~ Beta(a, b+x+1)``, which gives the conditional expectation.

Pareto/NBD (Schmittlein, Morrison & Colombo 1987; Fader & Hardie's 2005 note "A Note on Deriving the
Pareto/NBD Model and Related Expressions"): the lifetime is ``Exp(mu)`` with ``mu ~ Gamma(s, beta)``.
Writing the likelihood over the time of death ``tau``,

    L = Gamma(r+x)/Gamma(r) alpha^r beta^s [ (alpha+T)^-(r+x) (beta+T)^-s + s (F(t_x) - F(T)) ],
    F(y) = integral_y^inf (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau,

and ``s F`` is the note's ``s/(r+s+x) A0``. The tail integral ``F`` is a Gaussian hypergeometric function;
with ``M``/``m`` the larger/smaller of ``alpha``/``beta``, ``P``/``Q`` their exponents,
``z = |alpha-beta|/(M+y)`` and ``eps = (m+y)/(M+y) = 1 - z``,

    F(y) = (M+y)^-P (m+y)^(1-Q) / (P+Q-1) * G,   G = 2F1(1, P; P+Q; z)     (Euler's transformation)

where ``1 <= G <= 1/eps`` whatever ``x`` is, so nothing overflows and ``alpha == beta`` is just ``z = 0``.
scipy's ``hyp2f1`` is not used for ``G``: near ``z = 1`` it returns ``inf`` or loses 6 digits when
``Q - 1`` is close to an integer (measured against quadrature). With ``a = P+Q-1``, ``G`` is computed by

* its power series (positive terms, ratio below ``z``) where ``eps >= 0.1``, with the derivatives in
  ``P``, ``P+Q`` and ``z`` accumulated in the same pass (at most about 370 terms);
* Gauss's continued fraction where ``3/a <= eps < 0.1`` (about ``10/sqrt(eps)`` steps where the series
  would need ``37/eps``; large ``a``, e.g. many purchases or a large ``s``, made the series crawl);
* below that, by cutting the integral at ``w1 = min(0.1, 3/a)`` in ``w = (m+tau)/(M+tau)``: the part
  beyond is ``G`` at ``eps = w1`` (previous item), the part before an alternating binomial series whose
  terms stay below ``e^3`` times the result, and whose pieces ``(w1^k - eps^k)/k`` have no poles at
  integer exponents (where the textbook ``1 - z`` connection formula divides by zero).

In the last two regions the derivatives in ``P`` and ``P+Q`` are central differences of this smooth
function (relative step 1e-5, error about 1e-9) and the one in ``z`` is exact. All three were checked
against adaptive quadrature to 3e-12 over ``x`` up to 2000, ``eps`` down to 1e-12 and integer exponents
(tests/test_btyd_family.py repeats a subset). The optimiser is the same L-BFGS-B over log-parameters.

Predictions per customer: ``P(alive)``, the expected number of purchases in ``(T, T+t]`` and the
probability of no purchase there. For Pareto/NBD an active customer still buys in the window only if a
purchase comes before both the window's end and death:

    P(no purchase | alive) = 1 - r' alpha'^r' beta'^s integral_0^t (alpha'+v)^-(r'+1) (beta'+v)^-s dv,

with ``r' = r+x``, ``alpha' = alpha+T``, ``beta' = beta+T`` (the posterior of ``lambda`` and ``mu`` given
alive), another tail integral of the same kind.

Speed: rows are compressed to unique ``(x, t_x, T)`` with weights (``btyd._compress``); gamma functions are
evaluated per unique ``x`` and the hypergeometric terms per unique ``(x, t_x)`` and ``(x, T)`` pair, then
gathered. ``MODELS`` maps ``"bgnbd"``, ``"mbgnbd"`` and ``"pareto_nbd"`` to a ``BtydModel`` with the same
six functions each, so callers can switch model by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import quad
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from ml import btyd
from ml.btyd import (
    BtydFitError,
    FitFacts,
    _BgData,
    _compress,
    _fit_facts,
    _minimize,
    _prepare,
    _scaled,
    _validate_summary,
)

# ---------------------------------------------------------------------------------------------
# Shared fitting scaffold
# ---------------------------------------------------------------------------------------------


def _run_fit(label, names, nll_grad, scaled_data, penalizer, starts, x, weights):
    """L-BFGS-B over log-parameters with the same convergence and bounds checks as ``fit_bgnbd``."""
    best = _minimize(nll_grad, scaled_data, penalizer, n_params=len(names), starts=starts)
    if best is None or (not best.success and np.max(np.abs(best.jac)) > 1e-4):
        msg = best.message if best is not None else "non-finite likelihood"
        raise BtydFitError(f"{label} fit did not converge ({msg}); data: {_fit_facts(x, weights)}")
    if np.any(np.abs(best.x) >= 14.9):
        shown = ", ".join(f"{n}={v:.3g}" for n, v in zip(names, np.exp(best.x)))
        raise BtydFitError(
            f"{label} parameters ran to the bounds ({shown}, time in units of the mean T); the data carry no "
            f"information about heterogeneity or dropout: {_fit_facts(x, weights)}"
        )
    return best


def _original_scale_ll(best, data: _BgData, scale: float) -> float:
    """Log-likelihood on the original time scale: scaling time by s shifts each customer's ll by -x ln s."""
    n = float(data.w.sum())
    return float(-best.fun * n - float(data.w @ data.x) * np.log(scale))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Vector dot product without BLAS: OpenBLAS's threaded ddot is 3-100x slower on a busy machine."""
    return float(np.einsum("i,i->", a, b))


# ---------------------------------------------------------------------------------------------
# MBG/NBD
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MbgNbdParams(FitFacts):
    r: float
    alpha: float
    a: float
    b: float


def _mbgnbd_nll_grad(log_params: np.ndarray, d: _BgData, penalizer: float):
    """Mean negative MBG/NBD log-likelihood and its gradient in log-parameters.

    Same layout as ``btyd._bgnbd_nll_grad``: x-only terms per unique x, the mixed terms per row. ``A`` is
    "alive at T" (``lnB(a, b+x+1)``), ``B`` "dropped out right after the last purchase" (``lnB(a+1, b+x)``,
    present for x = 0 too).
    """
    r, alpha, a, b = np.exp(log_params)
    ux = d.ux
    lb_A = betaln(a, b + ux + 1)
    lb_B = betaln(a + 1, b + ux)
    ln_aT = np.log(alpha + d.uT)
    ln_atx = np.log(alpha + d.utx)

    rx = r + d.x
    g_aT, g_atx = ln_aT[d.iT], ln_atx[d.itx]
    A = lb_A[d.ix] - rx * g_aT
    B = lb_B[d.ix] - rx * g_atx
    lse = np.logaddexp(A, B)
    wA = np.exp(A - lse)  # posterior probability of "still active"
    w = d.w
    total = w.sum()
    wwA = w * wA
    wA_by_x = np.bincount(d.ix, weights=wwA, minlength=len(ux))
    wB_by_x = d.w_by_x - wA_by_x

    ll = _dot(d.w_by_x, gammaln(r + ux)) + total * (-gammaln(r) + r * np.log(alpha) - betaln(a, b)) + _dot(w, lse)
    ln_mix = g_atx + wA * (g_aT - g_atx)
    inv_mix = wA / (alpha + d.T_row) + (1 - wA) / (alpha + d.tx_row)
    d_r = _dot(d.w_by_x, digamma(r + ux)) + total * (np.log(alpha) - digamma(r)) - _dot(w, ln_mix)
    d_alpha = total * r / alpha - _dot(w * rx, inv_mix)
    dg_abx1 = digamma(a + b + ux + 1)
    dg_a, dg_ab = digamma(a), digamma(a + b)
    d_a = total * (dg_ab - dg_a) + _dot(wA_by_x, dg_a - dg_abx1) + _dot(wB_by_x, digamma(a + 1) - dg_abx1)
    d_b = (
        total * (dg_ab - digamma(b))
        + _dot(wA_by_x, digamma(b + ux + 1) - dg_abx1)
        + _dot(wB_by_x, digamma(b + ux) - dg_abx1)
    )
    theta = np.exp(log_params)
    nll = -ll / total + penalizer * np.sum(theta**2)
    grad = -np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b]) / total + penalizer * 2 * theta**2
    return nll, grad


def fit_mbgnbd(
    frequency, recency, T, *, weights=None, time_unit: str = "days", penalizer: float = 0.0
) -> MbgNbdParams:
    """Maximum-likelihood MBG/NBD parameters from per-customer (x, t_x, T)."""
    x, weights, data, scale = _prepare("MBG/NBD", frequency, recency, T, weights)
    best = _run_fit(
        "MBG/NBD", ("r", "alpha", "a", "b"), _mbgnbd_nll_grad, _scaled(data, scale), penalizer,
        (np.zeros(4), np.log([0.5, 1.0, 1.0, 5.0])), x, weights,
    )
    r, alpha_scaled, a, b = np.exp(best.x)
    return MbgNbdParams(
        r=float(r), alpha=float(alpha_scaled * scale), a=float(a), b=float(b), time_unit=time_unit,
        log_likelihood=_original_scale_ll(best, data, scale), n_customers=int(round(float(data.w.sum()))),
        n_unique_rows=len(data.w), iterations=int(best.nit),
    )


def mbgnbd_log_likelihood(params: MbgNbdParams, frequency, recency, T) -> np.ndarray:
    """Per-customer MBG/NBD log-likelihood."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    A = betaln(a, b + x + 1) - (r + x) * np.log(alpha + T)
    B = betaln(a + 1, b + x) - (r + x) * np.log(alpha + t_x)
    return gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b) + np.logaddexp(A, B)


def mbgnbd_p_alive(params: MbgNbdParams, frequency, recency, T) -> np.ndarray:
    """P(active at T | x, t_x, T) = 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)); below 1 for x = 0 too."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_odds = np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return expit(-log_odds)


_Z_HYP2F1 = 0.99  # above this scipy's hyp2f1 can return nan or lose digits here (measured against quadrature)


def _future_by_quadrature(r1: float, k: float, a: float, b1: float) -> float:
    """E[(1 - (1 + k p)^-r1) / p] for p ~ Beta(a, b1) by adaptive quadrature (k = t/(alpha+T) large).

    Given lambda and p an active customer buys ``(1 - e^(-lambda p t))/p`` times in expectation (each
    purchase is followed by dropout with probability p); averaging ``e^(-lambda p t)`` over
    ``Gamma(r1, alpha+T)`` gives the integrand. The integrand bends at ``p ~ 1/k``: a break point there.
    """
    lb = betaln(a, b1)

    def f(p):
        return np.exp((a - 2) * np.log(p) + (b1 - 1) * np.log1p(-p) - lb) * -np.expm1(-r1 * np.log1p(k * p))

    cut = min(0.5, 1.0 / k)
    return sum(quad(f, lo, hi, epsabs=0, epsrel=1e-11, limit=200)[0] for lo, hi in ((0.0, cut), (cut, 1.0)))


def _mbg_future(r: float, alpha: float, a: float, b: float, x: np.ndarray, T: np.ndarray, t: float) -> np.ndarray:
    """E[purchases in (T, T+t] | active at T] = (a+b+x)/(a-1) [1 - (1-z)^(a-1) 2F1(a+b-r, a-1; a+b+x; z)].

    ``z = t/(alpha+T+t)``; the active customer is a BG/NBD customer with ``Gamma(r+x, alpha+T)`` and
    ``Beta(a, b+x+1)``, and the hypergeometric form is the Euler-transformed one of ``btyd`` (small first
    parameters for any x). At ``a = 1`` the ratio is 0/0 with a finite limit; within 1e-5 of it the value
    is interpolated linearly between ``a = 1 -+ 1e-5`` (the function is analytic in ``a``). Where
    ``z > 0.99`` (horizons a hundred times ``alpha + T``: brand-new customers of very frequent buyers) the
    expectation is integrated over ``p`` instead (``_future_by_quadrature``, one unique (x, T) at a time).
    """
    h = 1e-5
    z = t / (alpha + T + t)
    near_one = z > _Z_HYP2F1
    zz = np.where(near_one, 0.5, z)

    def direct(a):
        surv = np.exp((a - 1) * np.log1p(-zz)) * hyp2f1(a + b - r, a - 1, a + b + x, zz)
        return (a + b + x) / (a - 1) * (1 - surv)

    if abs(a - 1) >= h:
        out = direct(a)
    else:
        lo, hi = direct(1 - h), direct(1 + h)
        out = lo + (a - (1 - h)) / (2 * h) * (hi - lo)
    for i in np.flatnonzero(near_one):
        out[i] = _future_by_quadrature(r + x[i], t / (alpha + T[i]), a, b + x[i] + 1)
    return out


def mbgnbd_expected_purchases(params: MbgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] = P(alive) E[... | alive] (Wagner & Hoppe 2008)."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    if t <= 0:
        return np.zeros_like(x)
    uniq, inverse = np.unique(np.column_stack([x, T]), axis=0, return_inverse=True)
    future = _mbg_future(params.r, params.alpha, params.a, params.b, uniq[:, 0], uniq[:, 1], t)[inverse.ravel()]
    result = future * mbgnbd_p_alive(params, x, t_x, T)
    return np.maximum(np.nan_to_num(result, nan=0.0, posinf=0.0), 0.0)


def mbgnbd_prob_no_purchase(params: MbgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """P(no purchase in (T, T+t]) = P(inactive) + P(active) ((alpha+T)/(alpha+T+t))^(r+x).

    An active customer can only drop out right after a purchase, so with no purchase in the window they
    stay active through it: the window is quiet iff the Poisson process is.
    """
    x, t_x, T = _validate_summary(frequency, recency, T)
    alive = mbgnbd_p_alive(params, x, t_x, T)
    quiet_if_alive = np.exp((params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + T + t)))
    return np.clip(1 - alive + alive * quiet_if_alive, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# The tail integral F(y) = int_y^inf (A+v)^-p (B+v)^-q dv and its hypergeometric factor G
# ---------------------------------------------------------------------------------------------

_SERIES_TOL = 1e-17


def _g_series(c: np.ndarray, C: np.ndarray, z: np.ndarray, grad: bool):
    """G = 2F1(1, c; C; z) = sum_n (c)_n/(C)_n z^n and dG/dc, dG/dC, dG/dz, summed term by term.

    Terms are positive with ratio ``(c+n)/(C+n) z < z``. Elements leave the loop once their remaining terms
    are below 1e-17 of the sum (scaled by ``1-z`` for the geometric tail), so a few slow elements do not
    keep the rest iterating. ``dG/dz = sum_n (n+1) t_n (c+n)/(C+n)`` avoids dividing by ``z``.
    """
    n_el = c.size
    G = np.ones(n_el)
    Gc, GC, Gz = np.zeros(n_el), np.zeros(n_el), np.zeros(n_el)
    idx = np.arange(n_el)
    cc, CC, zz = c.astype(float), C.astype(float), z.astype(float)
    t, g, gz = np.ones(n_el), np.ones(n_el), np.zeros(n_el)
    sc, sC, gc, gC = (np.zeros(n_el) for _ in range(4))
    tol = _SERIES_TOL * np.maximum(1.0 - zz, 1e-4)
    n = 0
    while idx.size:
        ratio = (cc + n) / (CC + n)
        gz += (n + 1) * t * ratio
        if grad:
            sc += 1.0 / (cc + n)
            sC += 1.0 / (CC + n)
        t = t * ratio * zz
        g += t
        if grad:
            gc += t * sc
            gC -= t * sC
        n += 1
        done = t * (n + 1 + sc + sC) <= tol * g
        # drop finished elements in batches (they would only add negligible terms meanwhile)
        if (n % 8 == 0 or done.all()) and done.any():
            i = idx[done]
            G[i], Gz[i], Gc[i], GC[i] = g[done], gz[done], gc[done], gC[done]
            keep = ~done
            idx, t, g, gz, sc, sC, gc, gC, cc, CC, zz, tol = (
                v[keep] for v in (idx, t, g, gz, sc, sC, gc, gC, cc, CC, zz, tol)
            )
        if n > 100_000:  # cannot happen: the series is only used where eps >= 0.1 (about 37/eps terms)
            raise FloatingPointError("hypergeometric series did not converge")
    return G, Gc, GC, Gz


def _log_phi1(u: np.ndarray) -> np.ndarray:
    """ln((e^u - 1)/u) for any real u, without overflow or cancellation (0 at u = 0)."""
    out = np.zeros_like(u)
    small = (np.abs(u) < 1.0) & (u != 0)
    out[small] = np.log(np.expm1(u[small]) / u[small])
    big = np.abs(u) >= 1.0
    ub = u[big]
    out[big] = np.where(ub > 0, ub + np.log1p(-np.exp(-np.abs(ub))), np.log(-np.expm1(-np.abs(ub)))) - np.log(
        np.abs(ub)
    )
    return out


_EPS_SERIES = 0.1  # the power series (exact derivatives) where eps >= this: at most ~370 terms


def _split_w1(C: np.ndarray) -> np.ndarray:
    """Where the split takes over from the continued fraction: ``eps < min(0.1, 3/a)``, ``a = C-1``."""
    return np.minimum(_EPS_SERIES, 3.0 / (C - 1.0))


def _g_cf(c: np.ndarray, C: np.ndarray, z: np.ndarray) -> np.ndarray:
    """G = 2F1(1, c; C; z) by Gauss's continued fraction (values only), for ``eps`` below 0.1.

    ``G = 1/(1 - k1 z/(1 - k2 z/(1 - ...)))`` with ``k_(2m+1) = (c+m)(a+m)/((a+2m)(a+2m+1))`` and
    ``k_(2m+2) = (m+1)(d+m+1)/((a+2m+1)(a+2m+2))`` (``a = C-1``, ``d = C-1-c``), from the contiguous relation
    ``F(A,B;D) - F(A,B+1;D+1) = -A(D-B)/(D(D+1)) z F(A+1,B+1;D+2)`` applied alternately in its two upper
    parameters, starting from ``A = c, B = 0, D = a``; evaluated with the modified Lentz algorithm. It needs
    about ``10/sqrt(eps)`` steps where the series needs ``37/eps`` (and the series is slowest for large
    ``c``, which the fraction does not mind).
    """
    n_el = c.size
    out = np.empty(n_el)
    idx = np.arange(n_el)
    cc, zz = c.astype(float), z.astype(float)
    a = C.astype(float) - 1.0
    d = a - cc
    f, Cl, D = np.ones(n_el), np.ones(n_el), np.zeros(n_el)
    tiny = 1e-300
    for j in range(1, 2_000_000):
        m, even = divmod(j - 1, 2)
        if even:
            k = (m + 1) * (d + m + 1) / ((a + 2 * m + 1) * (a + 2 * m + 2))
        else:
            k = (cc + m) * (a + m) / ((a + 2 * m) * (a + 2 * m + 1))
        aj = -k * zz
        D = 1.0 + aj * D
        D = 1.0 / np.where(D == 0, tiny, D)
        Cl = 1.0 + aj / Cl
        Cl = np.where(Cl == 0, tiny, Cl)
        delta = Cl * D
        f = f * delta
        done = np.abs(delta - 1.0) < 1e-16
        if (j % 8 == 0 or done.all()) and done.any():
            out[idx[done]] = 1.0 / f[done]
            keep = ~done
            idx, f, Cl, D, cc, zz, a, d = (v[keep] for v in (idx, f, Cl, D, cc, zz, a, d))
            if not idx.size:
                return out
    raise FloatingPointError("hypergeometric continued fraction did not converge")


def _g_value(c: np.ndarray, C: np.ndarray, z: np.ndarray, eps: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """G for any 0 <= z < 1: series (eps >= 0.1), continued fraction (w1 <= eps < 0.1), split (eps < w1).

    ``w1`` is ``_split_w1(C)`` of the point whose derivatives are wanted: the shifted copies of the central
    differences pass the same ``w1`` so that all copies use the same method and split point.
    """
    out = np.empty(c.size)
    ser, spl = eps >= _EPS_SERIES, eps < w1
    cf = ~ser & ~spl
    if ser.any():
        out[ser] = _g_series(c[ser], C[ser], z[ser], False)[0]
    if cf.any():
        out[cf] = _g_cf(c[cf], C[cf], z[cf])
    if spl.any():
        w = w1[spl]
        G1 = _g_value(c[spl], C[spl], 1.0 - w, w, w)  # at eps = w1: series or fraction, never split again
        out[spl] = _g_split(c[spl], C[spl], z[spl], eps[spl], w, G1)
    return out


def _g_split(
    c: np.ndarray, C: np.ndarray, z: np.ndarray, eps: np.ndarray, w1: np.ndarray, G1: np.ndarray
) -> np.ndarray:
    """G near z = 1 (``eps < w1``, ``w1 <= min(0.1, 3/a)``, ``a = C-1``, ``d = C-1-c``); ``G1`` is G at
    ``z = 1 - w1``.

    With ``G = a z^-a eps^d J(eps)``, ``J(e) = int_e^1 w^-(d+1) (1-w)^(a-1) dw``: ``J(eps) = J(w1) + K``,
    ``J(w1)`` from ``G1`` and ``K = sum_n (1-a)_n/n! (w1^(n-d) - eps^(n-d))/(n-d)``, each piece computed as
    ``eps^(n-d) ln(w1/eps) phi1((n-d) ln(w1/eps))`` with ``phi1(u) = (e^u-1)/u`` (no pole at n = d).
    Since ``a w1 <= 3`` the alternating terms never exceed about ``e^3`` times the sum.
    """
    a = C - 1.0
    d = a - c
    L = np.log(eps)
    lam = np.log(w1) - L  # > 0
    ln_lam = np.log(lam)
    S = np.zeros_like(c)
    coef = np.ones_like(c)  # (1-a)_n / n!
    for n in range(400):
        S += coef * np.exp(n * L + ln_lam + _log_phi1((n - d) * lam))
        coef = coef * (1.0 - a + n) / (n + 1)
        if np.all(np.abs(coef) * w1 ** (n + 1) <= 1e-18):
            break
    ln_z = np.log(z)
    return a * np.exp(-a * ln_z) * S + G1 * np.exp(a * (np.log1p(-w1) - ln_z) + d * (L - np.log(w1)))


def _log_g(c, C, z, eps, grad: bool):
    """ln G and its derivatives in (c, C, z).

    Where ``eps >= 0.1`` the series gives exact derivatives. Elsewhere (``_g_value``) the derivatives in
    ``c`` and ``C`` are central differences (relative step 1e-5; the four shifted copies go through the
    same pass), and the one in ``z`` is exact: ``G = a z^-a eps^d B_z(a, -d)`` (an incomplete beta function)
    gives ``dG/dz = a/(z eps) - G (a/z + d/eps)``.
    """
    c, C, z, eps = (np.array(v, dtype=float).ravel() for v in np.broadcast_arrays(c, C, z, eps))
    out = [np.zeros(c.shape) for _ in range(4)]
    ser = eps >= _EPS_SERIES
    if ser.any():
        G, Gc, GC, Gz = _g_series(c[ser], C[ser], z[ser], grad)
        out[0][ser] = np.log(G)
        if grad:
            out[1][ser], out[2][ser], out[3][ser] = Gc / G, GC / G, Gz / G
    rest = ~ser
    if rest.any():
        cs, Cs, zs, es = c[rest], C[rest], z[rest], eps[rest]
        if grad:  # rows: the point itself, then c+h, c-h, C+h, C-h
            hc, hC = 1e-5 * cs, 1e-5 * Cs
            G = _g_value(
                np.concatenate([cs, cs + hc, cs - hc, cs, cs]), np.concatenate([Cs, Cs, Cs, Cs + hC, Cs - hC]),
                np.tile(zs, 5), np.tile(es, 5), np.tile(_split_w1(Cs), 5),
            )
            lg = np.log(G).reshape(5, -1)
            out[1][rest] = (lg[1] - lg[2]) / (2 * hc)
            out[2][rest] = (lg[3] - lg[4]) / (2 * hC)
            a = Cs - 1.0
            out[3][rest] = a / (zs * es * G[: cs.size]) - a / zs - (a - cs) / es
            out[0][rest] = lg[0]
        else:
            out[0][rest] = np.log(_g_value(cs, Cs, zs, es, _split_w1(Cs)))
    return out


def _log_tail(p, q, A, B, y, grad: bool = False):
    """ln F(y), F(y) = int_y^inf (A+v)^-p (B+v)^-q dv (needs p+q > 1), and d lnF / d(p, q, A, B).

    ``F = (M+y)^-P (m+y)^(1-Q) G / (p+q-1)`` with ``M, P`` the larger constant and its exponent, ``m, Q`` the
    smaller, ``G = 2F1(1, P; p+q; z)``, ``z = (M-m)/(M+y)`` (module docstring).
    """
    p, q, A, B, y = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (p, q, A, B, y)))
    a_is_big = A >= B
    M, m = np.where(a_is_big, A, B), np.where(a_is_big, B, A)
    P, Q = np.where(a_is_big, p, q), np.where(a_is_big, q, p)
    My, my = M + y, m + y
    z = (M - m) / My
    eps = my / My
    a = p + q - 1.0
    ln_My, ln_my = np.log(My), np.log(my)
    lnG, dG_c, dG_C, dG_z = _log_g(P, p + q, z, eps, grad)
    lnF = -P * ln_My + (1.0 - Q) * ln_my - np.log(a) + lnG
    if not grad:
        return lnF, None
    d_P = -ln_My - 1.0 / a + dG_c + dG_C
    d_Q = -ln_my - 1.0 / a + dG_C
    d_M = -P / My + dG_z * my / My**2
    d_m = (1.0 - Q) / my - dG_z / My
    d_p, d_q = np.where(a_is_big, d_P, d_Q), np.where(a_is_big, d_Q, d_P)
    d_A, d_B = np.where(a_is_big, d_M, d_m), np.where(a_is_big, d_m, d_M)
    return lnF, (d_p, d_q, d_A, d_B)


def _log1mexp(v: np.ndarray) -> np.ndarray:
    """ln(1 - e^v) for v <= 0 (-inf at v = 0); absolute error about 1e-16, which is what the callers add to."""
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(np.minimum(v, 0.0)))


# ---------------------------------------------------------------------------------------------
# Pareto/NBD
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoNbdParams(FitFacts):
    r: float
    alpha: float
    s: float
    beta: float


@dataclass
class _Pairs:
    """Unique (x, y) pairs of the rows: index into the unique x and the unique y values, and row -> pair."""

    ix: np.ndarray
    iy: np.ndarray
    row: np.ndarray


def _pairs(ix: np.ndarray, iy: np.ndarray, n_y: int) -> _Pairs:
    key = ix.astype(np.int64) * n_y + iy
    ukey, row = np.unique(key, return_inverse=True)
    return _Pairs(ukey // n_y, ukey % n_y, row.ravel())


@dataclass
class _PnbdData:
    bg: _BgData
    pT: _Pairs  # (x, T) pairs
    pt: _Pairs  # (x, t_x) pairs


def _pnbd_data(bg: _BgData) -> _PnbdData:
    return _PnbdData(bg, _pairs(bg.ix, bg.iT, len(bg.uT)), _pairs(bg.ix, bg.itx, len(bg.utx)))


def _pnbd_scaled(d: _PnbdData, scale: float) -> _PnbdData:
    return _PnbdData(_scaled(d.bg, scale), d.pT, d.pt)


def _pnbd_rows(r, alpha, s, beta, d: _PnbdData, grad: bool):
    """Per-row pieces of the Pareto/NBD likelihood: ln of the "alive at T" term, ln of ``s (F(t_x)-F(T))``
    and their log-sum; with ``grad`` also the weighted sums over rows of the log-sum's derivatives in
    (r, alpha, s, beta).

    The derivative of ``ln(F(t_x) - F(T))`` is ``(F'(t_x)/F(t_x) - rho F'(T)/F(T))/(1 - rho)`` with
    ``rho = F(T)/F(t_x)``; its row weights are summed onto the pairs first (``np.bincount``) and then dotted
    with the pair-level derivatives, instead of gathering four derivatives to every row.
    """
    bg = d.bg
    n_T = d.pT.ix.size  # one pass over the (x, T) and (x, t_x) pairs together
    lnF, g = _log_tail(
        r + bg.ux[np.concatenate([d.pT.ix, d.pt.ix])], s + 1.0, alpha, beta,
        np.concatenate([bg.uT[d.pT.iy], bg.utx[d.pt.iy]]), grad,
    )
    lnFT, lnFt = lnF[:n_T], lnF[n_T:]
    ln_aT_u, ln_bT_u = np.log(alpha + bg.uT), np.log(beta + bg.uT)
    rx = r + bg.x
    log_e = -rx * ln_aT_u[bg.iT] - s * ln_bT_u[bg.iT]
    Ft = lnFt[d.pt.row]
    diff = np.minimum(lnFT[d.pT.row] - Ft, 0.0)  # ln(F(T)/F(t_x)) <= 0; exactly 0 when t_x = T
    log_i = np.log(s) + Ft + _log1mexp(diff)
    ell = np.logaddexp(log_e, log_i)
    if not grad:
        return log_e, log_i, ell, None
    w = bg.w
    wwE = w * np.exp(log_e - ell)
    wwI = w * np.exp(log_i - ell)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_t = np.where(diff < 0, wwI / -np.expm1(diff), 0.0)  # weight 0 where rho = 1 (t_x = T, wI = 0)
    c_T = c_t * np.exp(diff)
    by_t = np.bincount(d.pt.row, weights=c_t, minlength=lnFt.size)
    by_T = np.bincount(d.pT.row, weights=c_T, minlength=n_T)
    dI = [_dot(by_t, v[n_T:]) - _dot(by_T, v[:n_T]) for v in g]  # sum of w wI d ln(F(t_x)-F(T)) per parameter
    wE_by_T = np.bincount(bg.iT, weights=wwE, minlength=bg.uT.size)
    sums = (
        -_dot(wE_by_T, ln_aT_u) + dI[0],
        -_dot(wwE * rx, 1.0 / (alpha + bg.T_row)) + dI[2],
        -_dot(wE_by_T, ln_bT_u) + wwI.sum() / s + dI[1],
        -s * _dot(wE_by_T, 1.0 / (beta + bg.uT)) + dI[3],
    )
    return log_e, log_i, ell, sums


def _pnbd_nll_grad(log_params: np.ndarray, d: _PnbdData, penalizer: float):
    """Mean negative Pareto/NBD log-likelihood and its gradient in log-parameters."""
    r, alpha, s, beta = np.exp(log_params)
    bg = d.bg
    w = bg.w
    total = w.sum()
    _, _, ell, (g_r, g_alpha, g_s, g_beta) = _pnbd_rows(r, alpha, s, beta, d, True)
    ll = (
        _dot(bg.w_by_x, gammaln(r + bg.ux)) + total * (-gammaln(r) + r * np.log(alpha) + s * np.log(beta))
        + _dot(w, ell)
    )
    d_r = _dot(bg.w_by_x, digamma(r + bg.ux)) + total * (np.log(alpha) - digamma(r)) + g_r
    d_alpha = total * r / alpha + g_alpha
    d_s = total * np.log(beta) + g_s
    d_beta = total * s / beta + g_beta
    theta = np.exp(log_params)
    nll = -ll / total + penalizer * np.sum(theta**2)
    grad = -np.array([d_r * r, d_alpha * alpha, d_s * s, d_beta * beta]) / total + penalizer * 2 * theta**2
    if not np.isfinite(nll) or not np.all(np.isfinite(grad)):
        return np.inf, np.zeros(4)
    return nll, grad


def fit_pareto_nbd(
    frequency, recency, T, *, weights=None, time_unit: str = "days", penalizer: float = 0.0
) -> ParetoNbdParams:
    """Maximum-likelihood Pareto/NBD parameters from per-customer (x, t_x, T)."""
    x, weights, data, scale = _prepare("Pareto/NBD", frequency, recency, T, weights)
    pdata = _pnbd_scaled(_pnbd_data(data), scale)
    best = _run_fit(
        "Pareto/NBD", ("r", "alpha", "s", "beta"), _pnbd_nll_grad, pdata, penalizer,
        (np.zeros(4), np.log([0.5, 0.5, 0.5, 2.0])), x, weights,
    )
    r, alpha_scaled, s, beta_scaled = np.exp(best.x)
    return ParetoNbdParams(
        r=float(r), alpha=float(alpha_scaled * scale), s=float(s), beta=float(beta_scaled * scale),
        time_unit=time_unit, log_likelihood=_original_scale_ll(best, data, scale),
        n_customers=int(round(float(data.w.sum()))), n_unique_rows=len(data.w), iterations=int(best.nit),
    )


def _pnbd_unique(params: ParetoNbdParams, frequency, recency, T):
    """Per unique row: (x, T, log "alive" term, log "dead" term, inverse), for the predictions."""
    x, t_x, T = _validate_summary(frequency, recency, T)
    data, inverse = _compress(x, t_x, T)
    log_e, log_i, _, _ = _pnbd_rows(params.r, params.alpha, params.s, params.beta, _pnbd_data(data), False)
    return data.x, data.T_row, log_e, log_i, inverse


def pareto_nbd_log_likelihood(params: ParetoNbdParams, frequency, recency, T) -> np.ndarray:
    """Per-customer Pareto/NBD log-likelihood."""
    ux, _, log_e, log_i, inverse = _pnbd_unique(params, frequency, recency, T)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    ll = gammaln(r + ux) - gammaln(r) + r * np.log(alpha) + s * np.log(beta) + np.logaddexp(log_e, log_i)
    return ll[inverse]


def pareto_nbd_p_alive(params: ParetoNbdParams, frequency, recency, T) -> np.ndarray:
    """P(alive at T | x, t_x, T): the "alive" term's share of the likelihood (the note's eq. 19)."""
    _, _, log_e, log_i, inverse = _pnbd_unique(params, frequency, recency, T)
    return expit(log_e - log_i)[inverse]


def pareto_nbd_expected_purchases(params: ParetoNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (the note's eq. 41), with the s -> 1 limit:

    (r+x)/(alpha+T) (beta+T) [1 - ((beta+T)/(beta+T+t))^(s-1)]/(s-1) P(alive), the bracket over (s-1) being
    ``-expm1((s-1) L)/(s-1)`` with ``L = ln((beta+T)/(beta+T+t))``, which is ``-L`` at s = 1.
    """
    x, t_x, T = _validate_summary(frequency, recency, T)
    if t <= 0:
        return np.zeros_like(x)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    ux, uT, log_e, log_i, inverse = _pnbd_unique(params, x, t_x, T)
    L = np.log(beta + uT) - np.log(beta + uT + t)
    k = s - 1.0
    horizon = -L if k == 0 else -np.expm1(k * L) / k
    result = (r + ux) / (alpha + uT) * (beta + uT) * horizon * expit(log_e - log_i)
    return np.maximum(np.nan_to_num(result, nan=0.0, posinf=0.0), 0.0)[inverse]


def pareto_nbd_prob_no_purchase(params: ParetoNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """P(no purchase in (T, T+t] | x, t_x, T) = 1 - P(alive) P(buy before death and before T+t | alive).

    Given alive at T, ``lambda ~ Gamma(r+x, alpha+T)`` and ``mu ~ Gamma(s, beta+T)`` independently, and the
    first purchase after T comes at ``v`` while still alive with density ``lambda e^-(lambda+mu) v``, so

        P(buy in window | alive) = int_0^t E[lambda e^-lambda v] E[e^-mu v] dv
                                 = r' alpha'^r' beta'^s (F(0) - F(t)),

    ``F(y) = int_y^inf (alpha'+v)^-(r'+1) (beta'+v)^-s dv`` (r' = r+x, alpha' = alpha+T, beta' = beta+T).
    """
    x, t_x, T = _validate_summary(frequency, recency, T)
    if t <= 0:
        return np.ones_like(x)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    ux, uT, log_e, log_i, inverse = _pnbd_unique(params, x, t_x, T)
    key, inv_xT = np.unique(np.column_stack([ux, uT]), axis=0, return_inverse=True)
    kx, kT = key[:, 0], key[:, 1]
    p = r + kx + 1.0
    A, B = alpha + kT, beta + kT
    n = kx.size  # F(0) and F(t) in one pass
    lnF, _ = _log_tail(np.tile(p, 2), s, np.tile(A, 2), np.tile(B, 2), np.repeat([0.0, float(t)], n))
    lnF0, lnFt = lnF[:n], lnF[n:]
    log_buy = np.log(r + kx) + (r + kx) * np.log(A) + s * np.log(B) + lnF0 + _log1mexp(np.minimum(lnFt - lnF0, 0.0))
    buy_if_alive = np.minimum(np.exp(log_buy), 1.0)[inv_xT.ravel()]
    alive = expit(log_e - log_i)
    return np.clip(1.0 - alive * buy_if_alive, 0.0, 1.0)[inverse]


# ---------------------------------------------------------------------------------------------
# One interface
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BtydModel:
    """A BTYD family member: its fit and per-customer functions, all with the same signatures.

    ``fit(frequency, recency, T, *, weights=None, time_unit="days", penalizer=0.0) -> params`` raises
    ``btyd.BtydFitError`` with the data facts when it cannot fit; ``log_likelihood``/``p_alive(params, x,
    t_x, T)``; ``expected_purchases``/``prob_no_purchase(params, t, x, t_x, T)`` over ``(T, T+t]``.
    """

    name: str
    label: str
    param_names: tuple[str, ...]
    fit: Callable
    log_likelihood: Callable
    p_alive: Callable
    expected_purchases: Callable
    prob_no_purchase: Callable


MODELS: dict[str, BtydModel] = {
    "bgnbd": BtydModel(
        "bgnbd", "BG/NBD", ("r", "alpha", "a", "b"), btyd.fit_bgnbd, btyd.bgnbd_log_likelihood, btyd.p_alive,
        btyd.expected_purchases, btyd.prob_no_purchase,
    ),
    "mbgnbd": BtydModel(
        "mbgnbd", "MBG/NBD", ("r", "alpha", "a", "b"), fit_mbgnbd, mbgnbd_log_likelihood, mbgnbd_p_alive,
        mbgnbd_expected_purchases, mbgnbd_prob_no_purchase,
    ),
    "pareto_nbd": BtydModel(
        "pareto_nbd", "Pareto/NBD", ("r", "alpha", "s", "beta"), fit_pareto_nbd, pareto_nbd_log_likelihood,
        pareto_nbd_p_alive, pareto_nbd_expected_purchases, pareto_nbd_prob_no_purchase,
    ),
}
