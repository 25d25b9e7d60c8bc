"""Customer value: the BTYD family (BG/NBD, MBG/NBD, Pareto/NBD, each with Gamma-Gamma spend), a learned
challenger, naive baselines, and a back-test that makes every choice.

Windows (``ml/windows.py``; H = CLV horizon, L = value back-test window = H when two horizons of history
are in view, shorter otherwise; all dates are cutoffs in ``customer_features_history``):

* **selection window** ``(as_of - 2L, as_of - L]``: each BTYD model is fitted at ``as_of - 2L`` and predicts
  the purchases of those L days; the one with the lowest mean Poisson deviance of purchase counts is chosen.
  Its total bias there (actual / predicted, purchases and spend) is the candidate bias correction.
* **test window** ``(as_of - L, as_of]``: every BTYD model (fitted at ``as_of - L``), the learned model
  (trained at ``as_of - 2L`` on the L-day spend of the selection window, the chosen BTYD model's outputs among
  its features) and the naive baselines (spend of the last period, scaled to L days) predict the L days and
  are scored on the same held-out customers: normalised Gini, Spearman, total ratio. The champion is the
  better of the chosen BTYD model and the learned model by normalised Gini (BTYD on ties). The bias
  correction is kept only if applying the selection window's factor improves the test window's total error;
  the 80 % intervals' coverage is measured here too. Without a selection window (short history), the BTYD
  model is chosen on the test window (noted: its test metrics are then optimistic) and totals are not corrected.
  Without any window, the BTYD model with the highest log-likelihood at the as-of date is used.
* **production**: the chosen BTYD model is refitted at the as-of date and predicts H days; a learned champion
  is retrained at ``as_of - L`` on the test window's L-day spend and its L-day prediction is scaled to H days
  per customer by the BTYD model's own ratio (spend over H / spend over L). Intervals (``ml/intervals.py``):
  parameter uncertainty by a Poisson bootstrap of the fits plus simulation of the purchase process; a learned
  champion's intervals are the BTYD intervals scaled by the ratio of the two point predictions.

Customers without a purchase (leads) have no BTYD summary; they get the empirical rates of leads at the
latest complete back-dated window (purchases and spend per lead, scaled to H), so they are never a silent guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from ml import btyd
from ml.blocks import block_key
from ml.btyd_summary import BtydSummary
from ml.btyd_family import MODELS
from ml.cutoff_data import EVAL_ROWS, TRAIN_ROWS, CutoffData
from ml.intervals import bootstrap_fits, interval_coverage, predictive_intervals
from ml.metrics import poisson_deviance, value_metrics
from ml.threads import model_threads
from ml.windows import Windows

BTYD_FAMILY = ("bgnbd", "mbgnbd", "pareto_nbd")
BTYD_MODEL = "bgnbd_gg"  # the default BTYD model's name (used without any back-test window)
LEARNED_MODEL = "hgb_poisson"
NAIVE_MODEL = "naive_last_period"
NAIVE_MODELS = (NAIVE_MODEL,)
CATEGORICAL = ["country", "acquisition_channel", "age_band", "preferred_channel", "top_category", "gender"]
EXCLUDE = {"customer_id", "as_of_date", "created_at", "first_purchase_date", "last_purchase_date", "region"}
MIN_TRAIN_CUSTOMERS = 200
BTYD_COLUMNS = ["p_alive", "btyd_expected_purchases", "btyd_expected_avg_spend", "btyd_expected_spend"]
# what the BTYD models read per customer (fit and predictions)
BTYD_INPUTS = ["customer_id", "n_orders", "frequency", "btyd_recency_days", "btyd_t_days", "repeat_spend_mean"]
PREDICT_BATCH_ROWS = 200_000
FEATURE_WINDOWS_DAYS = (30, 90, 365)  # the spend_last_<n>d features (dbt var feature_windows_days)
INTERVAL_LEVEL = 0.8
# BTYD family members whose predictions are computed customer by customer (scipy's elementwise functions),
# so a batch's values are the whole population's: Pareto/NBD's series drop converged customers together
# and can differ in the last bit with the batch
ROW_BY_ROW = ("bgnbd", "mbgnbd")
BOOTSTRAP_FITS = 12
BLOCK = "value_block"  # the interval block of a customer (ValueScorer)
INTERVAL_SEED = 2


def btyd_model_name(family: str) -> str:
    """The published model name of a BTYD family member with Gamma-Gamma spend, e.g. ``pareto_nbd_gg``."""
    return f"{family}_gg"


@dataclass
class LeadRates:
    """What a customer without purchases does in a window, on average (from a complete past window)."""

    purchases_per_lead: float = 0.0
    spend_per_lead: float = 0.0
    no_purchase_share: float = 1.0
    purchases_high: float = 0.0  # upper end of the 80 % interval of a lead's purchases / spend
    spend_high: float = 0.0
    source: str = "no complete window: leads get 0"

    def scaled(self, factor: float) -> "LeadRates":
        return LeadRates(self.purchases_per_lead * factor, self.spend_per_lead * factor, self.no_purchase_share,
                         self.purchases_high * factor, self.spend_high * factor, self.source)


@dataclass
class BtydFit:
    """A fitted BTYD family member (``model`` keys ``ml.btyd_family.MODELS``) with its Gamma-Gamma fit."""

    model: str
    params: object
    gg: btyd.GammaGammaParams

    @property
    def name(self) -> str:
        return btyd_model_name(self.model)

    @property
    def spec(self):
        return MODELS[self.model]

    def as_dict(self) -> dict:
        return {"model": self.model, self.model: self.params.as_dict(), "gamma_gamma": self.gg.as_dict()}


@dataclass
class ValueScorer:
    """Every ``customer_value`` column for any piece of the customers at the as-of date, from what the step
    decided (the production BTYD fit, its bootstrap draws, the lead rates, a learned champion, the bias factors):
    here batch by batch, or on Spark's executors (``Warehouse.write_mapped`` with ``group=BLOCK``).

    A row's point predictions depend on the row alone. Its 80 % interval is simulated (``ml/intervals.py``) with
    the random draws of its block: the customers whose ``md5(customer_id)`` starts with the same hex digits
    (``block_query``), simulated together in ``customer_id`` order from a seed of the block's own. So a customer's
    interval is the same however the customers are split, on one machine or on many."""

    production: BtydFit
    as_of: date
    horizon_days: int  # H
    value_window_days: int  # L
    churn_horizon_days: int
    annual_discount_rate: float
    leads: LeadRates  # at the as-of date, over H days
    draws: list | None  # (params, gamma-gamma params) of the point fit and the bootstrap; None: point intervals
    factors: dict  # bias factors of purchases and spend (nan: none)
    learned: object | None = None  # the learned champion (trained on the test window), if it is the champion
    levels: dict = field(default_factory=dict)  # its categories
    batch: int = PREDICT_BATCH_ROWS

    @property
    def clv_model(self) -> str:
        return f"{LEARNED_MODEL if self.learned is not None else self.production.name}@{self.as_of}"

    def __call__(self, feats: pd.DataFrame) -> pd.DataFrame:
        feats = feats.sort_values("customer_id", kind="stable").reset_index(drop=True)
        H, L = self.horizon_days, self.value_window_days
        kw = dict(churn_horizon_days=self.churn_horizon_days, annual_discount_rate=self.annual_discount_rate)
        pred = btyd_predict(self.production, feats, horizon_days=H, leads=self.leads, **kw)
        result = pd.DataFrame({"customer_id": feats.customer_id.to_numpy()})
        result["p_alive"] = pred.p_alive
        result["expected_purchases"] = pred.btyd_expected_purchases
        result["prob_no_purchase_churn_horizon"] = pred.btyd_prob_no_purchase_churn
        result["expected_spend"] = pred.btyd_expected_spend
        result["clv"] = pred.btyd_clv
        result["clv_model"] = self.clv_model
        result["btyd_model"] = self.production.model
        self._intervals(result, feats)
        if self.learned is not None:  # its L-day prediction scaled to H days by the BTYD model's own ratio
            bt = pred if L == H else btyd_predict(self.production, feats, horizon_days=L, leads=self.leads.scaled(L / H),
                                                  with_clv=False, **kw)
            spend_L = predict_spend(self.learned, design_matrix(feats, bt, self.levels))
            btyd_L = bt.btyd_expected_spend.to_numpy()
            to_horizon = np.where(btyd_L > 0, result.expected_spend / np.maximum(btyd_L, 1e-12), H / L)
            spend = spend_L * to_horizon
            scale = np.where(result.expected_spend > 0, spend / np.maximum(result.expected_spend, 1e-12), 1.0)
            for col in ("clv_low", "clv_high"):
                result[col] = result[col] * scale
            result["expected_spend"] = spend
            result["clv"] = spend * discount_factor(H, self.annual_discount_rate)
        for what, cols in (("purchases", ("expected_purchases", "expected_purchases_low", "expected_purchases_high")),
                           ("spend", ("expected_spend", "clv", "clv_low", "clv_high"))):
            if np.isfinite(self.factors[what]):
                for col in cols:
                    result[col] = result[col] * self.factors[what]
        _hold_point(result)
        if not np.isfinite(result.select_dtypes("number").to_numpy()).all():
            raise btyd.BtydFitError("value predictions contain non-finite values; refusing to publish them")
        return result

    def _intervals(self, result: pd.DataFrame, feats: pd.DataFrame) -> None:
        """80 % intervals of purchases and CLV per customer, simulated block by block (leads: 0 to the leads'
        upper quantile; without bootstrap draws, the point prediction)."""
        n, H = len(feats), self.horizon_days
        low_p, high_p = np.zeros(n), np.full(n, self.leads.purchases_high)
        low_c = np.zeros(n)
        high_c = np.full(n, self.leads.spend_high * discount_factor(H, self.annual_discount_rate))
        buyer = (feats.n_orders > 0).to_numpy()
        if self.draws is None:
            low_p[buyer] = high_p[buyer] = result.expected_purchases[buyer]
            low_c[buyer] = high_c[buyer] = result.clv[buyer]
        else:
            blocks = feats[BLOCK].to_numpy()
            for block in pd.unique(blocks[buyer]):
                rows = np.flatnonzero(buyer & (blocks == block))
                _, x, tx, T, m = _buyers(feats.iloc[rows])
                iv = predictive_intervals(self.production.model, self.draws, x, tx, T, m, horizon=H,
                                          level=INTERVAL_LEVEL, annual_discount_rate=self.annual_discount_rate,
                                          seed=[INTERVAL_SEED, int(block, 16)])
                low_p[rows], high_p[rows] = iv.expected_purchases_low, iv.expected_purchases_high
                low_c[rows], high_c[rows] = iv.clv_low, iv.clv_high
        result["expected_purchases_low"], result["expected_purchases_high"] = low_p, high_p
        result["clv_low"], result["clv_high"] = low_c, high_c


def block_query(data: CutoffData, customers: int) -> str:
    """``data``'s features at a cutoff (one parameter) with each customer's interval block (``BLOCK``): the first
    hex digits of ``md5(customer_id)`` (``ml/blocks.py``)."""
    return f"select q.*, {block_key('q.customer_id', customers)} as {BLOCK} from ({data.batch_query()}) q"


@dataclass
class ValueResult:
    scorer: ValueScorer
    data: CutoffData
    performance: list[dict]
    champion: str
    fits: dict[str, BtydFit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backtest: pd.DataFrame | None = None  # per customer at the back-test cutoff: actual and predictions
    btyd_model: str = "bgnbd"  # the chosen BTYD family member
    card: dict = field(default_factory=dict)  # what the value model card records

    def _query(self) -> tuple[str, list]:
        return block_query(self.data, self.data.count(self.scorer.as_of)), [str(self.scorer.as_of)]

    @property
    def predictions(self) -> pd.DataFrame:
        """Every customer's row, in memory (in ``customer_id`` order)."""
        sql, params = self._query()
        parts = [self.scorer(feats) for feats in self.data.warehouse.batches(sql, params, self.scorer.batch, BLOCK)]
        if not parts:
            return self.scorer(self.data.warehouse.frame(f"select * from ({sql}) q limit 0", params))
        return pd.concat(parts, ignore_index=True).sort_values("customer_id", ignore_index=True)

    def write(self, warehouse, table: str, on_batch=None) -> int:
        """Every customer's row into ``table`` where the data is (``Warehouse.write_mapped``: whole blocks at a
        time here, on the executors on Spark); returns the rows written."""
        sql, params = self._query()
        return warehouse.write_mapped(table, sql, params, self.scorer, self.scorer.batch, on_batch, group=BLOCK)


