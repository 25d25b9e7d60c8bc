"""Reasons a marketing manager can act on, on small trained models and on the published table of a real run.

The wording rules of ``ml.churn.reason_codes`` (issue 14): a count of zero is an absence ("no web visits in
the last 90 days"), never "only 0"; the profile (age band, country, ...) is never a reason on its own; a
behaviour whose value lies on its safe side is never listed as raising the risk, even where the trees score it
up. ``ml.potential.value_reasons`` names the parts behind a score above or below the average. On the published
table: prospects have no ``p_alive``, ``churn_flag`` is null or words, and every column of every published
table carries a comment.
"""

from __future__ import annotations

import re
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from ml.churn import (
    NOTHING_TEXT, PROFILE_FEATURES, RHYTHM_FEATURES, RISK_DOWN, TrainingSet, _complaints_text, _count_feature,
    _rhythm_text, _units, describe_feature, direction, nameable, reason_codes, risky_side, train_churn_models,
    tree_effects, unit_risky_side,
)
from ml.potential import DEFAULT_WEIGHTS, PARTS, potential_parts, potential_score, value_reasons
from orchestration import run_log
from orchestration.publication import MODEL_PERFORMANCE_DDL, OPS_DOCS

MIN_EFFECT = 0.05  # reason_codes' default
NEUTRAL = NOTHING_TEXT  # "no behaviour raises the risk above a typical customer's"
PROFILE_PHRASE = re.compile(r"^(?:age band|country|region|gender|acquisition channel|preferred channel|top category|"
                            r"is b2b|marketing consent)\b")


def _train(X: pd.DataFrame, logit: np.ndarray, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    ts = TrainingSet(X, y, np.arange(len(X)).astype(str), np.full(len(X), 0.5), [date(2026, 1, 1)])
    return train_churn_models(ts, min_customers=100, baseline=False)


def _behaviour_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0, 1, n)
    rate[rng.random(n) < 0.15] = np.nan  # never opened a campaign
    return pd.DataFrame({
        "recency_days": rng.exponential(60, n),
        "unresolved_complaints": rng.poisson(0.3, n).astype(float),
        "n_web_visit_90d": rng.poisson(2.0, n).astype(float),
        "campaign_response_rate": rate,
        "age_band": pd.Categorical(rng.choice(["18-24", "35-44", "55-64"], n, p=[0.3, 0.45, 0.25]),
                                   categories=["18-24", "35-44", "55-64"]),  # the typical (modal) band: 35-44
    })


def _phrases(texts: pd.Series) -> pd.Series:
    return texts.str.split("; ").explode()


# ------------------------------------------------------------------ words of one feature

COUNT_NAMES = [f"n_{what}_{d}d" for what in ("support_ticket", "complaint", "campaign_response", "email_open",
                                             "email_click", "web_visit", "survey", "channel_web", "channel_store",
                                             "interactions") for d in (30, 90, 365)]
ZERO_NAMES = COUNT_NAMES + ["unresolved_complaints", "unresolved_tickets", "open_tickets", "complaints_total",
                            "n_cancelled", "n_refunded", "orders_last_90d", "orders_last_365d", "spend_last_90d",
                            "spend_last_365d", "n_categories", "n_orders", "frequency", "monetary_total",
                            "campaign_response_rate", "recency_days", "days_since_last_interaction"]


@pytest.mark.parametrize("name", ZERO_NAMES)
def test_zero_is_worded_as_an_absence(name):
    words = describe_feature(name, 0.0, 4.0)
    assert "only 0" not in words and not re.search(r"(?:^|\s)0 [a-z]", words) and "0%" not in words, words
    assert describe_feature(name, 0, 4.0) == words  # integers read the same


