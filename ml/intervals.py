"""80 % (any level) prediction intervals for a customer's purchases, spend and CLV from a BTYD model.

The interval is the predictive distribution of what the customer does in ``(T, T + horizon]``, mixed over
two sources of uncertainty:

* **Parameters**: a Poisson bootstrap over customers (``bootstrap_fits``). Each of ``n_boot`` refits gives
  every customer a weight ``w ~ Poisson(1)`` (the large-sample limit of the ordinary bootstrap's
  multinomial counts), drawn as one Poisson(n) per unique summary row of ``n`` customers (the fit
  functions take ``weights=``; ``ml/btyd_summary.py``), for the purchase model's rows and Gamma-Gamma's
  rows independently (their rows are aggregated apart, by the engine; Gamma-Gamma assumes spend
  independent of the purchase process anyway). Refits that fail (``BtydFitError``) are skipped and counted.
* **Purchase process**, given one parameter draw and a customer's ``(x, t_x, T)``. Conditional on being
  alive at ``T`` the latent rates have independent posteriors, and the future count follows:

  - BG/NBD: ``lambda ~ Gamma(r+x, alpha+T)``, ``p ~ Beta(a, b+x)``; purchases ``= min(N, D)`` with
    ``N ~ Poisson(lambda t)`` and ``D ~ Geometric(p)`` on 1, 2, ... (drop-out right after the D-th future
    purchase). MBG/NBD: the same with ``p ~ Beta(a, b+x+1)`` (it can also drop out after the first purchase).
    Marginally ``N`` is negative binomial and ``P(D > k) = B(a, b'+k) / B(a, b')``, so
    ``P(X > k) = P(alive) P(N > k) P(D > k)`` is exact and is walked up ``k`` by two recursions; the
    purchase interval is read from this distribution mixed over the parameter draws (no Monte Carlo
    noise), and its ``K`` draws per parameter draw are taken by inversion at stratified uniforms
    ``(j + V) / K``, ``j = 0..K-1``, one ``V ~ U(0, 1)`` per parameter draw and customer.
  - Pareto/NBD: ``lambda ~ Gamma(r+x, alpha+T)``, ``mu ~ Gamma(s, beta+T)``, the remaining lifetime
    ``tau ~ Exp(mu)`` (marginally Lomax, drawn by inversion) and purchases ``~ Poisson(lambda min(t, tau))``,
    simulated; its interval comes from the draws.

  ``alive ~ Bernoulli(P(alive))`` with the model's own ``p_alive`` (a dead customer buys nothing).
* **Spend**: Gamma-Gamma's posterior of the customer's transaction rate ``nu ~ Gamma(p x + q, gamma + m x)``
  (``x`` repeat transactions with mean ``m``; the prior ``Gamma(q, gamma)`` without a repeat purchase), and
  the sum of ``n`` transactions ``~ Gamma(n p, nu)``, so the within-customer spread of single transactions
  is included: one spend draw is ``(gamma + m x) G(n p) / G(p x + q)`` with two standard gamma variates.
* **CLV** = spend times the mean discount factor over the horizon (``value_models.discount_factor``): a
  positive constant, so its interval is the spend interval scaled. (The point CLV discounts by the timing
  of expected purchases; over a year at 10 % the two factors differ by 0.2 % for the median customer of
  the sample data's model and by 1 % at most.)

**The interval rule.** The lower end is the ``(1 - level) / 2`` quantile ``L``; the upper end is the
smallest value ``U`` with ``P(L <= value <= U) >= level``. For a continuous distribution this is the
equal-tailed interval. Purchases are counts and spend has an atom at 0 (no purchase); there the lower
tail cannot hold 10 %, and instead of wasting the remainder above (the equal-tailed ``[0, 90th pct]``
holds 90 %) the interval becomes ``[0, 80th pct]``. Counts still tie: the interval's model probability,
reported as ``*_interval_prob``, is ``>= level`` and can be well above it (``[0, 0]`` holds ``P(no
purchase)``, e.g. 0.95, for a likely-dead customer). Coverage on a back-test (``interval_coverage``) counts
an outcome as covered when ``low <= actual <= high`` (inclusive), so it is to be compared with the mean
``*_interval_prob``, not with ``level``.

**Draws and speed.** ``draws`` (about 200) is split evenly over the parameter draws (rounded to a
multiple of their number). Customers are processed in batches of ``batch_rows`` with a seeded
``numpy.random.Generator`` per batch (``SeedSequence(seed).spawn``): the same inputs, seed and batch size
give the same intervals (BG/NBD and MBG/NBD purchase intervals are exact: the same whatever the seed).
Work and memory per batch are O(batch_rows x draws); the purchase walk takes as many steps as the
customer's largest purchase draw (about 20 at the sample data's rates).

Measured (one process, a busy 2-core machine): 1,000,000 customers simulated from the sample data's
BG/NBD + Gamma-Gamma parameters over up to three years (integer days, 88 % repeat buyers, 762k unique
``(x, t_x, T)`` rows), a 365-day horizon, the point fit plus 12 bootstrap fits (195 draws):
``predictive_intervals`` takes about 10 s of CPU for BG/NBD and MBG/NBD and 28 s for Pareto/NBD (its
purchases are simulated and its P(alive) costs about a microsecond per row and draw), with a peak of
0.25 GB (0.4 GB for Pareto/NBD) above the inputs at the default batch size; ``bootstrap_fits`` (12
refits) takes 6-10 s for BG/NBD and MBG/NBD and about 20 s for Pareto/NBD.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ml import btyd

DROPOUT_SHIFT = {"bgnbd": 0, "mbgnbd": 1}  # p | alive ~ Beta(a, b + x + shift)
LIFETIME_MODELS = ("pareto_nbd",)
QUANTILE_TOL = 1e-12
MAX_WALK_STEPS = 1_000_000  # the purchase walk's safety stop (a customer's largest draw is usually below 100)


@dataclass(frozen=True)
class _Model:
    name: str
    fit: Callable
    p_alive: Callable
    expected_purchases: Callable
    prob_no_purchase: Callable


def _model(name: str) -> _Model:
    """The fit and prediction functions of a BTYD family member (``ml.btyd_family.MODELS``, imported
    lazily; BG/NBD falls back to ``ml.btyd`` when the family module is absent)."""
    if name not in DROPOUT_SHIFT and name not in LIFETIME_MODELS:
        raise ValueError(f"unknown BTYD model {name!r}; expected one of "
                         f"{sorted(DROPOUT_SHIFT) + list(LIFETIME_MODELS)}")
    try:
        from ml.btyd_family import MODELS
    except ImportError:
        if name != "bgnbd":
            raise ValueError(f"BTYD model {name!r} needs ml/btyd_family.py, which cannot be imported") from None
        return _Model("bgnbd", btyd.fit_bgnbd, btyd.p_alive, btyd.expected_purchases, btyd.prob_no_purchase)
    spec = MODELS[name]
    return _Model(name, spec.fit, spec.p_alive, spec.expected_purchases, spec.prob_no_purchase)


def _validate(x, tx, T, m) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, tx, T = btyd._validate_summary(x, tx, T)
    m = np.asarray(m, dtype=float)
    if m.shape != x.shape:
        raise ValueError(f"monetary_value has {m.size} rows, frequency {x.size}")
    return x, tx, T, m


# ---------------------------------------------------------------------------------------------
# Parameter uncertainty: Poisson bootstrap
# ---------------------------------------------------------------------------------------------


class BootstrapFits(list):
    """The successful ``(params, gamma_gamma_params)`` refits (a list), with the failures counted.

    ``failures`` holds the error message of every refit that raised ``BtydFitError``; an empty list means
    every refit failed (the caller can still use the point fit alone)."""

    def __init__(self, fits, *, model_name: str, n_requested: int, failures: list[str]):
        super().__init__(fits)
        self.model_name = model_name
        self.n_requested = n_requested
        self.failures = failures

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def bootstrap_fits(
    model_name: str, x, tx=None, T=None, m=None, *, n_boot: int = 20, seed: int = 0, time_unit: str = "days",
    penalizer: float = 0.0,
) -> BootstrapFits:
    """``n_boot`` refits of the purchase model and Gamma-Gamma on Poisson-reweighted customers.

    ``x`` is a ``BtydSummary`` (``ml/btyd_summary.py``: unique rows with their number of customers, as the
    engine aggregates them), or ``x, tx, T, m`` the BTYD summaries of the buyers and their mean repeat spend
    (NaN or 0 without a repeat purchase). Each replicate draws a Poisson(n) weight for every unique row of a
    fit (``n`` customers each: the sum of their Poisson(1) weights), for the purchase model's rows and
    Gamma-Gamma's rows independently."""
    from ml.btyd_summary import BtydSummary

    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    summary = x if isinstance(x, BtydSummary) else BtydSummary.of(*_validate(x, tx, T, m))
    model = _model(model_name)
    if summary.x.size == 0:
        raise btyd.BtydFitError(f"{model_name}: no customers with a purchase to bootstrap")
    rng = np.random.default_rng(seed)
    # one BLAS thread: the fits' dot products are small, and OpenBLAS threads waiting on a busy machine
    # made each fit 10-20x slower
    with threadpool_limits(1, user_api="blas"):
        return _refit(model, rng, summary, n_boot, time_unit, penalizer)