LEAD_COLUMNS = ["customer_id", "as_of_date", "purchase_days_value_window", "spend_value_window", "churned",
                "value_window_complete", "churn_window_complete"]


def lead_rates(features: pd.DataFrame, outcomes: pd.DataFrame, window: str, total: int | None = None) -> LeadRates:
    """Empirical lead behaviour at one cutoff (``features`` and ``outcomes`` of that cutoff); ``window`` is
    ``value`` (purchases and spend in the value window) or ``churn`` (share without a purchase); ``total``: the
    number of leads when ``outcomes`` holds a sample of them."""
    leads = features.loc[features.n_orders == 0, ["customer_id"]].merge(outcomes, on="customer_id")
    complete = leads[f"{window}_window_complete"].all() if len(leads) else False
    if len(leads) < 20 or not complete:
        return LeadRates()
    q = 0.5 + INTERVAL_LEVEL / 2
    return LeadRates(
        purchases_per_lead=float(leads.purchase_days_value_window.mean()),
        spend_per_lead=float(leads.spend_value_window.mean()),
        no_purchase_share=float(leads.churned.mean()),
        purchases_high=float(leads.purchase_days_value_window.quantile(q)),
        spend_high=float(leads.spend_value_window.quantile(q)),
        source=(f"{len(leads)} leads at {outcomes.as_of_date.iloc[0]}" if total is None or total <= len(leads) else
                f"a sample of {len(leads):,} of {total:,} leads at {outcomes.as_of_date.iloc[0]}"),
    )