@pytest.mark.parametrize("name, value, reference, words", [
    ("n_web_visit_90d", 0.0, 6.0, "no web visits in the last 90 days"),
    ("n_web_visit_90d", 1.0, 6.0, "only 1 web visit in the last 90 days"),
    ("n_web_visit_90d", 9.0, 6.0, "9 web visits in the last 90 days"),
    ("n_channel_web_365d", 0.0, 3.0, "no web contacts in the last 365 days"),
    ("n_interactions_90d", 2.0, 5.0, "only 2 contacts in the last 90 days"),
    ("n_complaint_30d", 1.0, 0.0, "1 complaint in the last 30 days"),
    ("unresolved_complaints", 0.0, 0.0, "no unresolved complaints"),
    ("campaign_response_rate", 0.0, 0.05, "answered none of the campaigns they opened"),
    ("campaign_response_rate", 0.1, 0.3, "answered only 10% of the campaigns they opened"),
    ("campaign_response_rate", float("nan"), 0.3, "has not opened any campaign"),
    ("orders_last_90d", 0.0, 1.0, "no orders in the last 90 days"),
    ("spend_last_365d", 0.0, 60.0, "no spend in the last year"),
    ("order_trend", -1.0, 0.0, "no orders in the last 90 days after some in the 90 before"),
    ("days_since_last_interaction", 1.0, 20.0, "no contact for 1 day"),
])
def test_feature_words(name, value, reference, words):
    assert describe_feature(name, value, reference) == words


def test_the_risky_side_follows_the_direction_and_missing_values_only_where_absence_is_a_warning():
    assert direction("n_complaint_90d") == -direction("n_web_visit_90d") != 0
    assert direction("age_band") is None and direction("n_survey_90d") is None and direction("noise") is None
    assert list(risky_side("n_web_visit_90d", [0, 3, 6, 9, np.nan], 3.0)) == [True, False, False, False, False]
    assert list(risky_side("unresolved_complaints", [0, 1, np.nan], 0.0)) == [False, True, False]
    assert list(risky_side("campaign_response_rate", [0.0, 0.5, np.nan], 0.2)) == [True, False, True]
    assert not risky_side("country", [1.0], 0.0).any()


def test_rhythm_words_compare_recency_with_the_usual_gap():
    assert _rhythm_text({"recency_days": 120.0, "frequency": 4.0, "btyd_recency_days": 120.0}) == \
        "no purchase for 120 days (usually every 30 days)"
    assert _rhythm_text({"recency_days": 20.0, "frequency": 2.0, "btyd_recency_days": 200.0}) == \
        "buys only every 100 days or so (last purchase 20 days ago)"
    assert _rhythm_text({"recency_days": 40.0, "frequency": 0.0, "btyd_recency_days": 0.0}) == \
        "one purchase only, 40 days ago"
    assert _rhythm_text({"recency_days": np.nan, "frequency": np.nan, "tenure_days": 1.0}) == \
        "no purchase since signing up 1 day ago"
    assert {"tenure_days", "n_orders", "recency_gap_ratio"} <= set(RHYTHM_FEATURES)


def test_complaints_read_as_one_reason():
    assert _complaints_text({"complaints_total": 3.0, "unresolved_complaints": 1.0, "n_complaint_30d": 1.0,
                             "n_complaint_90d": 2.0}) == "3 complaints so far (1 in the last 30 days), 1 unresolved"
    assert _complaints_text({"complaints_total": 1.0, "unresolved_complaints": 0.0, "n_complaint_90d": 1.0}) == \
        "1 complaint so far"
    assert _complaints_text({"unresolved_complaints": 2.0}) == "2 unresolved complaints"
    units = _units(["complaints_total", "unresolved_complaints", "n_complaint_90d", "n_web_visit_90d", "recency_days"])
    assert units == {"purchase_rhythm": ["recency_days"],
                     "complaints": ["complaints_total", "unresolved_complaints", "n_complaint_90d"],
                     "n_web_visit_90d": ["n_web_visit_90d"]}


# ------------------------------------------------------------------ rules on small trained models

def _contributions(models, X):
    """Every unit's exact contribution (log-odds) and the profile's, from the trees."""
    effects = tree_effects(models, X)
    encoded = effects.encode(X[models.features])
    per_tree = effects.per_tree(encoded)
    units = _units(models.features)
    contrib = pd.DataFrame({u: effects.difference(per_tree, encoded, cols) for u, cols in units.items()}, index=X.index)
    profile = [c for c in PROFILE_FEATURES if c in models.features]
    return contrib, effects.difference(per_tree, encoded, profile)


