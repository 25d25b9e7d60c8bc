"""Next best action: a rule table mapping tier, lifecycle stage, RFM segment, churn risk and consent to an
action and the channel to use. First matching rule wins; the last rule must match everyone.

The default table is ``ml/next_best_action_rules.csv`` (readable by the people who own the actions); point
``CRM_ACTION_RULES`` at a copy to change it. Columns: ``action``, ``channel`` (a channel name, ``preferred``
= the customer's preferred channel or e-mail when unknown, ``none``), ``priority_tiers``,
``lifecycle_stages``, ``rfm_segments``, ``marketing_consent`` (``|``-separated lists; empty = any; consent
words ``yes``, ``no``, ``unknown``), ``min_churn`` / ``max_churn`` (churn probability bounds, min inclusive,
max exclusive; empty = none) and ``why`` (shown to the people who act, published as ``action_reason``).

The table decides; this module only refuses a table that could break one of the named ``INVARIANTS``
(the business's guardrails: no growth offers to leads or new customers, no upsell to customers who are
leaving, marketing only with consent, a reason for every action). ``load_rules`` checks that statically:
a rule's conditions only tell apart the stages, consent words, tiers and segments it names and the churn
thresholds it uses, so running the table on one customer per combination of those values (plus one value
that no rule names, and a churn value just below every threshold) covers every customer that can exist.
The same invariants are checked on published tables by ``invariant_violations`` (tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ml.segments import RFM_SEGMENTS

DEFAULT_RULES_FILE = Path(__file__).with_name("next_best_action_rules.csv")
# actions that market something: only for customers who gave marketing consent
MARKETING_ACTIONS = ("retention_call", "win_back_offer", "upsell", "cross_sell", "onboarding", "nurture")
# service contacts without an offer, allowed without marketing consent
SERVICE_ACTIONS = ("account_review", "consent_request")
ACTIONS = (*MARKETING_ACTIONS, *SERVICE_ACTIONS, "no_action")
GROWTH_ACTIONS = ("upsell", "cross_sell")
# the stages of dbt_project/macros/lifecycle_stage.sql
LIFECYCLE_STAGES = ("prospect", "new", "active", "repeat", "loyal", "at risk", "lapsed", "churned")
NOT_YET_CUSTOMERS = ("prospect", "new")
LEAVING_STAGES = ("at risk", "lapsed", "churned")
HIGH_CHURN = 0.5
CONSENT_WORDS = ("yes", "no", "unknown")
COLUMNS = ["action", "channel", "priority_tiers", "lifecycle_stages", "rfm_segments", "min_churn", "max_churn",
           "marketing_consent", "why"]
CONDITIONS = ["priority_tiers", "lifecycle_stages", "rfm_segments", "min_churn", "max_churn", "marketing_consent"]
_OTHER = "(any other)"


class ActionRulesError(ValueError):
    """The rule table cannot be used; the message names the file, the row and what to fix."""


@dataclass(frozen=True)
class Invariant:
    """A guardrail every customer's action must respect. ``violated`` takes a frame with
    ``next_best_action``, ``action_reason``, ``lifecycle_stage``, ``churn_probability`` and ``consent``
    (``yes``/``no``/``unknown``, see ``consent_words``) and returns a boolean mask of the rows breaking it."""

    name: str
    text: str
    violated: Callable[[pd.DataFrame], np.ndarray]


def _action_in(frame: pd.DataFrame, actions: tuple[str, ...]) -> np.ndarray:
    return frame["next_best_action"].isin(actions).to_numpy()


def _stage_in(frame: pd.DataFrame, stages: tuple[str, ...]) -> np.ndarray:
    return frame["lifecycle_stage"].isin(stages).to_numpy()


INVARIANTS = (
    Invariant("no_growth_offer_to_leads_or_new_customers",
              "prospects and new customers never get upsell or cross_sell",
              lambda f: _action_in(f, GROWTH_ACTIONS) & _stage_in(f, NOT_YET_CUSTOMERS)),
    Invariant("no_upsell_at_high_churn",
              f"no customer with churn probability >= {HIGH_CHURN} gets upsell",
              lambda f: _action_in(f, ("upsell",)) & (f["churn_probability"].to_numpy(float) >= HIGH_CHURN)),
    Invariant("no_upsell_to_leaving_customers",
              "no customer in lifecycle stage at risk, lapsed or churned gets upsell",
              lambda f: _action_in(f, ("upsell",)) & _stage_in(f, LEAVING_STAGES)),
    Invariant("marketing_only_with_consent",
              "customers without marketing consent (no or unknown) get a service action or no_action",
              lambda f: _action_in(f, MARKETING_ACTIONS) & (f["consent"].to_numpy() != "yes")),
    Invariant("every_action_has_a_reason",
              "action_reason is a non-empty text",
              lambda f: ~f["action_reason"].fillna("").astype(str).str.strip().astype(bool).to_numpy()),
)


def consent_words(consent: pd.Series) -> np.ndarray:
    """Marketing consent (True / False / missing) as the rule table's words ``yes`` / ``no`` / ``unknown``."""
    flag = pd.array(consent.astype(object).where(consent.notna(), None).to_numpy(), dtype="boolean")
    yes, no = flag.fillna(False).to_numpy(bool), (~flag).fillna(False).to_numpy(bool)
    return np.where(yes, "yes", np.where(no, "no", "unknown")).astype(object)