def _buyers(features: pd.DataFrame):
    buyer = (features.n_orders > 0).to_numpy()
    return (buyer, features.frequency.to_numpy(float)[buyer], features.btyd_recency_days.to_numpy(float)[buyer],
            features.btyd_t_days.to_numpy(float)[buyer], features.repeat_spend_mean.to_numpy(float)[buyer])


def fit_btyd(summary: BtydSummary | pd.DataFrame, model: str = "bgnbd") -> BtydFit:
    """``model`` and Gamma-Gamma fitted on the buyers' summaries (``CutoffData.btyd_summary``: unique rows,
    aggregated by the engine; or feature rows of every customer) (raises ``btyd.BtydFitError``).

    BLAS runs single-threaded here: the fits' small dot products were 10-20 times slower with OpenBLAS
    threads on a busy machine."""
    s = summary if isinstance(summary, BtydSummary) else BtydSummary.of(*_buyers(summary)[1:])
    with threadpool_limits(1, user_api="blas"):
        params = MODELS[model].fit(s.x, s.tx, s.T, weights=s.n, time_unit="days")
        return BtydFit(model, params, btyd.fit_gamma_gamma(s.spend_x, s.spend_m, weights=s.spend_n))


def discounted_purchases(fit: BtydFit, x, tx, T, *, horizon: float, annual_discount_rate: float,
                         steps: int = 12) -> np.ndarray:
    """Expected purchases over ``horizon`` days, each part of the horizon discounted to its middle at the
    annual rate (the horizon is cut into ``steps`` equal parts).

    Computed once per distinct ``(x, t_x, T)`` row and spread back (the ``steps`` evaluations are per
    customer and elementwise, so the values are the same): at a million customers a quarter of the buyers
    share their summary with another."""
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    if len(x) == 0:
        return np.zeros(0)
    rows, inverse, _ = btyd._unique_rows(x, tx, T)
    ux, utx, uT = rows[:, 0], rows[:, 1], rows[:, 2]
    edges = np.linspace(0.0, horizon, steps + 1)
    cumulative = [np.zeros(len(ux))] + [fit.spec.expected_purchases(fit.params, t, ux, utx, uT) for t in edges[1:]]
    value = np.zeros(len(ux))
    for k in range(steps):
        years = (edges[k] + edges[k + 1]) / 2 / 365.25
        value += (cumulative[k + 1] - cumulative[k]) / (1 + annual_discount_rate) ** years
    return value[inverse]