def test_the_profile_is_never_a_reason_on_its_own():
    """A model whose risk comes mostly from the age band: the age band raises many customers' risk, yet no
    text names it; where it is the only thing that raises the risk the text says so without naming it."""
    X = _behaviour_frame(5000, 1)
    logit = -1.0 + 2.5 * (X.age_band == "18-24").to_numpy() + X.recency_days.to_numpy() / 80 \
        + 0.8 * X.unresolved_complaints.to_numpy()
    models = _train(X, logit)
    test = _behaviour_frame(1500, 2)
    reasons = reason_codes(models, test)
    contrib, from_profile = _contributions(models, test)
    assert (contrib["age_band"] > MIN_EFFECT).sum() > 300  # the profile does raise the risk of many customers
    assert not _phrases(reasons).str.contains(PROFILE_PHRASE).any()
    assert not reasons.str.contains("age band|18-24").any()
    profile_only = reasons.str.startswith(NEUTRAL) & reasons.str.contains("profile")
    assert profile_only.sum() > 20
    assert (from_profile[profile_only.to_numpy()] > MIN_EFFECT).all()
    # ... and for those customers no behaviour qualifies (raises the risk from its risky side)
    for unit in filter(nameable, contrib.columns):
        qualifies = (contrib[unit].to_numpy() > MIN_EFFECT) & unit_risky_side(models, test, unit)
        assert not qualifies[profile_only.to_numpy()].any(), unit
    assert reasons.str.contains("unresolved complaint").any()  # behaviours are still named


def test_a_value_on_the_safe_side_is_never_listed_as_raising_the_risk():
    """Campaign responses count as 'less is riskier'. A model that learned the opposite (customers who answer
    more campaigns churn more) scores high response rates up: those are still never named; in a model that
    learned the expected way the low rates are named, with 'only' or 'none'."""
    X = _behaviour_frame(5000, 3)
    rate = np.nan_to_num(X.campaign_response_rate.to_numpy(), nan=0.5)
    test = _behaviour_frame(1500, 4)

    backwards = _train(X, -1.0 + 4.0 * rate + X.recency_days.to_numpy() / 80)
    contrib, _ = _contributions(backwards, test)
    ref = backwards.reference["campaign_response_rate"]
    safe_but_scored_up = ((test.campaign_response_rate > ref).to_numpy()
                          & (contrib["campaign_response_rate"] > MIN_EFFECT).to_numpy())
    assert safe_but_scored_up.sum() > 100  # the trees do score the safe side up ...
    reasons = reason_codes(backwards, test)
    assert not reasons[safe_but_scored_up].str.contains("campaign").any()  # ... and it is not named
    assert not reasons.str.contains(r"answered \d+%").any()  # a rate without "only" would be the safe side

    expected_way = _train(X, 1.0 - 4.0 * rate + X.recency_days.to_numpy() / 80)
    reasons = reason_codes(expected_way, test)
    campaign = _phrases(reasons)[lambda p: p.str.contains("campaign")]
    assert len(campaign) > 100
    wording = campaign.str.match(r"answered (only \d+%|under 1%|none)|has not opened any campaign")
    assert wording.all(), campaign[~wording].unique()[:5]


def test_zero_counts_that_raise_the_risk_are_named_as_absences():
    X = _behaviour_frame(5000, 5)
    models = _train(X, 1.0 - 0.9 * X.n_web_visit_90d.to_numpy() + X.recency_days.to_numpy() / 80)
    test = _behaviour_frame(1500, 6)
    phrases = _phrases(reason_codes(models, test))
    assert (phrases == "no web visits in the last 90 days").sum() > 50
    assert not phrases.str.contains(r"only 0 |(?:^|\s)0 [a-z]").any()
    visits = phrases[phrases.str.contains("web visit")]
    assert visits.str.match(r"(no|only 1) web visits? in the last 90 days").all(), visits.unique()[:5]