def invariant_violations(frame: pd.DataFrame) -> dict[str, int]:
    """Rows breaking each invariant (name -> count) in a frame of actions with the customer's state (see
    ``Invariant``); all zeros when the actions respect the guardrails."""
    return {inv.name: int(inv.violated(frame).sum()) for inv in INVARIANTS}


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split("|")] if text else []


def _bound(rule: pd.Series, column: str, where: str) -> float | None:
    if not rule[column]:
        return None
    try:
        value = float(rule[column])
    except ValueError:
        raise ActionRulesError(f"{where}: {column} {rule[column]!r} is not a number") from None
    if not 0 <= value <= 1:
        raise ActionRulesError(f"{where}: {column} must be a probability between 0 and 1")
    return value


def load_rules(path: Path | str | None = None) -> pd.DataFrame:
    """The rule table at ``path`` (default ``ml/next_best_action_rules.csv``), checked: known actions, stages,
    segments and consent words, probabilities in [0, 1], a reason on every row, a last row without conditions,
    and no way for any customer to get an action that breaks an invariant."""
    path = Path(path) if path else DEFAULT_RULES_FILE
    if not path.exists():
        raise ActionRulesError(f"next-best-action rules {path} do not exist (CRM_ACTION_RULES)")
    rules = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in rules.columns]
    if missing:
        raise ActionRulesError(f"{path}: column(s) {', '.join(missing)} missing; the columns are {', '.join(COLUMNS)}")
    rules = rules[COLUMNS].apply(lambda column: column.str.strip())
    for i, rule in rules.iterrows():
        where = f"{path} row {i + 2}"
        if rule.action not in ACTIONS:
            raise ActionRulesError(f"{where}: unknown action {rule.action!r}; use one of {', '.join(ACTIONS)}")
        for column, known in (("lifecycle_stages", LIFECYCLE_STAGES), ("rfm_segments", RFM_SEGMENTS),
                              ("marketing_consent", CONSENT_WORDS)):
            unknown = [v for v in _split(rule[column]) if v not in known]
            if unknown:
                raise ActionRulesError(f"{where}: unknown {column} {', '.join(map(repr, unknown))}; "
                                       f"use |-separated values of {', '.join(known)}")
        low, high = _bound(rule, "min_churn", where), _bound(rule, "max_churn", where)
        if low is not None and high is not None and low >= high:
            raise ActionRulesError(f"{where}: min_churn {low} must be below max_churn {high}")
        if not rule.why:
            raise ActionRulesError(f"{where}: the why column is empty; say in words why this action (it is "
                                   "published as action_reason)")
    if rules.empty or any(rules.iloc[-1][c] for c in CONDITIONS):
        raise ActionRulesError(f"{path}: the last rule must have no conditions, so that every customer gets an action")
    _refuse_invariant_breaks(rules, path)
    return rules