def btyd_predict(
    fit: BtydFit,
    features: pd.DataFrame,
    *,
    horizon_days: int,
    churn_horizon_days: int,
    annual_discount_rate: float,
    leads: LeadRates,
    with_clv: bool = True,
) -> pd.DataFrame:
    """Per customer: p_alive, expected purchases and spend over the horizon, P(no purchase in the churn
    horizon) and (``with_clv``) discounted CLV. Leads take ``leads``; nothing is NaN."""
    buyer, x, tx, T, m = _buyers(features)
    spec, params = fit.spec, fit.params
    n = len(features)
    out = pd.DataFrame({"customer_id": features.customer_id.to_numpy()})
    alive = np.ones(n)
    purchases = np.full(n, leads.purchases_per_lead)
    avg_spend = np.full(n, fit.gg.population_mean_spend)
    spend = np.full(n, leads.spend_per_lead)
    quiet = np.full(n, leads.no_purchase_share)
    alive[buyer] = spec.p_alive(params, x, tx, T)
    purchases[buyer] = spec.expected_purchases(params, horizon_days, x, tx, T)
    avg_spend[buyer] = btyd.expected_average_spend(fit.gg, x, m)
    spend[buyer] = purchases[buyer] * avg_spend[buyer]
    quiet[buyer] = spec.prob_no_purchase(params, churn_horizon_days, x, tx, T)
    if with_clv:
        clv = spend * discount_factor(horizon_days, annual_discount_rate)
        clv[buyer] = np.maximum(avg_spend[buyer] * discounted_purchases(
            fit, x, tx, T, horizon=horizon_days, annual_discount_rate=annual_discount_rate), 0.0)
        out["btyd_clv"] = clv
    out["p_alive"] = alive
    out["btyd_expected_purchases"] = purchases
    out["btyd_expected_avg_spend"] = avg_spend
    out["btyd_expected_spend"] = spend
    out["btyd_prob_no_purchase_churn"] = quiet
    return out


def discount_factor(horizon_days: int, annual_rate: float) -> float:
    """Mean discount over a horizon with spend spread evenly (continuous compounding)."""
    years = horizon_days / 365.25
    k = np.log1p(annual_rate)
    return 1.0 if k == 0 else float((1 - np.exp(-k * years)) / (k * years))


def design_matrix(features: pd.DataFrame, btyd_out: pd.DataFrame, categories: dict[str, list]) -> pd.DataFrame:
    """Model inputs: numeric and boolean features, fixed-category categoricals, and the BTYD outputs."""
    X = features.drop(columns=[c for c in features.columns if c in EXCLUDE or c in CATEGORICAL])
    X = X.apply(lambda s: s.astype(float) if s.dtype == bool or str(s.dtype) == "boolean" else s)
    X = X.select_dtypes(include=["number"]).astype(float)
    for col in CATEGORICAL:
        if col in features and categories.get(col):  # a column without any value carries no information
            X[col] = pd.Categorical(features[col].astype(object), categories=categories[col])
    for col in BTYD_COLUMNS:
        X[col] = btyd_out[col].to_numpy()
    X = X.assign(**rhythm_ratios(features))
    return X


def rhythm_ratios(features: pd.DataFrame) -> dict[str, np.ndarray]:
    """Purchase-rhythm features that do not grow with a customer's age: days since the last purchase over
    the customer's usual gap between purchases and over the time since the first purchase, and repeat
    purchases per year since the first. Raw recency and tenure grow for every customer as a cohort ages, so
    a model trained at earlier cutoffs sees values at scoring time it never saw in training; the ratios
    keep their meaning (null where undefined: no purchase, or no repeat purchase for the gap)."""
    if not {"recency_days", "frequency", "btyd_recency_days", "btyd_t_days"} <= set(features.columns):
        return {}
    recency = features.recency_days.to_numpy(float)
    freq = features.frequency.to_numpy(float)
    t = features.btyd_t_days.to_numpy(float)
    gap = np.where(freq > 0, features.btyd_recency_days.to_numpy(float) / np.where(freq > 0, freq, 1.0), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "recency_gap_ratio": np.where(gap > 0, recency / gap, np.nan),
            "recency_tenure_ratio": np.where(t > 0, recency / t, np.nan),
            "repeat_rate_per_year": np.where(t > 0, freq / np.maximum(t, 1.0) * 365.0, np.nan),
        }