# ------------------------------------------------------------------ value_reasons

def _value_frames():
    features = pd.DataFrame({
        "spend_last_365d": [500.0, 100.0, 50.0, 0.0, 80.0],
        "n_categories": [6, 2, 1, 0, 3],
        "orders_last_90d": [3, 1, 0, 0, 1],
        "orders_last_365d": [8, 3, 2, 0, 3],
        "n_interactions_90d": [6, 2, 0, 1, 2],
        "n_interactions_365d": [20, 8, 6, 1, 8],
        "marketing_consent": pd.array([True, True, False, None, True], dtype="boolean"),
        "preferred_channel": ["email", None, "phone", None, "sms"],
    })
    scores = pd.DataFrame({"clv": [900.0, 300.0, 40.0, 5.0, 200.0],
                           "churn_probability": [0.05, 0.3, 0.85, 0.97, 0.2],
                           "expected_spend": [950.0, 320.0, 45.0, 6.0, 210.0]})
    return features, scores


def test_value_reasons_name_what_lifts_or_pulls_the_score():
    features, scores = _value_frames()
    parts = potential_parts(features, scores)
    texts = value_reasons(parts, features, scores)
    score = potential_score(parts)
    assert len(texts) == 5
    for text, s in zip(texts, score):
        assert text.startswith("above average: " if s >= score.mean() else "below average: "), (text, s)
    assert texts[0] == "above average: expected value in the top 20%; churn risk only 5%"
    assert texts[3] == "below average: expected value in the bottom 20%; churn risk 97%"
    assert "no marketing consent" in texts[2] or texts[2].count("; ") == 1


def test_value_reasons_follow_the_exact_split_of_the_distance_from_the_mean():
    """score - mean score = 100 * sum_k w_k (part_k - mean_k) / sum w: the named parts are the largest terms
    pointing the score's way, and a part pointing the other way is never named."""
    rng = np.random.default_rng(0)
    n = 400
    features = pd.DataFrame({
        "spend_last_365d": rng.gamma(2, 50, n), "n_categories": rng.integers(0, 8, n),
        "orders_last_90d": rng.poisson(1, n), "orders_last_365d": rng.poisson(4, n),
        "n_interactions_90d": rng.poisson(2, n), "n_interactions_365d": rng.poisson(8, n),
        "marketing_consent": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        "preferred_channel": rng.choice(["email", "phone", None], n),
    })
    scores = pd.DataFrame({"clv": rng.gamma(2, 100, n), "churn_probability": rng.uniform(0, 1, n),
                           "expected_spend": rng.gamma(2, 60, n)})
    parts = potential_parts(features, scores)
    texts = pd.Series(value_reasons(parts, features, scores))
    w = np.array([DEFAULT_WEIGHTS[p] for p in PARTS])
    terms = (parts[list(PARTS)] - parts[list(PARTS)].mean()).to_numpy() * w
    score = potential_score(parts)
    np.testing.assert_allclose(100 * terms.sum(axis=1) / w.sum(), score - score.mean(), atol=1e-3)
    key = {"value": "expected value", "retention": "churn risk"}
    for i in range(n):
        up = terms[i].sum() >= 0
        signed = terms[i] if up else -terms[i]
        named = [PARTS[j] for j in np.argsort(-signed, kind="stable")[:2] if signed[j] > 0]
        assert texts[i].count("; ") == len(named) - 1, texts[i]
        for part, words in key.items():
            assert (words in texts[i]) == (part in named), (texts[i], named)


# ------------------------------------------------------------------ operational tables' documentation

def test_every_operational_column_has_a_description():
    con = duckdb.connect()
    con.execute("create schema ops")
    con.execute(MODEL_PERFORMANCE_DDL)
    performance = [c for (c,) in con.execute("select column_name from duckdb_columns() "
                                             "where table_name = 'model_performance'").fetchall()]
    assert set(OPS_DOCS["model_performance"][1]) == set(performance)
    assert set(OPS_DOCS["pipeline_runs"][1]) == set(run_log.COLUMNS)
    assert all(len(text) > 10 for _, columns in OPS_DOCS.values() for text in columns.values())