def _refit(model, rng, s, n_boot, time_unit, penalizer) -> BootstrapFits:
    """The bootstrap loop: Poisson(n) weights on the unique rows of each fit."""
    fits, failures = [], []
    for _ in range(n_boot):
        w_rows = rng.poisson(s.n).astype(float)
        w_gg = rng.poisson(s.spend_n).astype(float)
        keep, keep_gg = w_rows > 0, w_gg > 0
        try:
            params = model.fit(s.x[keep], s.tx[keep], s.T[keep], weights=w_rows[keep],
                               time_unit=time_unit, penalizer=penalizer)
            gg = btyd.fit_gamma_gamma(s.spend_x[keep_gg], s.spend_m[keep_gg], weights=w_gg[keep_gg])
        except btyd.BtydFitError as exc:
            failures.append(str(exc))
            continue
        fits.append((params, gg))
    return BootstrapFits(fits, model_name=model.name, n_requested=n_boot, failures=failures)


# ---------------------------------------------------------------------------------------------
# Purchase process
# ---------------------------------------------------------------------------------------------


class _DropoutWalk:
    """P(X > k) for BG/NBD-type models (one row per parameter draw, one column per customer), walked up k.

    ``X = min(N, D)`` given alive: ``N ~ NegBin(r+x, pi)``, ``pi = (alpha+T)/(alpha+T+t)``, with
    ``P(N=0) = pi^(r+x)`` and ``P(N=k+1) = P(N=k) (r+x+k)/(k+1) (1-pi)``, and
    ``P(D > k+1) = P(D > k) (1 - a/(a+b'+k))``. The negative binomial recursion runs on probabilities,
    or on their logarithms (``log_space``) for heavy buyers whose ``P(N=0)`` underflows."""

    def __init__(self, fits: Sequence, shift: int, alive: np.ndarray, x, T, t: float, *, log_space: bool = False):
        r, alpha, a, b = (_column(fits, name) for name in ("r", "alpha", "a", "b"))
        self.k = 0
        self.s = r + x
        self.q = t / (alpha + T + t)
        self.log_pmf = self.s * (np.log(alpha + T) - np.log(alpha + T + t)) if log_space else None
        self.pmf = np.exp(self.s * (np.log(alpha + T) - np.log(alpha + T + t)))
        self.cdf = self.pmf.copy()
        self.a = np.broadcast_to(a, self.s.shape).copy()
        self.abk = a + b + x + shift  # a + b' + k
        self.alive_d = np.array(alive, dtype=float)  # P(alive) P(D > k)

    @staticmethod
    def underflows(fits: Sequence, x, T, t: float) -> np.ndarray:
        """Customers for whom some parameter draw's P(N = 0) is below exp(-700) (walk them in logs)."""
        r, alpha = _column(fits, "r"), _column(fits, "alpha")
        return ((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)) < -700).any(axis=0)

    @property
    def tail(self) -> np.ndarray:
        """P(X > k) at the current k."""
        return self.alive_d * (1.0 - self.cdf)

    def step(self) -> None:
        k = self.k
        ratio = self.s + k
        ratio *= self.q
        ratio *= 1.0 / (k + 1)
        if self.log_pmf is None:
            self.pmf *= ratio
        else:
            self.log_pmf += np.log(ratio, out=ratio)
            np.exp(self.log_pmf, out=self.pmf)
        self.cdf += self.pmf
        stay = np.divide(self.a, self.abk)
        self.alive_d *= np.subtract(1.0, stay, out=stay)
        self.abk += 1.0
        self.k = k + 1

    def keep(self, cols: np.ndarray) -> None:
        for name in ("s", "q", "log_pmf", "pmf", "cdf", "a", "abk", "alive_d"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[:, cols])