LEAD_ROWS = EVAL_ROWS  # leads read for their rates, at most (a sample drawn by the engine beyond)


def leads_at(data: CutoffData, cutoff, window: str) -> LeadRates:
    """``lead_rates`` over the leads of a cutoff (at most ``LEAD_ROWS`` of them, drawn by the engine): only the
    leads' outcome columns leave the warehouse."""
    total = data.lead_count(cutoff)
    outcomes = data.lead_outcomes(cutoff, LEAD_COLUMNS, LEAD_ROWS, total)
    features = pd.DataFrame({"customer_id": outcomes.customer_id, "n_orders": 0})
    return lead_rates(features, outcomes, window, total=total)


@model_threads()
def train_spend_model(X: pd.DataFrame, y: np.ndarray, *, seed: int = 0, max_rows: int = TRAIN_ROWS):
    """HistGradientBoosting with a Poisson loss (spend is non-negative, skewed, often zero)."""
    if len(X) > max_rows:
        take = np.random.default_rng(seed).choice(len(X), max_rows, replace=False)
        X, y = X.iloc[np.sort(take)], y[np.sort(take)]
    X = X.loc[:, X.notna().any()]  # a column that is null throughout carries nothing (and breaks binning)
    model = HistGradientBoostingRegressor(
        loss="poisson", learning_rate=0.1, max_iter=400, max_leaf_nodes=31, min_samples_leaf=40,
        l2_regularization=1.0, early_stopping=True, validation_fraction=0.15, n_iter_no_change=25,
        categorical_features="from_dtype", random_state=seed,
    )
    model.fit(X, y)
    return model


def predict_spend(model, X: pd.DataFrame) -> np.ndarray:
    """Predictions on the columns the model was trained on, never negative."""
    return np.maximum(model.predict(X[list(model.feature_names_in_)]), 0.0)