# ------------------------------------------------------------------ the published table of a real run

@pytest.fixture(scope="module")
def published(two_publications):
    work, _, _ = two_publications
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        yield con


def _scores(con) -> pd.DataFrame:
    return con.sql("select customer_id, lifecycle_stage, rfm_segment, p_alive, churn_probability, churn_flag, "
                   "top_reasons, value_reasons, potential_score from customer_scores").to_arrow_table().to_pandas()


@pytest.mark.slow
def test_published_reasons_follow_the_wording_rules(published):
    scores = _scores(published)
    reasons = scores.top_reasons
    assert reasons.notna().all() and reasons.str.len().gt(0).all()
    if reasons.str.startswith("churn model unavailable").all():
        pytest.skip("the run fell back to the BTYD estimate: no reasons to check")
    phrases = _phrases(reasons)
    assert not phrases.str.contains(PROFILE_PHRASE).any(), phrases[phrases.str.contains(PROFILE_PHRASE)].unique()[:5]
    assert not reasons.str.contains("only 0 ").any()
    assert not phrases.str.contains(r"(?:^|\s)0 [a-z]").any()
    # a "less is riskier" behaviour is only named below the typical value: with "only", "no" or "none"
    down_words = {w for name in COUNT_NAMES if direction(name) == RISK_DOWN for w in _count_feature(name)[:2]}
    plain_count = phrases.str.match(rf"^\d+ ({'|'.join(sorted(down_words))}) in the last")
    assert not plain_count.any(), phrases[plain_count].unique()[:5]
    assert not phrases.str.match(r"^answered \d+%").any()
    assert reasons.str.startswith("no purchase since signing up")[scores.lifecycle_stage == "prospect"].mean() > 0.5


@pytest.mark.slow
def test_published_probabilities_agree_and_flags_are_null_or_words(published):
    scores = _scores(published)
    prospects = scores.lifecycle_stage == "prospect"
    assert prospects.any() and (prospects == (scores.rfm_segment == "Prospect")).all()
    assert scores.p_alive[prospects].isna().all()
    assert scores.p_alive[~prospects].notna().all() and scores.p_alive[~prospects].between(0, 1).all()
    flags = scores.churn_flag
    assert (flags.isna() | flags.str.strip().str.len().gt(0)).all()
    assert flags[prospects].str.startswith("prospect").all() and flags.isna().any()


@pytest.mark.slow
def test_published_value_reasons_say_why_a_score_is_high_or_low(published):
    scores = _scores(published)
    assert scores.value_reasons.notna().all()
    assert scores.value_reasons.str.match(r"(above|below) average: [^;]+(; [^;]+)?$").all()
    mean = scores.potential_score.mean()
    clear = (scores.potential_score - mean).abs() > 0.01  # the published score is rounded to 4 decimals
    above = scores.value_reasons.str.startswith("above")
    assert (above[clear] == (scores.potential_score[clear] >= mean)).all()


@pytest.mark.slow
def test_every_published_table_and_column_has_a_comment(published):
    tables = {t for (t,) in published.execute("select table_name from duckdb_tables() "
                                              "where database_name = current_database()").fetchall()}
    assert {"customer_scores", "model_performance", "pipeline_runs"} <= tables
    missing_tables = published.execute("select table_name from duckdb_tables() where database_name = current_database() "
                                       "and comment is null").fetchall()
    missing_columns = published.execute("select table_name, column_name from duckdb_columns() "
                                        "where database_name = current_database() and comment is null").fetchall()
    assert missing_tables == [] and missing_columns == [], (missing_tables, missing_columns)
    value_reasons_doc = published.execute("select comment from duckdb_columns() where table_name = 'customer_scores' "
                                          "and column_name = 'value_reasons'").fetchall()[0][0]
    assert "potential score" in value_reasons_doc