def _column(fits: Sequence, name: str) -> np.ndarray:
    return np.array([getattr(f, name) for f in fits], dtype=float)[:, None]


def _alive(model: _Model, fits: Sequence, x, tx, T) -> np.ndarray:
    """P(alive) per parameter draw (rows) and customer, evaluated once per unique (x, tx, T) row (Pareto/NBD's
    hypergeometric terms cost about a microsecond per row and draw)."""
    if x.size == 0:
        return np.zeros((len(fits), 0))
    rows, inverse, _ = btyd._unique_rows(x, tx, T)
    alive = np.stack([np.asarray(model.p_alive(params, rows[:, 0], rows[:, 1], rows[:, 2]), dtype=float)
                      for params in fits])[:, inverse]
    if not np.all((alive >= 0) & (alive <= 1)):
        raise btyd.BtydFitError(f"{model.name}: P(alive) outside [0, 1] or not finite for some parameter draw")
    return alive


def purchase_distribution(model_name: str, params, t: float, x, tx, T, *, max_count: int) -> np.ndarray:
    """P(X = k) for k = 0..max_count (rows: customers) under BG/NBD or MBG/NBD: the exact distribution the
    intervals are read from (for tests and diagnostics; ``k = max_count`` holds ``P(X >= max_count)``)."""
    if model_name not in DROPOUT_SHIFT:
        raise ValueError(f"exact purchase distribution only for {sorted(DROPOUT_SHIFT)}, not {model_name!r}")
    x, tx, T = btyd._validate_summary(x, tx, T)
    alive = _alive(_model(model_name), [params], x, tx, T)
    heavy = _DropoutWalk.underflows([params], x, T, t)
    cdf = np.zeros((x.size, max_count))
    for rows, log_space in ((~heavy, False), (heavy, True)):
        walk = _DropoutWalk([params], DROPOUT_SHIFT[model_name], alive[:, rows], x[rows], T[rows], t,
                            log_space=log_space)
        for k in range(max_count):
            cdf[rows, k] = 1.0 - walk.tail[0]
            walk.step()
    return np.column_stack([cdf[:, :1], np.diff(cdf, axis=1), 1.0 - cdf[:, -1:]])