def naive_last_period(features: pd.DataFrame, window_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Spend and orders of the last period, scaled to ``window_days``: the feature window closest to it
    (30, 90 or 365 days; on a log scale)."""
    w = min(FEATURE_WINDOWS_DAYS, key=lambda d: abs(np.log(d / window_days)))
    scale = window_days / w
    return (features[f"spend_last_{w}d"].to_numpy(float) * scale,
            features[f"orders_last_{w}d"].to_numpy(float) * scale)


# ---------------------------------------------------------------------------------------------
# one window: actuals of a cutoff's customers and the BTYD family's predictions
# ---------------------------------------------------------------------------------------------


@dataclass
class _Window:
    cutoff: date
    features: pd.DataFrame
    spend: np.ndarray  # actual spend in the window after the cutoff
    purchases: np.ndarray  # actual purchase days
    ready: bool


def _window(data: CutoffData, cutoff: date, ids) -> _Window:
    feats = data.features(cutoff, customers=ids)
    out = data.outcomes(cutoff, customers=ids)
    ready = len(feats) >= MIN_TRAIN_CUSTOMERS and len(out) > 0 and bool(out.value_window_complete.all())
    joined = feats[["customer_id"]].merge(out, on="customer_id", how="left")
    return _Window(cutoff, feats, joined.spend_value_window.fillna(0).to_numpy(float),
                   joined.purchase_days_value_window.fillna(0).to_numpy(float), ready)


def _family_predictions(summary: BtydSummary, w: _Window, *, window_days: int, churn_horizon_days: int,
                        leads: LeadRates, notes: list[str], label: str) -> dict[str, tuple[BtydFit, pd.DataFrame]]:
    """Each BTYD family member fitted on ``summary`` (every buyer at the window's cutoff, ``btyd_summary``),
    predicting the window for the window's customers."""
    out = {}
    for family in BTYD_FAMILY:
        try:
            fit = fit_btyd(summary, family)
            out[family] = (fit, btyd_predict(fit, w.features, horizon_days=window_days, churn_horizon_days=churn_horizon_days,
                                             annual_discount_rate=0.0, leads=leads, with_clv=False))
        except (btyd.BtydFitError, FloatingPointError, ValueError) as exc:
            notes.append(f"{btyd_model_name(family)} not fitted at the {label} cutoff {w.cutoff}: {exc}")
    return out


def _purchase_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"poisson_deviance": poisson_deviance(actual, predicted),
            "total_ratio": float(predicted.sum() / actual.sum()) if actual.sum() > 0 else float("nan"),
            "n_customers": float(len(actual))}


def _improves(ratio: float, factor: float) -> bool:
    return bool(np.isfinite(ratio) and np.isfinite(factor) and abs(ratio * factor - 1) < abs(ratio - 1))


@model_threads()
def run_value_models(
    data: CutoffData,
    *,
    windows: Windows,
    annual_discount_rate: float,
    run_id: str,
    max_train_rows: int = TRAIN_ROWS,
    max_eval_rows: int = EVAL_ROWS,
    batch_rows: int = PREDICT_BATCH_ROWS,
    bootstrap: int = BOOTSTRAP_FITS,
) -> ValueResult:
    """Choose, back-test and apply the value models (see the module docstring).

    BTYD models are fitted on every customer of a cutoff. On large populations the learned model trains on a
    random sample of at most ``max_train_rows`` customers, and the back-test compares all models on the same
    random sample of at most ``max_eval_rows`` customers of the held-out cutoff. Every customer is predicted
    (in batches of ``batch_rows``)."""
    as_of, H, L, h = windows.as_of, windows.clv_horizon_days, windows.value_window_days, windows.churn_horizon_days
    notes: list[str] = list(windows.notes)
    performance: list[dict] = []
    fits: dict[str, BtydFit] = {}
    card: dict = {"windows": {"value_window_days": L, "clv_horizon_days": H, "test_cutoff": str(windows.value_test),
                              "selection_cutoff": str(windows.value_train)}}
    now = data.btyd_summary(as_of)
    test_ids = data.sample(windows.value_test, max_eval_rows, seed=1)
    train_ids = data.sample(windows.value_train, max_train_rows)
    test = _window(data, windows.value_test, test_ids)
    sel = _window(data, windows.value_train, train_ids)
    for name, ids, cutoff in (("back-test", test_ids, windows.value_test), ("training", train_ids, windows.value_train)):
        if ids is not None:
            notes.append(f"{name} sample: {len(ids):,} of {data.count(cutoff):,} customers at {cutoff}")
    levels = data.category_levels([as_of, windows.value_test, windows.value_train], CATEGORICAL)
    kw = dict(churn_horizon_days=h, annual_discount_rate=annual_discount_rate)

    # leads at the as-of date behave like leads in the latest complete windows (scaled from L to H days)
    value_leads = leads_at(data, windows.value_test, "value")
    churn_leads = leads_at(data, windows.churn_test, "churn")
    leads_now = LeadRates(value_leads.purchases_per_lead, value_leads.spend_per_lead, churn_leads.no_purchase_share,
                          value_leads.purchases_high, value_leads.spend_high,
                          source=f"value window: {value_leads.source}; churn window: {churn_leads.source}").scaled(H / L)
    leads_sel = leads_at(data, windows.value_train, "value") if sel.ready else LeadRates()
    notes.append(f"lead rates from {leads_now.source}")

    # --- BTYD family: choice on the selection window ---------------------------------------
    chosen, chosen_on = None, None
    factors = {"purchases": float("nan"), "spend": float("nan")}
    if sel.ready:
        cands = _family_predictions(data.btyd_summary(sel.cutoff), sel, window_days=L, churn_horizon_days=h, leads=LeadRates(),
                                    notes=notes, label="selection")
        deviance = {}
        for family, (fit, pred) in cands.items():
            fits[f"selection_{family}"] = fit
            pm = _purchase_metrics(sel.purchases, pred.btyd_expected_purchases.to_numpy())
            deviance[family] = pm["poisson_deviance"]
            for metric, value in {**pm, **{f"spend_{k}": v for k, v in value_metrics(
                    sel.spend, pred.btyd_expected_spend.to_numpy()).items() if k in ("normalised_gini", "total_ratio")}}.items():
                performance.append(_row(run_id, as_of, btyd_model_name(family), windows.value_train, "btyd_selection", metric,
                                        value, None, windows.value_train, windows.value_train, windows.value_test, False))
        if deviance:
            chosen, chosen_on = min(deviance, key=deviance.get), "selection"
            pred = cands[chosen][1]
            factors = {"purchases": _safe_ratio(sel.purchases.sum(), pred.btyd_expected_purchases.sum()),
                       "spend": _safe_ratio(sel.spend.sum(), pred.btyd_expected_spend.sum())}
            for row in performance:
                if row["task"] == "btyd_selection" and row["model_name"] == btyd_model_name(chosen):
                    row["is_champion"] = True

    # --- back-test on the test window ------------------------------------------------------
    backtest = None
    champion = btyd_model_name(chosen or "bgnbd")
    window = dict(test_window_start=windows.value_test, test_window_end=as_of)
    if test.ready:
        backtest = pd.DataFrame({"customer_id": test.features.customer_id, "frequency": test.features.frequency,
                                 "n_orders": test.features.n_orders, "actual_spend": test.spend,
                                 "actual_purchases": test.purchases})
        scores: dict[str, dict] = {}
        purchase_scores: dict[str, dict] = {}
        naive_spend, naive_orders = naive_last_period(test.features, L)
        backtest[NAIVE_MODEL] = naive_spend
        scores[NAIVE_MODEL] = value_metrics(test.spend, naive_spend)
        purchase_scores[NAIVE_MODEL] = _purchase_metrics(test.purchases, naive_orders)
        test_summary = data.btyd_summary(test.cutoff)
        fam = _family_predictions(test_summary, test, window_days=L, churn_horizon_days=h, leads=leads_sel, notes=notes,
                                  label="back-test")
        for family, (fit, pred) in fam.items():
            fits[f"backtest_{family}"] = fit
            name = btyd_model_name(family)
            backtest[name] = pred.btyd_expected_spend.to_numpy()
            scores[name] = value_metrics(test.spend, backtest[name])
            purchase_scores[name] = _purchase_metrics(test.purchases, pred.btyd_expected_purchases.to_numpy())
        if chosen is None and fam:
            chosen, chosen_on = min(fam, key=lambda f: purchase_scores[btyd_model_name(f)]["poisson_deviance"]), "test"
            notes.append(f"{btyd_model_name(chosen)} chosen on the test window (no earlier window with "
                         f"{MIN_TRAIN_CUSTOMERS} customers): its back-test metrics are optimistic")
        if chosen in fam:
            bt = fam[chosen][1]
            backtest["btyd_expected_purchases"] = bt.btyd_expected_purchases.to_numpy()
            champion = btyd_model_name(chosen)
            # bias correction: the selection window's factor must improve the test window's totals
            for what, key in (("purchases", "btyd_expected_purchases"), ("spend", "btyd_expected_spend")):
                ratio = float(bt[key].sum() / max((test.purchases if what == "purchases" else test.spend).sum(), 1e-12))
                if _improves(ratio, factors[what]):
                    target = scores[champion] if what == "spend" else purchase_scores[champion]
                    target["total_ratio_corrected"] = ratio * factors[what]
                    factors[what] = _safe_ratio(1.0, ratio)  # production: corrected by the newest window's bias
                    notes.append(f"{what} totals corrected by {factors[what]:.3f} (bias on the selection window "
                                 f"also fixes the test window: {ratio:.3f} -> {target['total_ratio_corrected']:.3f})")
                else:
                    factors[what] = float("nan")
            # 80 % intervals: coverage of what happened in the test window
            try:
                boot = bootstrap_fits(chosen, test_summary, n_boot=bootstrap, seed=0)
                buyer, x, tx, T, m = _buyers(test.features)
                iv = predictive_intervals(chosen, boot, x, tx, T, m, horizon=L, level=INTERVAL_LEVEL, seed=1)
                pc = purchase_scores[champion]
                # counts tie: an "80 %" interval holds more than 80 % by the model's own probability
                # (interval_probability), which is what the observed coverage is to be compared with
                pc["interval_coverage"] = interval_coverage(iv.expected_purchases_low, iv.expected_purchases_high,
                                                            test.purchases[buyer])
                pc["interval_probability"] = float(iv.purchases_interval_prob.mean())
                scores[champion]["interval_coverage"] = interval_coverage(iv.spend_low, iv.spend_high, test.spend[buyer])
                scores[champion]["interval_probability"] = float(iv.spend_interval_prob.mean())
            except (btyd.BtydFitError, ValueError) as exc:
                notes.append(f"interval coverage not measured: {exc}")
        else:
            notes.append("no BTYD model could be fitted at the back-test cutoff")
        # learned model: trained at as_of - 2L on the selection window, tested on the test window
        sel_fit = fits.get(f"selection_{chosen}") if chosen else None
        if sel.ready and sel_fit is not None and chosen in fam:
            # the selection window's predictions of the chosen model (same fit, rows, horizon and leads)
            bt_train = cands[chosen][1]
            model = train_spend_model(design_matrix(sel.features, bt_train, levels), sel.spend, max_rows=max_train_rows)
            backtest[LEARNED_MODEL] = predict_spend(model, design_matrix(test.features, fam[chosen][1], levels))
            scores[LEARNED_MODEL] = value_metrics(test.spend, backtest[LEARNED_MODEL])
        else:
            notes.append(f"learned model not back-tested: {len(sel.features)} customers at {windows.value_train} "
                         f"(need {MIN_TRAIN_CUSTOMERS}, a complete outcome window and a BTYD fit there)")
        candidates = {k: v for k, v in scores.items() if k in (champion, LEARNED_MODEL)}
        if candidates:
            champion = max(candidates, key=lambda k: (np.nan_to_num(candidates[k]["normalised_gini"], nan=-1),
                                                      k != LEARNED_MODEL))
        if champion == LEARNED_MODEL:
            factors["spend"] = float("nan")  # validated for the BTYD model only
        for model_name, metrics in scores.items():
            train_start = windows.value_train if model_name == LEARNED_MODEL else None
            for metric, value in metrics.items():
                performance.append(_row(run_id, as_of, model_name, windows.value_test, "clv_spend", metric, value,
                                        train_start, windows.value_test if model_name not in NAIVE_MODELS else None,
                                        **window, is_champion=model_name == champion))
        for model_name, metrics in purchase_scores.items():
            for metric, value in metrics.items():
                performance.append(_row(run_id, as_of, model_name, windows.value_test, "clv_purchases", metric, value,
                                        None, windows.value_test if model_name not in NAIVE_MODELS else None,
                                        **window, is_champion=model_name == btyd_model_name(chosen or "")))
    else:
        notes.append(
            f"no back-test: {len(test.features)} customers at {windows.value_test} or its outcome window is incomplete "
            f"(the value models need {MIN_TRAIN_CUSTOMERS} customers known {L} days before the as-of date)"
        )

    # --- production at the as-of date -------------------------------------------------------
    if chosen is None:
        chosen = _best_by_likelihood(now, notes)
        champion = btyd_model_name(chosen)
    fits["production"] = production = fit_btyd(now, chosen)
    learned = None
    if champion == LEARNED_MODEL:
        # trained on the test window, with the BTYD outputs the back-test already computed there
        learned = train_spend_model(design_matrix(test.features, fam[chosen][1], levels), test.spend,
                                    max_rows=max_train_rows)
        if L < H:
            notes.append(f"learned model predicts {L} days; scaled to {H} days by the {production.name} ratio per customer")
    scorer = ValueScorer(production, as_of, H, L, h, annual_discount_rate, leads_now,
                         _interval_draws(production, now, bootstrap, notes), factors, learned, levels, batch_rows)
    card.update(
        champion=champion, btyd_model=btyd_model_name(chosen), btyd_chosen_on=chosen_on or "log-likelihood at the as-of date",
        parameters=production.as_dict(), gamma_gamma_independence=now.corr,
        bias_factors={k: (v if np.isfinite(v) else None) for k, v in factors.items()}, leads=leads_now.source,
    )
    return ValueResult(scorer, data, performance, champion, fits, notes, backtest, chosen, card)


def _safe_ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _best_by_likelihood(now: BtydSummary, notes: list[str]) -> str:
    """Without a back-test window: the family member with the highest log-likelihood (same parameter count)."""
    best, best_ll = "bgnbd", -np.inf
    for family in BTYD_FAMILY:
        try:
            with threadpool_limits(1, user_api="blas"):
                ll = MODELS[family].fit(now.x, now.tx, now.T, weights=now.n).log_likelihood
        except (btyd.BtydFitError, FloatingPointError, ValueError):
            continue
        if ll > best_ll:
            best, best_ll = family, ll
    notes.append(f"{btyd_model_name(best)} chosen by log-likelihood at the as-of date (no back-test window)")
    return best


def _interval_draws(fit: BtydFit, now: BtydSummary, bootstrap: int, notes: list[str]) -> list | None:
    """The parameter draws the production intervals simulate from: the point fit and ``bootstrap`` refits on
    resampled customers (None, noted, when they cannot be had: intervals are then the point predictions)."""
    try:
        return [(fit.params, fit.gg)] + bootstrap_fits(fit.model, now, n_boot=bootstrap, seed=0)
    except (btyd.BtydFitError, ValueError) as exc:
        notes.append(f"intervals from the point fit only: {exc}")
        return None


def _hold_point(result: pd.DataFrame) -> None:
    """An interval always holds its own point prediction (the point is a mean, the ends are quantiles of a
    skewed distribution: a likely-dead customer's [0, 0] becomes [0, mean])."""
    for point in ("expected_purchases", "clv"):
        result[f"{point}_low"] = np.minimum(result[f"{point}_low"], result[point])
        result[f"{point}_high"] = np.maximum(result[f"{point}_high"], result[point])


def _row(run_id, as_of, model_name, version_cutoff, task, metric, value, train_start, train_end,
         test_window_start, test_window_end, is_champion) -> dict:
    return dict(run_id=run_id, as_of_date=as_of, model_name=model_name, model_version=f"{model_name}@{version_cutoff}",
                task=task, metric=metric, value=float(value), train_window_start=train_start, train_window_end=train_end,
                test_window_start=test_window_start, test_window_end=test_window_end, is_champion=is_champion)


MIN_HISTORY = (
    "Minimum history: a back-test needs 200 customers known one value window (the CLV horizon, or with less than "
    "two horizons of history the longest window that fits: ml/windows.py) before the as-of date; the BTYD choice "
    "and the bias correction need one more window before that (selection window), the learned model too. With "
    "less, the BTYD model with the best likelihood at the as-of date is used without a back-test, and leads get 0."
)


def value_card_markdown(version: str, result: ValueResult, lineage) -> str:
    """The value models' card for people: lineage, windows, the candidates' back-test, the choice and why."""
    card = result.card
    perf = pd.DataFrame(result.performance)
    tables = []
    for task, title in (("clv_spend", "Spend over the test window"), ("clv_purchases", "Purchases over the test window"),
                        ("btyd_selection", "BTYD choice on the selection window")):
        part = perf[perf.task == task] if len(perf) else perf
        if len(part):
            pivot = part.pivot_table(index="model_name", columns="metric", values="value")
            cols = [c for c in ("normalised_gini", "spearman", "total_ratio", "total_ratio_corrected", "interval_coverage",
                                "poisson_deviance", "spend_normalised_gini", "spend_total_ratio", "n_customers")
                    if c in pivot]
            head = "| model | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
            rows = "".join(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |\n" for name, row in pivot.iterrows())
            tables.append(f"## {title}\n\n{head}{rows}")
    w = card.get("windows", {})
    corr = card.get("gamma_gamma_independence", float("nan"))
    return (
        f"# Model card: value / {version}\n\n"
        f"- champion: {result.champion}; BTYD model: {card.get('btyd_model')} (chosen on: {card.get('btyd_chosen_on')})\n"
        f"- lineage: warehouse `{lineage.warehouse}`, source `{lineage.source}`\n"
        f"- windows: value window {w.get('value_window_days')} days (CLV horizon {w.get('clv_horizon_days')}); "
        f"test cutoff {w.get('test_cutoff')}, selection cutoff {w.get('selection_cutoff')}\n"
        f"- Gamma-Gamma independence check: correlation of repeat purchases and mean repeat spend = {corr:.3f} "
        f"(near 0 supports the model's assumption)\n"
        f"- bias correction factors (applied only where they improved the held-out totals): {card.get('bias_factors')}\n"
        f"- parameters at the as-of date: `{card.get('parameters')}`\n"
        f"- leads: {card.get('leads')}\n\n{MIN_HISTORY}\n\n" + "\n".join(tables)
        + ("\n## Notes\n\n" + "\n".join(f"- {n}" for n in result.notes) + "\n" if result.notes else "")
    )
