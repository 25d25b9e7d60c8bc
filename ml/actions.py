"""Next best action: a rule table mapping tier, lifecycle stage, RFM segment, churn risk and consent to an
action and the channel to use. First matching rule wins; the last rule must match everyone.

The default table is ``ml/next_best_action_rules.csv`` (readable by the people who own the actions); point
``CRM_ACTION_RULES`` at a copy to change it. Columns: ``action``, ``channel`` (a channel name, ``preferred``
= the customer's preferred channel or e-mail when unknown, ``none``), ``priority_tiers``,
``lifecycle_stages``, ``rfm_segments`` (``|``-separated lists; empty = any), ``min_churn`` / ``max_churn``
(churn probability bounds, min inclusive, max exclusive; empty = none), ``marketing_consent`` (``yes``,
``no``, ``unknown``; empty = any) and ``why`` (shown to the people who act).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_RULES_FILE = Path(__file__).with_name("next_best_action_rules.csv")
ACTIONS = ("retention_call", "win_back_offer", "upsell", "cross_sell", "onboarding", "nurture", "no_action")
COLUMNS = ["action", "channel", "priority_tiers", "lifecycle_stages", "rfm_segments", "min_churn", "max_churn",
           "marketing_consent", "why"]
CONDITIONS = ["priority_tiers", "lifecycle_stages", "rfm_segments", "min_churn", "max_churn", "marketing_consent"]


class ActionRulesError(ValueError):
    """The rule table cannot be used; the message names the file, the row and what to fix."""


def load_rules(path: Path | str | None = None) -> pd.DataFrame:
    path = Path(path) if path else DEFAULT_RULES_FILE
    if not path.exists():
        raise ActionRulesError(f"next-best-action rules {path} do not exist (CRM_ACTION_RULES)")
    rules = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in rules.columns]
    if missing:
        raise ActionRulesError(f"{path}: column(s) {', '.join(missing)} missing; the columns are {', '.join(COLUMNS)}")
    for i, rule in rules.iterrows():
        where = f"{path} row {i + 2}"
        if rule.action not in ACTIONS:
            raise ActionRulesError(f"{where}: unknown action {rule.action!r}; use one of {', '.join(ACTIONS)}")
        if rule.marketing_consent not in ("", "yes", "no", "unknown"):
            raise ActionRulesError(f"{where}: marketing_consent must be yes, no, unknown or empty")
        for bound in ("min_churn", "max_churn"):
            if rule[bound] and not 0 <= float(rule[bound]) <= 1:
                raise ActionRulesError(f"{where}: {bound} must be a probability between 0 and 1")
    if rules.empty or any(rules.iloc[-1][c] for c in CONDITIONS):
        raise ActionRulesError(f"{path}: the last rule must have no conditions, so that every customer gets an action")
    return rules


def next_best_actions(scores: pd.DataFrame, consent: pd.Series, preferred_channel: pd.Series,
                      rules: pd.DataFrame) -> pd.DataFrame:
    """``next_best_action``, ``action_channel`` and ``action_reason`` per row of ``scores`` (which needs
    ``priority_tier``, ``lifecycle_stage``, ``rfm_segment`` and ``churn_probability``)."""
    n = len(scores)
    consent_word = np.where(consent.eq(True), "yes", np.where(consent.eq(False), "no", "unknown"))
    churn = scores["churn_probability"].to_numpy(float)
    chosen = np.full(n, -1)
    for i, rule in enumerate(rules.itertuples(index=False)):
        hit = chosen < 0
        for column, values in (("priority_tier", rule.priority_tiers), ("lifecycle_stage", rule.lifecycle_stages),
                               ("rfm_segment", rule.rfm_segments)):
            if values:
                hit &= scores[column].isin(values.split("|")).to_numpy()
        if rule.min_churn:
            hit &= churn >= float(rule.min_churn)
        if rule.max_churn:
            hit &= churn < float(rule.max_churn)
        if rule.marketing_consent:
            hit &= consent_word == rule.marketing_consent
        chosen[hit] = i
    preferred = preferred_channel.fillna("email").astype(str).to_numpy()
    channel = rules["channel"].to_numpy(dtype=object)[chosen]
    channel = np.where(channel == "preferred", preferred, channel)
    return pd.DataFrame({
        "next_best_action": rules["action"].to_numpy(dtype=object)[chosen],
        "action_channel": channel,
        "action_reason": rules["why"].to_numpy(dtype=object)[chosen],
    }, index=scores.index)