def _dropout_counts(model, fits, x, tx, T, t, K, level, rng):
    """Exact mixture interval of purchases, and K draws per parameter draw by stratified inversion.

    Returns ``low, high, prob`` (per customer) and the draws ``(n, len(fits) * K)``."""
    n, B = x.size, len(fits)
    alive = _alive(model, fits, x, tx, T)
    # draw j of parameter draw b is the smallest k with F_b(k) >= (j + 1 - W) / K, W ~ U(0, 1]
    W = np.maximum(1.0 - rng.random((B, n)), 1e-6)  # a draw's level is capped at 1 - 1e-6 / K
    low, high = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    below, prob = np.zeros(n), np.zeros(n)
    hist = np.zeros((K + 1) * B * n, np.int32)  # hist[e, b, i]: steps at which e of the K draws were resolved
    heavy = _DropoutWalk.underflows(fits, x, T, t)
    for rows, log_space in ((np.flatnonzero(~heavy), False), (np.flatnonzero(heavy), True)):
        if rows.size:
            walk = _DropoutWalk(fits, DROPOUT_SHIFT[model.name], alive[:, rows], x[rows], T[rows], t,
                                log_space=log_space)
            _walk(walk, rows, W[:, rows], K, level, n, low, high, below, prob, hist)
    draws = hist.reshape(K + 1, B, n)[:K]
    for j in range(1, K):  # draw j = number of steps with e <= j
        draws[j] += draws[j - 1]
    return low, high, prob, np.ascontiguousarray(draws.transpose(2, 1, 0)).reshape(n, B * K)


