"""Churn: labels without leakage, a calibrated gradient-boosting model, two baselines, reason codes.

Churn at a cutoff = no completed purchase in the ``churn_horizon_days`` after it (``customer_outcomes``).

Windows (``ml/windows.py``; h = churn horizon; every cutoff's features come from
``customer_features_history``, the same dbt code that builds the scoring features):

* **back-test**: train on cutoffs ``as_of - 2h`` and ``as_of - 3h`` (stacked; labels end by
  ``as_of - h``), test on cutoff ``as_of - h`` (labels end at the as-of date). No test label is seen in
  training.
* **production**: the same procedure moved one window later: train on ``as_of - h`` and ``as_of - 2h``,
  score the as-of date.
Every stacked cutoff with enough customers is used; at an early cutoff where the BTYD model cannot be
fitted the rows come without the BTYD features. Minimum history: one complete churn window (h days before
the as-of date) with ``CRM_CHURN_MIN_CUSTOMERS`` customers trains the production model; a back-test also
needs one earlier window (2h days of history).

Model: HistGradientBoostingClassifier with balanced class weights, calibrated (isotonic with at least
2,000 calibration rows, else sigmoid) on customers held out of the fit. Baselines on the same rows:
logistic regression (same calibration), the chosen BTYD model's probability of no purchase in the horizon,
and recency (days since the last purchase). The decisions around them (reuse, retrain, promote, fall back)
live in ``ml/churn_lifecycle.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ml import btyd
from ml.metrics import churn_metrics
from ml.threads import model_threads
from ml.tree_effects import TreeEffects
from ml.cutoff_data import TRAIN_ROWS, CutoffData
from ml.value_models import BTYD_COLUMNS, BtydFit, LeadRates, btyd_predict, design_matrix, fit_btyd

CHURN_MODEL = "churn_hgb"
LOGIT_BASELINE = "churn_logit"
BTYD_CHURN = "churn_btyd"  # the BTYD model's P(no purchase in the horizon), named churn_<model> in model_performance
DEFAULT_MIN_CUSTOMERS = 500
SCORE_BATCH_ROWS = 100_000  # every customer is scored, this many at a time


class ChurnTrainingError(RuntimeError):
    """The churn model cannot be trained; the message says why. The pipeline falls back to BG/NBD."""


@dataclass
class TrainingSet:
    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray  # customer ids, so one customer's rows never straddle fit and calibration
    btyd_quiet: np.ndarray  # BG/NBD P(no purchase in horizon) for the same rows
    cutoffs: list[date]


def cutoff_rows(data: CutoffData, cutoff, *, horizon_days, levels, clv_horizon_days, with_labels=True,
                customers=None, fits: dict | None = None, feats: pd.DataFrame | None = None,
                btyd_model: str = "bgnbd"):
    """Features (+ BTYD outputs fitted at the cutoff on all its customers) and, if asked, labels for one
    cutoff: every customer, those in ``customers``, or the rows given as ``feats``. Pass the same
    ``fits`` dict to calls on the same data to fit the BTYD model once per cutoff. Where the BTYD model
    cannot be fitted (too few repeat buyers at an early cutoff), the rows come without the BTYD features
    (null: the gradient-boosting model handles missing values) instead of failing."""
    fit = btyd_fit_at(data, cutoff, fits, btyd_model)
    if feats is None:
        feats = data.features(cutoff, customers=customers)
    if feats.empty:
        raise ChurnTrainingError(f"no customers known at cutoff {cutoff}")
    X, bt = design_rows(feats, fit, horizon_days=horizon_days, clv_horizon_days=clv_horizon_days, levels=levels)
    y = None
    if with_labels:
        outcomes = data.outcomes(cutoff, ["customer_id", "churned", "churn_window_complete"], customers=customers)
        out = feats[["customer_id"]].merge(outcomes, on="customer_id", how="left")
        if not out.churn_window_complete.fillna(False).all():
            raise ChurnTrainingError(f"the churn window after {cutoff} is not complete by the as-of date")
        y = out.churned.astype(bool).to_numpy().astype(int)
    return feats, X, y, bt.btyd_prob_no_purchase_churn.to_numpy()


def design_rows(feats: pd.DataFrame, fit: BtydFit | None, *, horizon_days, clv_horizon_days, levels):
    """The model's inputs for feature rows ``feats``: the features and the BTYD outputs of ``fit`` (null where
    there is no fit); returns (X, the BTYD outputs)."""
    if fit is not None:
        bt = btyd_predict(fit, feats, horizon_days=clv_horizon_days, churn_horizon_days=horizon_days,
                          annual_discount_rate=0.0, leads=LeadRates(no_purchase_share=np.nan), with_clv=False)
    else:
        bt = pd.DataFrame({c: np.full(len(feats), np.nan) for c in [*BTYD_COLUMNS, "btyd_prob_no_purchase_churn"]})
    X = design_matrix(feats, bt, levels)
    X["btyd_prob_no_purchase"] = bt.btyd_prob_no_purchase_churn.to_numpy()
    return X, bt


def btyd_fit_at(data: CutoffData, cutoff, fits: dict | None = None, model: str = "bgnbd") -> BtydFit | None:
    """The BTYD model fitted on every customer of a cutoff (reads only the summary columns); None where it
    cannot be fitted (the reason is kept in ``fits["notes"]``)."""
    key = (cutoff, model)
    if fits is not None and key in fits:
        return fits[key]
    try:
        fit = fit_btyd(data.btyd_summary(cutoff), model)
    except btyd.BtydFitError as exc:
        fit = None
        if fits is not None:
            fits.setdefault("notes", []).append(f"no BTYD features at {cutoff}: {exc}")
    if fits is not None:
        fits[key] = fit
    return fit


MIN_CUTOFF_CUSTOMERS = 50  # a stacked cutoff with fewer customers adds nothing but noise


def training_set(data: CutoffData, cutoffs, *, horizon_days, clv_horizon_days, levels,
                 max_rows: int = TRAIN_ROWS, seed: int = 0, fits: dict | None = None,
                 btyd_model: str = "bgnbd") -> TrainingSet:
    """Stacked examples from every cutoff that has ``MIN_CUTOFF_CUSTOMERS`` customers and a complete churn
    window; at most ``max_rows`` in all, a random sample of customers drawn evenly per cutoff (the BTYD model
    is fitted on every customer of a cutoff, the sample only is read)."""
    usable = [c for c in cutoffs if data.count(c) >= MIN_CUTOFF_CUSTOMERS]
    if not usable:
        raise ChurnTrainingError(
            f"no churn training cutoff with {MIN_CUTOFF_CUSTOMERS} customers among {', '.join(map(str, cutoffs)) or 'none'} "
            "(the history before the as-of date is shorter than two churn horizons)")
    per_cutoff = max(1, max_rows // len(usable))
    parts = []
    for c in usable:
        parts.append(cutoff_rows(data, c, horizon_days=horizon_days, levels=levels, clv_horizon_days=clv_horizon_days,
                                 customers=data.sample(c, per_cutoff, seed), fits=fits, btyd_model=btyd_model))
    return TrainingSet(
        X=pd.concat([p[1] for p in parts], ignore_index=True),
        y=np.concatenate([p[2] for p in parts]),
        groups=np.concatenate([p[0].customer_id.to_numpy() for p in parts]),
        btyd_quiet=np.concatenate([p[3] for p in parts]),
        cutoffs=list(usable),
    )


@dataclass
class ChurnModels:
    model: object  # calibrated HGB
    logit: object | None  # calibrated logistic regression (None when trained without the baseline)
    features: list[str]
    reference: pd.Series  # per feature: the training median (numeric) or mode (categorical)
    calibration: str
    n_train: int
    notes: list[str] = field(default_factory=list)
    levels: dict = field(default_factory=dict)  # categorical levels the model was trained with
    # which probability is published: the back-test winner among CHURN_MODEL, LOGIT_BASELINE and BTYD_CHURN
    # (reasons always come from the gradient-boosting model); leads get ``lead_share`` under BTYD_CHURN
    published: str = "churn_hgb"
    lead_share: float = float("nan")

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.clip(self.model.predict_proba(X[self.features])[:, 1], 0, 1)

    def predict_published(self, X: pd.DataFrame) -> np.ndarray:
        """The churn probability this model publishes (see ``published``)."""
        if self.published == LOGIT_BASELINE:
            return self.predict_logit(X)
        if self.published == BTYD_CHURN:
            quiet = X["btyd_prob_no_purchase"].to_numpy(float)
            return np.clip(np.where(np.isnan(quiet), self.lead_share, quiet), 0, 1)
        return self.predict(X)

    def predict_logit(self, X: pd.DataFrame) -> np.ndarray:
        if self.logit is None:
            raise ValueError("this churn model was trained without the logistic baseline")
        return np.clip(self.logit.predict_proba(X[self.features])[:, 1], 0, 1)


def _logit_pipeline(X: pd.DataFrame):
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    transform = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore", min_frequency=20)), categorical),
    ])
    return make_pipeline(transform, LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5))


@model_threads()
def train_churn_models(ts: TrainingSet, *, min_customers: int = DEFAULT_MIN_CUSTOMERS, seed: int = 0,
                       max_rows: int = TRAIN_ROWS, baseline: bool = True) -> ChurnModels:
    """Fit HGB (and, with ``baseline``, the logistic baseline) on 80 % of customers, calibrate on the other
    20 %. The baseline is only needed where models are compared (the back-test)."""
    n_customers = len(np.unique(ts.groups))
    if n_customers < min_customers:
        raise ChurnTrainingError(
            f"{n_customers} customers in the churn training window(s) {', '.join(map(str, ts.cutoffs))}; "
            f"the configured minimum is {min_customers} (CRM_CHURN_MIN_CUSTOMERS)"
        )
    classes = np.unique(ts.y)
    if len(classes) < 2:
        what = "churned" if classes[0] == 1 else "bought again"
        raise ChurnTrainingError(
            f"every one of the {len(ts.y)} training examples {what} in the churn window: a classifier needs both "
            "outcomes (use a longer history or another churn horizon)"
        )
    X, y, groups = ts.X, ts.y, ts.groups
    if len(X) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
        X, y, groups = X.iloc[keep].reset_index(drop=True), y[keep], groups[keep]
    notes = []
    empty = [c for c in X.columns if X[c].isna().all()]
    if empty:
        notes.append(f"features null throughout, left out: {', '.join(empty)}")
    X = X.drop(columns=empty)
    fit_idx, cal_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed).split(X, y, groups))
    if len(np.unique(y[cal_idx])) < 2 or len(np.unique(y[fit_idx])) < 2:
        raise ChurnTrainingError("the calibration split holds a single class; too few examples of one outcome")
    hgb = HistGradientBoostingClassifier(
        learning_rate=0.1, max_iter=300, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
        class_weight="balanced", early_stopping=True, validation_fraction=0.15, n_iter_no_change=20,
        categorical_features="from_dtype", random_state=seed,
    )
    hgb.fit(X.iloc[fit_idx], y[fit_idx])
    method = "isotonic" if len(cal_idx) >= 2000 else "sigmoid"
    model = CalibratedClassifierCV(FrozenEstimator(hgb), method=method).fit(X.iloc[cal_idx], y[cal_idx])
    logit_cal = None
    if baseline:
        logit = _logit_pipeline(X).fit(X.iloc[fit_idx], y[fit_idx])
        logit_cal = CalibratedClassifierCV(FrozenEstimator(logit), method=method).fit(X.iloc[cal_idx], y[cal_idx])
    reference = pd.Series({c: (X[c].mode().iloc[0] if isinstance(X[c].dtype, pd.CategoricalDtype) and X[c].notna().any()
                               else X[c].median()) for c in X.columns})
    return ChurnModels(model, logit_cal, list(X.columns), reference, method, len(X), notes)


# ---------------------------------------------------------------------------------------------
# reason codes
# ---------------------------------------------------------------------------------------------
#
# A reason is a behaviour the customer or the account team can act on, or that a manager recognises: the
# purchase rhythm, orders and spend, complaints and tickets, contacts, campaign responses, satisfaction and
# NPS answers.
# Three rules keep the words honest (tests/test_reasons.py checks them on unit models and on a real run):
# 1. Only behaviours are named. The profile (country, region, age band, gender, acquisition channel,
#    preferred channel, top category, B2B, consent) moves the model's score but is nothing anyone can act
#    on; where nothing else raises the risk the text says that the profile does, without naming it alone.
# 2. A behaviour is named only when it raises this customer's risk (a positive contribution) AND its value
#    lies on the side its direction calls risky (``_DIRECTION``: more complaints, fewer visits, ...). The
#    trees can score a safe value up ("answers 50 % of campaigns" where the typical customer answers 5 %):
#    that difference is noise of the fit, and the words would tell the reader the opposite. A feature
#    without a declared direction is never named.
# 3. A count of zero is worded as an absence ("no web visits in the last 90 days"), never "only 0".

RISK_UP, RISK_DOWN = 1, -1  # more of it is riskier / less of it is riskier
_DIRECTION = {
    "open_tickets": RISK_UP, "unresolved_tickets": RISK_UP, "complaints_total": RISK_UP,
    "unresolved_complaints": RISK_UP, "n_cancelled": RISK_UP, "n_refunded": RISK_UP,
    "days_since_last_interaction": RISK_UP,
    "last_satisfaction_score": RISK_DOWN, "last_nps_score": RISK_DOWN, "campaign_response_rate": RISK_DOWN,
    "order_trend": RISK_DOWN, "orders_last_90d": RISK_DOWN, "orders_last_365d": RISK_DOWN,
    "spend_last_90d": RISK_DOWN, "spend_last_365d": RISK_DOWN, "monetary_mean": RISK_DOWN,
    "monetary_total": RISK_DOWN, "repeat_spend_mean": RISK_DOWN, "n_categories": RISK_DOWN,
}
# n_<interaction type>_<d>d, n_channel_<channel>_<d>d and n_interactions_<d>d: (singular, plural, direction)
_COUNT = re.compile(r"n_(.+)_(\d+)d")
_TYPE_WORDS = {
    "support_ticket": ("support ticket", "support tickets", RISK_UP),
    "complaint": ("complaint", "complaints", RISK_UP),
    "campaign_response": ("campaign response", "campaign responses", RISK_DOWN),
    "email_open": ("e-mail opened", "e-mails opened", RISK_DOWN),
    "email_click": ("e-mail click", "e-mail clicks", RISK_DOWN),
    "web_visit": ("web visit", "web visits", RISK_DOWN),
    "survey": ("survey answer", "survey answers", None),  # answering a survey or not is no warning sign
    "interactions": ("contact", "contacts", RISK_DOWN),
}
_CHANNEL_WORDS = {"email": "e-mail", "social": "social media"}
# features whose missing value is itself the risky side (no contact at all; no campaign ever opened)
_MISSING_IS_RISK = {"days_since_last_interaction", "campaign_response_rate"}
_MISSING = {
    "days_since_last_interaction": "no contact on record",
    "last_nps_score": "no NPS answer on record",
    "last_satisfaction_score": "no satisfaction survey on record",
    "campaign_response_rate": "has not opened any campaign",
    "monetary_mean": "no purchase yet",
    "repeat_spend_mean": "no repeat purchase yet",
    "top_category_share": "no purchase yet",
}
# The customer's profile: never named as a reason (rule 1); its joint contribution picks the fallback text.
PROFILE_FEATURES = ["country", "region", "acquisition_channel", "age_band", "gender", "preferred_channel",
                    "top_category", "is_b2b", "marketing_consent"]
# where no behaviour qualifies; the second where the profile raises the risk (rule 1)
NOTHING_TEXT = "no behaviour raises the risk above a typical customer's"
PROFILE_TEXT = NOTHING_TEXT + "; customers with this profile churn more often"


def _count(v: float, one: str, many: str, *, only: bool = False, zero: str | None = None) -> str:
    """``3 complaints``, ``1 complaint``, ``only 1 web visit``; zero as an absence (``no complaints``)."""
    if round(v) == 0:
        return zero or f"no {many}"
    return f"{'only ' if only else ''}{v:.0f} {one if round(v) == 1 else many}"


def _days(v: float) -> str:
    return f"{v:.0f} day" + ("" if round(v) == 1 else "s")


def _ago(v: float) -> str:
    return "on the as-of date" if round(v) == 0 else f"{_days(v)} ago"


def _trend_text(v: float, low: bool) -> str:
    """``order_trend`` = (last 90 days - the 90 before) / (both): -1 when the orders stopped."""
    if v <= -1:
        return "no orders in the last 90 days after some in the 90 before"
    if v < 0:
        return "fewer orders in the last 90 days than in the 90 before"
    if v == 0:
        return "as many orders in the last 90 days as in the 90 before"
    return "more orders in the last 90 days than in the 90 before"


def _money(v: float, low: bool, what: str, zero: str) -> str:
    return zero if round(v) == 0 else f"{what} {'only ' if low else ''}{v:,.0f}"


# plain words per feature: f(value, below_reference) -> text
_PLAIN = {
    "recency_days": lambda v, low: f"no purchase for {_days(v)}" if round(v) > 0 else "bought on the as-of date",
    "unresolved_complaints": lambda v, low: _count(v, "unresolved complaint", "unresolved complaints"),
    "unresolved_tickets": lambda v, low: _count(v, "unresolved ticket", "unresolved tickets"),
    "open_tickets": lambda v, low: _count(v, "open ticket", "open tickets"),
    "complaints_total": lambda v, low: _count(v, "complaint", "complaints") + " so far",
    "n_cancelled": lambda v, low: _count(v, "cancelled order", "cancelled orders"),
    "n_refunded": lambda v, low: _count(v, "refunded order", "refunded orders"),
    "last_satisfaction_score": lambda v, low: f"last satisfaction score {v:.0f}/5",
    "last_nps_score": lambda v, low: f"last NPS answer {v:.0f}/10",
    "order_trend": _trend_text,
    "n_orders": lambda v, low: (_count(v, "purchase", "purchases", only=low) + " so far") if round(v) else "no purchase yet",
    "frequency": lambda v, low: _count(v, "repeat purchase", "repeat purchases", only=low, zero="no repeat purchase"),
    "monetary_mean": lambda v, low: f"average order {'only ' if low else ''}{v:,.0f}",
    "repeat_spend_mean": lambda v, low: f"average repeat order {'only ' if low else ''}{v:,.0f}",
    "monetary_total": lambda v, low: _money(v, low, "spent", "no spend yet") + (" so far" if v else ""),
    "tenure_days": lambda v, low: f"customer for {'only ' if low else ''}{_days(v)}",
    "days_since_last_interaction": lambda v, low: (f"no contact for {_days(v)}" if round(v) > 0
                                                   else "in contact on the as-of date"),
    "campaign_response_rate": lambda v, low: ("answered none of the campaigns they opened" if v == 0 else
                                              "answered under 1% of the campaigns they opened" if v < 0.005 else
                                              f"answered {'only ' if low else ''}{v:.0%} of the campaigns they opened"),
    "p_alive": lambda v, low: f"{v:.0%} likely still active (BTYD)",
    "btyd_prob_no_purchase": lambda v, low: f"BTYD: {v:.0%} chance of no purchase",
    "btyd_expected_purchases": lambda v, low: f"{v:.1f} purchases expected (BTYD)",
    "orders_last_90d": lambda v, low: _count(v, "order", "orders", only=low) + " in the last 90 days",
    "orders_last_365d": lambda v, low: _count(v, "order", "orders", only=low) + " in the last year",
    "orders_prev_90d": lambda v, low: _count(v, "order", "orders") + " in the 90 days before the last 90",
    "spend_last_90d": lambda v, low: _money(v, low, "spent", "no spend") + " in the last 90 days",
    "spend_last_365d": lambda v, low: _money(v, low, "spent", "no spend") + " in the last year",
    "spend_prev_90d": lambda v, low: _money(v, low, "spent", "no spend") + " in the 90 days before the last 90",
    "n_categories": lambda v, low: ("no category bought yet" if round(v) == 0 else
                                    f"buys in {'only ' if low else ''}{_count(v, 'category', 'categories')}"),
    "top_category_share": lambda v, low: f"{v:.0%} of purchases in one category",
    "purchase_rate_per_year": lambda v, low: f"{v:.1f} purchases a year",
    "has_purchased": lambda v, low: "has purchased" if v else "no purchase yet",
    "is_b2b": lambda v, low: "business customer" if v else "consumer",
    "marketing_consent": lambda v, low: "marketing consent given" if v else "no marketing consent",
}


def _count_feature(name: str):
    """(singular, plural, direction, days) of an ``n_<what>_<d>d`` count feature, else None."""
    m = _COUNT.fullmatch(name)
    if not m:
        return None
    what, days = m.group(1), m.group(2)
    if what.startswith("channel_"):
        channel = what.removeprefix("channel_")
        words = _CHANNEL_WORDS.get(channel, channel)
        return f"{words} contact", f"{words} contacts", RISK_DOWN, days
    one, many, risk = _TYPE_WORDS.get(what, (what.replace("_", " "), what.replace("_", " "), None))
    return one, many, risk, days


def direction(name: str) -> int | None:
    """``RISK_UP`` (more is riskier), ``RISK_DOWN`` (less is riskier) or None (never named as a reason)."""
    count = _count_feature(name)
    return count[2] if count else _DIRECTION.get(name)


def describe_feature(name: str, value, reference) -> str:
    """Plain words for one feature's value, e.g. ``no purchase for 143 days``; ``only`` where the value is
    below the reference (the typical customer's) of a feature where less is riskier; zero as an absence."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return _MISSING.get(name, f"no {name.replace('_', ' ')} on record")
    if isinstance(value, str):
        return f"{name.replace('_', ' ')}: {value}"
    value = float(f"{float(value):.10g}")  # the same words whatever the last bits (sums in another order)
    numeric_reference = reference is not None and not isinstance(reference, str) and not pd.isna(reference)
    low = numeric_reference and direction(name) == RISK_DOWN and value < float(reference)
    count = _count_feature(name)
    if count:
        one, many, _, days = count
        return f"{_count(value, one, many, only=low)} in the last {days} days"
    words = _PLAIN.get(name)
    if words:
        return words(value, low)
    return f"{name.replace('_', ' ')} {value:,.2f}"


def risky_side(name: str, values, reference) -> np.ndarray:
    """Per value: does it lie on the side ``direction(name)`` calls risky, compared with ``reference``?
    A missing value counts as risky only for ``_MISSING_IS_RISK`` features; a feature without a
    direction never does (rule 2 above)."""
    values = np.asarray(values, dtype=float)
    d = direction(name)
    if d is None:
        return np.zeros(values.shape, dtype=bool)
    ref = float(reference) if reference is not None and not isinstance(reference, str) and not pd.isna(reference) \
        else np.nan
    with np.errstate(invalid="ignore"):
        side = (values - ref) * d > 0
    return np.where(np.isnan(values), name in _MISSING_IS_RISK, side)


# Features read together as one reason: the BTYD outputs summarise the purchase rhythm, so they are moved
# together with the raw recency, frequency, order count and age (days since sign-up, since the first
# purchase) they come from, and described in those terms.
RHYTHM = "purchase_rhythm"
RHYTHM_FEATURES = [
    "recency_days", "frequency", "n_orders", "has_purchased", "tenure_days", "btyd_recency_days", "btyd_t_days",
    "p_alive", "btyd_expected_purchases", "btyd_prob_no_purchase", "btyd_expected_spend", "btyd_expected_avg_spend",
    "purchase_rate_per_year", "recency_gap_ratio", "recency_tenure_ratio", "repeat_rate_per_year",
]


# ... and the complaints: how many so far, how many unresolved and how recent, read as one reason.
COMPLAINTS = "complaints"
COMPLAINT_FEATURES = ["complaints_total", "unresolved_complaints", "n_complaint_30d", "n_complaint_90d",
                      "n_complaint_365d"]
GROUPS = {RHYTHM: RHYTHM_FEATURES, COMPLAINTS: COMPLAINT_FEATURES}


def _units(features: list[str]) -> dict[str, list[str]]:
    """Reason units: each group (``GROUPS``) with its features present, then every other feature alone."""
    units: dict[str, list[str]] = {}
    for name, members in GROUPS.items():
        cols = [c for c in members if c in features]
        if cols:
            units[name] = cols
    grouped = {c for cols in units.values() for c in cols}
    units.update({c: [c] for c in features if c not in grouped})
    return units


def _at_reference(models: ChurnModels, part: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    moved = part.copy()
    for col in cols:
        if isinstance(part[col].dtype, pd.CategoricalDtype):
            moved[col] = pd.Categorical([models.reference[col]] * len(part), categories=part[col].cat.categories)
        else:
            moved[col] = models.reference[col]
    return moved


def tree_effects(models: ChurnModels, X: pd.DataFrame) -> TreeEffects:
    """The calibrated model's trees, with the training reference values as the "typical" customer."""
    return TreeEffects(models.model.estimator.estimator, models.features,
                       _at_reference(models, X[models.features].iloc[:1], models.features))


def feature_importance(models: ChurnModels, X: pd.DataFrame, sample: int = 5000,
                       effects: TreeEffects | None = None) -> dict[str, float]:
    """Mean absolute change of the (uncalibrated) risk score when a feature (or the purchase-rhythm
    group) is set to its training reference value, on up to ``sample`` customers."""
    part = X[models.features].iloc[: min(len(X), sample)]
    effects = effects or tree_effects(models, part)
    encoded = effects.encode(part)
    leaves = effects.leaves(encoded)
    per_tree = effects.per_tree(encoded, leaves)
    spread = {name: float(np.mean(np.abs(effects.difference(per_tree, encoded, cols, leaves))))
              for name, cols in _units(models.features).items()}
    return dict(sorted(spread.items(), key=lambda kv: -kv[1]))


def _rhythm_text(row: dict) -> str:
    """The purchase rhythm in words: against the customer's usual gap where they have one."""
    recency, freq = row.get("recency_days"), row.get("frequency")
    if recency is None or (isinstance(recency, float) and np.isnan(recency)):
        tenure = row.get("tenure_days")
        if tenure is None or (isinstance(tenure, float) and np.isnan(tenure)):
            return "no purchase yet"
        return f"no purchase since signing up {_ago(tenure)}"
    if not freq or (isinstance(freq, float) and np.isnan(freq)):
        return f"one purchase only, {_ago(recency)}"
    span = row.get("btyd_recency_days")
    gap = span / freq if span is not None and not (isinstance(span, float) and np.isnan(span)) else None
    if not gap:
        return f"no purchase for {_days(recency)}"
    if recency > gap:
        return f"no purchase for {_days(recency)} (usually every {_days(round(gap))})"
    return f"buys only every {_days(round(gap))} or so (last purchase {_ago(recency)})"


def _complaints_text(row: dict) -> str:
    """``3 complaints so far (1 in the last 30 days), 1 unresolved``, from the complaint features present."""
    def value(name):
        v = row.get(name)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)

    total, unresolved = value("complaints_total"), value("unresolved_complaints")
    windows = [(d, value(f"n_complaint_{d}d")) for d in (30, 90, 365)]
    recent = next(((d, v) for d, v in windows if v), None)
    if total:
        text = _count(total, "complaint", "complaints") + " so far"
        if recent and recent[1] < total:
            text += f" ({recent[1]:.0f} in the last {recent[0]} days)"
        return text + (f", {unresolved:.0f} unresolved" if unresolved else "")
    if unresolved:
        return _count(unresolved, "unresolved complaint", "unresolved complaints")
    if recent:
        return f"{_count(recent[1], 'complaint', 'complaints')} in the last {recent[0]} days"
    return "no complaints"


_GROUP_WORDS = {RHYTHM: (["recency_days", "frequency", "btyd_recency_days", "tenure_days"], _rhythm_text),
                COMPLAINTS: (COMPLAINT_FEATURES, _complaints_text)}


def _unit_words(models: ChurnModels, part: pd.DataFrame, unit: str) -> np.ndarray:
    """``describe_feature`` (or a group's text) for every row, computed once per distinct value."""
    if unit in _GROUP_WORDS:
        wanted, text = _GROUP_WORDS[unit]
        cols = [c for c in wanted if c in part]
        keys = part[cols].astype(float).reset_index(drop=True)
        if unit == RHYTHM and {"recency_days", "tenure_days"} <= set(cols):  # tenure is only said for prospects
            keys.loc[keys["recency_days"].notna(), "tenure_days"] = np.nan
        distinct = keys.drop_duplicates()
        described = distinct.assign(_text=[text(row) for row in distinct.to_dict("records")])
        return keys.merge(described, on=cols, how="left")["_text"].to_numpy(dtype=object)
    values = part[unit]
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    described = np.array([describe_feature(unit, v, models.reference[unit]) for v in uniques] +
                         [describe_feature(unit, None, models.reference[unit])], dtype=object)
    return described[np.where(codes < 0, len(uniques), codes)]


def nameable(unit: str) -> bool:
    """Can ``unit`` be named as a reason at all (a group, or a feature with a direction)?"""
    return unit in GROUPS or direction(unit) is not None


# Purchase facts the rhythm text already says: nothing of them is named for a customer without a purchase,
# and a window without orders or spend is not named when the last purchase is older than the window.
_PURCHASE_FACTS = {"monetary_total", "monetary_mean", "repeat_spend_mean", "n_categories", "order_trend",
                   "orders_last_90d", "orders_last_365d", "spend_last_90d", "spend_last_365d", "n_cancelled",
                   "n_refunded"}
_WINDOW_DAYS = {"orders_last_90d": 90, "spend_last_90d": 90, "orders_last_365d": 365, "spend_last_365d": 365}


def _said_by_rhythm(unit: str, part: pd.DataFrame) -> np.ndarray:
    """Rows where ``unit``'s words would only repeat the purchase rhythm ("no purchase since signing up
    400 days ago; no spend yet")."""
    if unit not in _PURCHASE_FACTS or "recency_days" not in part:
        return np.zeros(len(part), dtype=bool)
    recency = part["recency_days"].to_numpy(float)
    no_purchase = np.isnan(recency)
    if unit in _WINDOW_DAYS:
        with np.errstate(invalid="ignore"):
            return no_purchase | ((part[unit].to_numpy(float) == 0) & (recency > _WINDOW_DAYS[unit]))
    return no_purchase


def unit_risky_side(models: ChurnModels, part: pd.DataFrame, unit: str) -> np.ndarray:
    """Per row: may ``unit`` be named as raising the risk? The purchase rhythm always may (its words say
    where the customer stands); a group when one of its features lies on its risky side; a feature when it
    does (``risky_side``) and its words say more than the purchase rhythm."""
    if unit == RHYTHM:
        return np.ones(len(part), dtype=bool)
    cols = [c for c in GROUPS.get(unit, [unit]) if c in part]
    side = np.zeros(len(part), dtype=bool)
    for col in cols:
        side |= risky_side(col, part[col].to_numpy(float), models.reference[col])
    return side & ~_said_by_rhythm(unit, part)


def reason_codes(models: ChurnModels, X: pd.DataFrame, *, top_units: int = 12, batch: int = SCORE_BATCH_ROWS,
                 min_effect: float = 0.05, importance: dict[str, float] | None = None,
                 effects: TreeEffects | None = None) -> pd.Series:
    """Up to three behaviours pushing each customer's churn risk up, in plain words.

    For the ``top_units`` most important behaviours (the purchase rhythm and the complaints count as one
    each; profile features and features without a direction are never candidates), a reason's
    contribution is ``risk(x) - risk(x with it at the training reference)`` on the model's log-odds scale:
    positive when the customer's actual value raises their risk. A behaviour is named when its
    contribution exceeds ``min_effect`` and ``unit_risky_side`` allows it; the largest come first. Where no
    behaviour qualifies the text says so, and whether the profile raises this customer's risk
    (``NOTHING_TEXT``, ``PROFILE_TEXT``): the profile is never named on its own. The calibration is
    monotone, so ranking on the uncalibrated model's decision function gives the same order. The
    differences are exact and computed on the trees that split on the unit only (``ml.tree_effects``);
    customers are processed in batches. ``effects`` (``tree_effects(models, ...)``) may be passed to reuse one
    model's prepared trees across calls.
    """
    Xf = X[models.features]
    effects = effects or tree_effects(models, Xf)
    units = _units(models.features)
    importance = importance if importance is not None else feature_importance(models, X, effects=effects)
    candidates = [u for u, v in importance.items() if v > 0 and u in units and nameable(u)][:top_units]
    profile = [c for c in PROFILE_FEATURES if c in models.features]
    texts = np.empty(len(Xf), dtype=object)
    for start in range(0, len(Xf), batch):
        part = Xf.iloc[start:start + batch]
        encoded = effects.encode(part)
        leaves = effects.leaves(encoded)
        per_tree = effects.per_tree(encoded, leaves)
        contrib = np.column_stack([effects.difference(per_tree, encoded, units[u], leaves) for u in candidates]) \
            if candidates else np.zeros((len(part), 0))
        from_profile = effects.difference(per_tree, encoded, profile, leaves) if profile else np.zeros(len(part))
        del per_tree, encoded, leaves
        risky = np.column_stack([unit_risky_side(models, part, u) for u in candidates]) \
            if candidates else np.zeros((len(part), 0), bool)
        strength = np.where(risky & (contrib > min_effect), contrib, -np.inf)
        order = np.argsort(-strength, axis=1, kind="stable")[:, :3]
        # each candidate's words for every customer, formatted once per distinct value (no row loop)
        words = np.column_stack([_unit_words(models, part, u) for u in candidates]) if candidates else None
        text = np.full(len(part), "", dtype=object)
        rows = np.arange(len(part))
        for k in range(order.shape[1]):
            j = order[:, k]
            named = np.isfinite(strength[rows, j])
            piece = np.where(named, words[rows, j], "")  # order has no columns without candidates
            text = np.where(named & (text != ""), text + "; " + piece, np.where(named, piece, text))
        fallback = np.where(from_profile > min_effect, PROFILE_TEXT, NOTHING_TEXT)
        texts[start:start + len(part)] = np.where(text == "", fallback, text)
    return pd.Series(texts, index=X.index)


@model_threads()
@dataclass
class ChurnScorer:
    """Scores feature rows of the as-of date: churn probability, evidence flag and reasons. Everything it needs
    travels with it (the models, the BTYD fit, the trees prepared once, the importance the reasons rank by), so
    it scores any piece of the customers anywhere: here batch by batch, or on Spark's executors
    (``Warehouse.write_mapped``). Each row's result depends on that row alone."""

    models: ChurnModels
    fit: BtydFit | None
    horizon_days: int
    clv_horizon_days: int
    model_version: str
    effects: object
    importance: object
    batch: int = SCORE_BATCH_ROWS

    def __call__(self, feats: pd.DataFrame) -> pd.DataFrame:
        X, _ = design_rows(feats, self.fit, horizon_days=self.horizon_days, clv_horizon_days=self.clv_horizon_days,
                           levels=self.models.levels)
        return pd.DataFrame({
            "customer_id": feats.customer_id.to_numpy(),
            "churn_probability": np.clip(self.models.predict_published(X), 0, 1),
            "churn_model": self.model_version,
            "churn_flag": history_flag(feats, self.horizon_days).to_numpy(),
            "churn_reasons": reason_codes(self.models, X, batch=self.batch, importance=self.importance,
                                          effects=self.effects).to_numpy(),
        })


def churn_scorer(data: CutoffData, cutoff, models: ChurnModels, *, horizon_days: int, clv_horizon_days: int,
                 model_version: str, fits: dict | None = None, batch: int = SCORE_BATCH_ROWS,
                 btyd_model: str = "bgnbd") -> ChurnScorer:
    """The scorer for every customer at ``cutoff``: the BTYD fit at the cutoff, and the trees' effects and the
    features' importance from the first ``batch`` customers (the same whoever scores, and however the rest are
    split)."""
    fits = {} if fits is None else fits
    first = next(data.batches(cutoff, batch))
    _, X, _, _ = cutoff_rows(data, cutoff, horizon_days=horizon_days, levels=models.levels,
                             clv_horizon_days=clv_horizon_days, with_labels=False, fits=fits, feats=first,
                             btyd_model=btyd_model)
    effects = tree_effects(models, X)  # the trees prepared once for every batch
    return ChurnScorer(models, btyd_fit_at(data, cutoff, fits, btyd_model), horizon_days, clv_horizon_days,
                       model_version, effects, feature_importance(models, X, effects=effects), batch)


def score(data: CutoffData, cutoff, scorer: ChurnScorer, on_batch=None) -> pd.DataFrame:
    """Every customer at ``cutoff`` scored in memory, ``scorer.batch`` customers at a time."""
    parts, done, total = [], 0, data.count(cutoff)
    for feats in data.batches(cutoff, scorer.batch):
        parts.append(scorer(feats))
        done += len(feats)
        if on_batch is not None:
            on_batch(done, total)
    return pd.concat(parts, ignore_index=True)


def history_flag(features: pd.DataFrame, horizon_days: int) -> pd.Series:
    """Why a customer's churn score rests on little evidence (empty when it does not)."""
    flag = np.where(
        features.n_orders.to_numpy() == 0, "prospect: no purchase yet, score from similar prospects",
        np.where(features.tenure_days.to_numpy() < horizon_days,
                 "limited history: customer for less than one churn horizon", ""),
    )
    return pd.Series(flag, index=features.index, dtype=object)


def recency_baseline(features: pd.DataFrame) -> np.ndarray:
    """The naive churn ranking: days since the last purchase (days since creation for prospects), as a
    percentile in 0..1 (a ranking, not a calibrated probability: its Brier score is not meaningful)."""
    days = features.recency_days.astype(float).fillna(features.tenure_days.astype(float)).fillna(0.0)
    return days.rank(pct=True).to_numpy()


def evaluate(y: np.ndarray, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {name: churn_metrics(y, p) for name, p in predictions.items()}