def _chosen_rule(rules: pd.DataFrame, tier, stage, segment, churn: np.ndarray, consent: np.ndarray) -> np.ndarray:
    """Index of the first rule each row matches (-1: none)."""
    chosen = np.full(len(churn), -1)
    for i, rule in enumerate(rules.itertuples(index=False)):
        hit = chosen < 0
        for values, column in ((rule.priority_tiers, tier), (rule.lifecycle_stages, stage),
                               (rule.rfm_segments, segment), (rule.marketing_consent, consent)):
            if values:
                hit &= np.isin(column, _split(values))
        if rule.min_churn:
            hit &= churn >= float(rule.min_churn)
        if rule.max_churn:
            hit &= churn < float(rule.max_churn)
        chosen[hit] = i
    return chosen


def _every_kind_of_customer(rules: pd.DataFrame) -> pd.DataFrame:
    """One row per combination of what the rules (and invariants) can tell apart; see the module docstring."""
    tiers = sorted({t for text in rules.priority_tiers for t in _split(text)}) + [_OTHER]
    segments = sorted({s for text in rules.rfm_segments for s in _split(text)}) + [_OTHER]
    thresholds = {HIGH_CHURN} | {float(t) for t in (*rules.min_churn, *rules.max_churn) if t}
    churn = sorted({0.0, 1.0} | thresholds | {float(np.nextafter(t, -np.inf)) for t in thresholds if t > 0})
    grid = pd.DataFrame(list(product(tiers, LIFECYCLE_STAGES, segments, churn, CONSENT_WORDS)),
                        columns=["priority_tier", "lifecycle_stage", "rfm_segment", "churn_probability", "consent"])
    return grid


def _refuse_invariant_breaks(rules: pd.DataFrame, path: Path) -> None:
    grid = _every_kind_of_customer(rules)
    chosen = _chosen_rule(rules, grid.priority_tier.to_numpy(), grid.lifecycle_stage.to_numpy(),
                          grid.rfm_segment.to_numpy(), grid.churn_probability.to_numpy(), grid.consent.to_numpy())
    grid["next_best_action"] = rules["action"].to_numpy()[chosen]
    grid["action_reason"] = rules["why"].to_numpy()[chosen]
    for inv in INVARIANTS:
        bad = np.flatnonzero(inv.violated(grid))
        if len(bad):
            row, case = chosen[bad[0]], grid.iloc[bad[0]]
            raise ActionRulesError(
                f"{path} row {row + 2} ({rules.action.iloc[row]}) breaks the invariant {inv.name} ({inv.text}): "
                f"it matches e.g. a {case.lifecycle_stage!r} customer, tier {case.priority_tier}, "
                f"RFM segment {case.rfm_segment}, churn probability {case.churn_probability:.4g}, marketing consent "
                f"{case.consent}; narrow its conditions or put a rule for those customers above it")


def next_best_actions(scores: pd.DataFrame, consent: pd.Series, preferred_channel: pd.Series,
                      rules: pd.DataFrame) -> pd.DataFrame:
    """``next_best_action``, ``action_channel`` and ``action_reason`` per row of ``scores`` (which needs
    ``priority_tier``, ``lifecycle_stage``, ``rfm_segment`` and ``churn_probability``); ``consent`` is the
    customer's marketing consent (True / False / missing = unknown), aligned with ``scores``."""
    chosen = _chosen_rule(rules, scores["priority_tier"].to_numpy(), scores["lifecycle_stage"].to_numpy(),
                          scores["rfm_segment"].to_numpy(), scores["churn_probability"].to_numpy(float),
                          consent_words(pd.Series(consent.to_numpy(), index=scores.index)))
    if (chosen < 0).any():
        raise ActionRulesError(f"{int((chosen < 0).sum())} customers match no rule; the last rule must match everyone")
    preferred = preferred_channel.fillna("email").astype(str).to_numpy()
    channel = rules["channel"].to_numpy(dtype=object)[chosen]
    channel = np.where(channel == "preferred", preferred, channel)
    return pd.DataFrame({
        "next_best_action": rules["action"].to_numpy(dtype=object)[chosen],
        "action_channel": channel,
        "action_reason": rules["why"].to_numpy(dtype=object)[chosen],
    }, index=scores.index)