def _walk(walk: _DropoutWalk, idx, W, K, level, n, low, high, below, prob, hist) -> None:
    """Walk k up until every draw is resolved and the interval found (results written in place)."""
    B = W.shape[0]
    lo_q = (1.0 - level) / 2.0
    f_prev = np.zeros(idx.size)
    stride = B * n
    base = np.arange(B)[:, None] * n + idx
    while idx.size:
        k = walk.k
        f = np.subtract(1.0, walk.tail)
        fm = f.mean(axis=0)
        lo, hi = low[idx], high[idx]
        new_low = (lo < 0) & (fm >= lo_q - QUANTILE_TOL)
        if new_low.any():
            low[idx[new_low]] = k
            below[idx[new_low]] = f_prev[new_low]
            lo = low[idx]
        new_high = (lo >= 0) & (hi < 0) & (fm >= below[idx] + level - QUANTILE_TOL)
        if new_high.any():
            high[idx[new_high]] = k
            prob[idx[new_high]] = fm[new_high] - below[idx[new_high]]
            hi = high[idx]
        f *= K
        f += W
        e = np.minimum(f.astype(np.int64), K)
        done = (e == K).all(axis=0) & (hi >= 0)
        e *= stride
        e += base
        hist[e] += 1
        n_done = int(done.sum())
        if n_done == idx.size:
            return
        if n_done > idx.size // 4:  # drop finished customers (kept until then: their e = K lands in bin K)
            keep = ~done
            idx, W, fm, base = idx[keep], W[:, keep], fm[keep], base[:, keep]
            walk.keep(keep)
        f_prev = fm
        if walk.k >= MAX_WALK_STEPS:
            raise btyd.BtydFitError(f"purchase distribution still has mass beyond {MAX_WALK_STEPS} purchases for "
                                    f"{idx.size} customer(s) (first row {idx[0]}); check the time unit of the horizon")
        walk.step()


def _lifetime_count_draws(model, fits, x, tx, T, t, K, rng) -> np.ndarray:
    """Pareto/NBD purchases in (T, T+t] simulated: ``(n, len(fits) * K)`` draws."""
    n, B = x.size, len(fits)
    alive = _alive(model, fits, x, tx, T)
    r, alpha, s, beta = (_column(fits, name)[:, :, None] for name in ("r", "alpha", "s", "beta"))
    draws = np.zeros((B, K, n), np.int32)
    live = rng.random((B, K, n)) < alive[:, None, :]
    bi, _, ii = np.nonzero(live)
    # remaining lifetime: P(tau > u) = ((beta+T)/(beta+T+u))^s  =>  tau = (beta+T) (V^(-1/s) - 1)
    s_, beta_T = s.ravel()[bi], beta.ravel()[bi] + T[ii]
    with np.errstate(over="ignore"):
        tau = beta_T * np.expm1(-np.log1p(-rng.random(bi.size)) / s_)  # log of a U(0, 1] variate
    exposure = np.minimum(t, tau)
    lam = rng.standard_gamma(r.ravel()[bi] + x[ii]) / (alpha.ravel()[bi] + T[ii])
    draws[live] = rng.poisson(lam * exposure)
    return draws.transpose(2, 0, 1).reshape(n, B * K)


# ---------------------------------------------------------------------------------------------
# Spend and the interval rule
# ---------------------------------------------------------------------------------------------


def _spend_draws(gg_fits, counts: np.ndarray, x, m, K: int, rng) -> np.ndarray:
    """Total spend of each purchase-count draw (column ``d`` uses Gamma-Gamma fit ``d // K``):
    ``(gamma + m x) G(n p) / G(p x + q)``, 0 without a purchase."""
    n = x.size
    p, q, g = (np.array([getattr(f, name) for f in gg_fits], dtype=float) for name in ("p", "q", "gamma"))
    has = (x > 0) & np.isfinite(m) & (m > 0)
    xs, mxs = np.where(has, x, 0.0), np.where(has, m * x, 0.0)
    X = counts.reshape(n, len(gg_fits), K)
    buys = X > 0
    per_fit = lambda v: np.broadcast_to(v[:, :, None], X.shape)[buys]  # noqa: E731  (n, B) -> the buying draws
    shape_sum = X[buys] * per_fit(np.broadcast_to(p, (n, p.size)))
    nu = rng.standard_gamma(per_fit(p * xs[:, None] + q))
    nu /= per_fit(g + mxs[:, None])
    spend = np.zeros(X.shape)
    spend[buys] = rng.standard_gamma(shape_sum) / nu
    return spend.reshape(n, -1)


def _empirical_interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interval rule on equally weighted draws (rows: customers): ``low, high, prob``."""
    n, D = draws.shape
    srt = np.sort(draws, axis=1)
    i_low = max(int(np.ceil(D * (1.0 - level) / 2.0 - 1e-9)) - 1, 0)
    low = srt[:, i_low]
    n_below = (srt < low[:, None]).sum(axis=1)
    i_high = np.minimum(n_below + int(np.ceil(D * level - 1e-9)) - 1, D - 1)
    high = srt[np.arange(n), i_high]
    prob = ((srt <= high[:, None]).sum(axis=1) - n_below) / D
    return low, high, prob


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def predictive_intervals(
    model_name: str,
    fits: Sequence,
    x, tx, T, m,
    *,
    horizon: float,
    level: float = 0.8,
    annual_discount_rate: float = 0.0,
    unit_days: float = 1.0,
    draws: int = 200,
    seed: int = 0,
    batch_rows: int = 20_000,
) -> pd.DataFrame:
    """Per customer (rows in input order): ``level`` intervals of purchases, spend and CLV over ``horizon``.

    ``fits`` are ``(params, gamma_gamma_params)`` pairs (``bootstrap_fits``, optionally with the point fit
    added); ``horizon`` is in the model's time unit (``unit_days`` days each, for discounting). Columns:
    ``expected_purchases_low/high``, ``spend_low/high``, ``clv_low/high`` and the model probability of
    each interval, ``purchases_interval_prob`` and ``spend_interval_prob`` (see the module docstring)."""
    x, tx, T, m = _validate(x, tx, T, m)
    fits = list(fits)
    if not fits:
        raise ValueError("no parameter draws: every bootstrap fit failed and no point fit was given")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not horizon > 0:
        raise ValueError(f"horizon must be > 0, got {horizon}")
    if batch_rows < 1 or draws < 1:
        raise ValueError(f"batch_rows and draws must be >= 1, got {batch_rows} and {draws}")
    model = _model(model_name)
    params, gg = [f[0] for f in fits], [f[1] for f in fits]
    K = max(1, int(round(draws / len(fits))))
    from ml.value_models import discount_factor  # imported here: value_models imports this module

    disc = discount_factor(horizon * unit_days, annual_discount_rate)
    n = x.size
    cols = {c: np.zeros(n) for c in ("expected_purchases_low", "expected_purchases_high", "purchases_interval_prob",
                                     "spend_low", "spend_high", "spend_interval_prob")}
    starts = range(0, n, batch_rows)
    for start, child in zip(starts, np.random.SeedSequence(seed).spawn(len(starts))):
        rng = np.random.default_rng(child)
        sl = slice(start, start + batch_rows)
        xb, txb, Tb, mb = x[sl], tx[sl], T[sl], m[sl]
        if model.name in DROPOUT_SHIFT:
            low, high, prob, counts = _dropout_counts(model, params, xb, txb, Tb, horizon, K, level, rng)
        else:
            counts = _lifetime_count_draws(model, params, xb, txb, Tb, horizon, K, rng)
            low, high, prob = _empirical_interval(counts, level)
        cols["expected_purchases_low"][sl], cols["expected_purchases_high"][sl] = low, high
        cols["purchases_interval_prob"][sl] = prob
        spend = _spend_draws(gg, counts, xb, mb, K, rng)
        del counts
        s_low, s_high, s_prob = _empirical_interval(spend, level)
        cols["spend_low"][sl], cols["spend_high"][sl], cols["spend_interval_prob"][sl] = s_low, s_high, s_prob
    out = pd.DataFrame(cols)
    out["clv_low"] = out.spend_low * disc
    out["clv_high"] = out.spend_high * disc
    out.attrs.update(model=model_name, level=level, draws=K * len(fits), parameter_draws=len(fits),
                     horizon=horizon, discount_factor=disc)
    return out


def interval_coverage(low, high, actual) -> float:
    """Share of customers with ``low <= actual <= high`` (inclusive: a count on an end is covered)."""
    low, high, actual = (np.asarray(v, dtype=float) for v in (low, high, actual))
    if not (low.shape == high.shape == actual.shape):
        raise ValueError(f"low, high and actual differ in length: {low.size}, {high.size}, {actual.size}")
    if actual.size == 0:
        return float("nan")
    return float(np.mean((low <= actual) & (actual <= high)))
