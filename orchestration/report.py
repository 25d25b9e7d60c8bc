"""The run report: a one-page briefing per run that a marketing manager can open anywhere (no network).

The first screen answers "what do I do today": what changed since the last publication (customers who
moved into the at-risk stage, the churn risk of tier A, the value at risk, in the reporting currency), the
five numbers that matter and the actions by channel with their customers and value. Below it: the score
and value distributions, segments by value against size, the lifecycle flows of the last period, the top
customers per tier and per action, model health (champion against baseline and its trend over the last
runs, with the model plots folded behind it), campaigns and the quality summary.

Everything is read from the publication (what BI sees: the serving file, or the serving views on Spark;
``orchestration/published.py``), the one before it (for the changes) and the run's model plots; figures are
inlined as base64 PNG, so the file can be mailed or archived as is. Its only link leaves to the run's quality
page (``<run_id>/quality.html``, relative, self-contained). Columns are used only when the publication has
them, and nothing assumes a fixed list of actions, channels, tiers or segments.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from ml import plots  # noqa: E402
from orchestration.published import PublishedTables  # noqa: E402

SECTIONS = ["Since the last run", "Five numbers", "Actions by channel", "Scores and value", "Segments",
            "Lifecycle funnel", "Top customers", "Model health", "Campaigns", "Quality"]
CHURN_LIKELY = 0.5  # a customer "likely to churn": churn probability at or above this
AT_RISK_STAGES = ("at risk", "lapsed")
STAGE_ORDER = ["(joined)", "prospect", "new", "active", "repeat", "loyal", "at risk", "lapsed", "churned"]
NO_ACTION = "no_action"
TASK_LABELS = {"clv_spend": "Customer value", "clv_purchases": "Purchase forecast", "churn": "Churn",
               "next_category": "Next category", "btyd_selection": "BTYD model choice"}
# the headline metric per task (higher is better) and a second one that says whether the level is right
PRIMARY_METRIC = {"clv_spend": "normalised_gini", "churn": "roc_auc", "next_category": "hit_rate_top3"}
SECOND_METRIC = {"clv_spend": ("total_ratio", "predicted / actual total"), "churn": ("brier", "Brier score"),
                 "next_category": ("hit_rate_top1", "top-1 hit rate")}
FLOOR_PARAMETER = {"clv_spend": "min_value_gini", "churn": "min_churn_auc"}
BASELINE_WORDS = ("naive", "recency", "popular", "most_frequent", "baseline")
TREND_RUNS = 6


@dataclass
class CheckSummary:
    """The run's Dagster asset checks and Great Expectations results, as the report and quality page show them."""
    passed: int = 0
    failed: int = 0
    rows: list[tuple[str, str, bool, str]] = field(default_factory=list)  # asset, check, passed, description
    data_docs: Path | None = None
    gx_suites: list = field(default_factory=list)  # data_quality.gx_gate.SuiteResult
    later_checks: list[str] = field(default_factory=list)  # checks that run after the report is written


# ---------------------------------------------------------------- small HTML helpers

def _e(value) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(data: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


class Money:
    """Amounts in the reporting currency: full (``€12,345``) in tables, short (``€12k``) on cards."""

    def __init__(self, currency: str):
        self.currency = currency
        self.prefix = plots.currency_prefix(currency)

    def full(self, value) -> str:
        if value is None or pd.isna(value):
            return ""
        return f'<span class="money">{_e(("-" if value < 0 else "") + self.prefix + f"{abs(value):,.0f}")}</span>'

    def short(self, value) -> str:
        if value is None or pd.isna(value):
            return ""
        return f'<span class="money">{_e(plots.short_money(value, self.currency))}</span>'


def _pct(value, digits: int = 0) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.{digits}%}"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "data",
           widths: list[str] | None = None) -> str:
    """A table from cells that are already HTML; ``numeric`` column positions are right-aligned."""
    cols = "".join(f'<col style="width:{w}">' for w in widths) if widths else ""
    head = "".join(f'<th class="{"num" if i in numeric else ""}">{h}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return (f'<table class="{cls}"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table>')


def _delta(now, before, kind: str, good_when_up: bool, money: Money | None = None) -> str:
    """``▲ 1.2 pts`` / ``▼ €3k`` beside a figure, green when the move is good, red when bad."""
    if before is None or now is None or pd.isna(before) or pd.isna(now):
        return ""
    change = now - before
    if abs(change) < 1e-12:
        return '<span class="delta flat">no change</span>'
    arrow = "▲" if change > 0 else "▼"
    good = (change > 0) == good_when_up
    if kind == "pts":
        text = f"{abs(change) * 100:.1f} pts"
    elif kind == "money":
        text = plots.short_money(abs(change), money.currency)
    else:
        text = f"{abs(change):,.0f}"
    return f'<span class="delta {"good" if good else "bad"}">{arrow} {_e(text)}</span>'


def _card(title: str, value: str, note: str = "", delta: str = "") -> str:
    return (f'<div class="card"><div class="card-title">{_e(title)}</div><div class="card-value">{value} {delta}</div>'
            f'<div class="card-note">{note}</div></div>')


# ---------------------------------------------------------------- reading the publications

# The columns of the per-customer tables the report reads (every column of customer_scores and customer_profile of
# a million customers, twice with the previous publication, was the run's memory peak after scoring);
# tests/test_report.py renders a real publication both ways and compares.
REPORT_COLUMNS: dict[str, list[str]] = {
    "customer_scores": [
        "customer_id", "as_of_date", "run_id", "churn_probability", "p_alive", "expected_purchases", "clv",
        "potential_score", "potential_rank", "priority_tier", "rfm_segment", "lifecycle_stage", "next_best_action",
        "next_category", "customer_key", "behaviour_cluster",
        "action_channel", "action_reason", "previous_lifecycle_stage", "previous_priority_tier"],
    "customer_profile": ["customer_key", "spend_last_365d"],
}
# the long texts, read only for the few customers the report shows (at ten million customers they were
# gigabytes, and the step that read them for everyone was the run's last memory peak)
SHOWN_TEXTS = ["value_reasons", "potential_drivers", "top_reasons"]


def _with_texts(published: PublishedTables, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (some customers of the publication) with the ``SHOWN_TEXTS`` it lacks, read for its customers."""
    have = set(published.columns("customer_scores"))
    wanted = [c for c in SHOWN_TEXTS if c in have and c not in frame]
    if not wanted or frame.empty:
        return frame
    shown = pa.table({"customer_id": pd.unique(frame["customer_id"].astype(str))})
    texts = published.frame("customer_scores", ["customer_id", *wanted],
                            "customer_id in (select customer_id from shown)", inputs={"shown": shown})
    return frame.merge(texts, on="customer_id", how="left", validate="many_to_one").set_axis(frame.index)


def _read(published: PublishedTables, tables: list[str],
          columns: dict[str, list[str]] | None = None) -> dict[str, pd.DataFrame]:
    """The ``tables`` present in ``published``; of those ``columns`` names, only the listed columns present (a
    table with none of them is not read: the report reads such a table as absent)."""
    frames = {}
    for t in tables:
        if not published.has(t):
            continue
        picked = None
        if columns is not None and t in columns:
            have = set(published.columns(t))
            picked = [c for c in columns[t] if c in have]
            if not picked:
                continue
        frames[t] = published.frame(t, picked or published.columns(t))
    return frames


def value_at_risk(scores: pd.DataFrame, profile: pd.DataFrame | None) -> tuple[float, str]:
    """Last-12-month spend of the customers likely to churn (probability >= ``CHURN_LIKELY``): the revenue
    that leaves with them. Without the profile table, their CLV (and the label says so)."""
    likely = scores[scores.churn_probability >= CHURN_LIKELY]
    if profile is not None and {"customer_key", "spend_last_365d"} <= set(profile) and "customer_key" in scores:
        spend = profile.set_index("customer_key").spend_last_365d
        return float(spend.reindex(likely.customer_key).fillna(0).sum()), "last-12-month spend"
    return float(likely.clv.sum()), "expected value (CLV)"


@dataclass
class Snapshot:
    """What the report needs from one publication."""
    scores: pd.DataFrame
    profile: pd.DataFrame | None

    @property
    def as_of(self) -> str:
        return str(pd.Timestamp(self.scores.as_of_date.iloc[0]).date()) if len(self.scores) else "?"

    @property
    def buyers(self) -> pd.Series:
        return self.scores.lifecycle_stage != "prospect"

    def tier_a_churn(self) -> float:
        a = self.scores[self.scores.priority_tier == "A"]
        return float(a.churn_probability.mean()) if len(a) else float("nan")

    def tier_a_value_share(self) -> float:
        return float(self.scores.clv[self.scores.priority_tier == "A"].sum() / max(self.scores.clv.sum(), 1e-12))

    def at_risk(self) -> pd.DataFrame:
        return self.scores[self.scores.lifecycle_stage.isin(AT_RISK_STAGES)]

    def with_action(self) -> pd.DataFrame:
        return self.scores[self.scores.next_best_action != NO_ACTION]


# ---------------------------------------------------------------- first screen

def _changes(now: Snapshot, before: Snapshot | None, money: Money) -> str:
    s = now.scores
    cards = []
    if "previous_lifecycle_stage" in s and s.previous_lifecycle_stage.notna().any():
        moved = s[(s.lifecycle_stage == "at risk") & s.previous_lifecycle_stage.notna()
                  & (s.previous_lifecycle_stage != "at risk")]
        sources = moved.previous_lifecycle_stage.value_counts().head(3)
        ab = int(moved.priority_tier.isin(["A", "B"]).sum())
        note = ("from " + ", ".join(f"{_e(k)} {v:,}" for k, v in sources.items()) + "; " if len(sources) else "")
        note += f"{ab:,} in tiers A/B, {money.short(moved.clv.sum())} expected value"
        cards.append(_card("Moved into at risk", f"{len(moved):,}", note))
    else:
        cards.append(_card("Moved into at risk", "–", "no earlier publication to compare with"))
    a_now = now.tier_a_churn()
    a_before = before.tier_a_churn() if before else None
    likely_a = int(((s.priority_tier == "A") & (s.churn_probability >= CHURN_LIKELY)).sum())
    cards.append(_card("Tier A churn risk", _pct(a_now, 1),
                       f"mean churn probability of tier A; {likely_a:,} tier A customers at {CHURN_LIKELY:.0%} or more"
                       + (f"; was {_pct(a_before, 1)}" if a_before is not None else ""),
                       _delta(a_now, a_before, "pts", good_when_up=False)))
    var_now, label = value_at_risk(s, now.profile)
    var_before = value_at_risk(before.scores, before.profile)[0] if before else None
    likely = int((now.buyers & (s.churn_probability >= CHURN_LIKELY)).sum())
    cards.append(_card("Value at risk", money.short(var_now),
                       f"{label} of the {likely:,} buyers with churn probability of {CHURN_LIKELY:.0%} or more"
                       + (f"; was {money.short(var_before)}" if var_before is not None else ""),
                       _delta(var_now, var_before, "money", good_when_up=False, money=money)))
    if "previous_priority_tier" in s and s.previous_priority_tier.notna().any():
        known = s.previous_priority_tier.notna()
        into = int(((s.priority_tier == "A") & (s.previous_priority_tier != "A") & known).sum())
        out = int(((s.priority_tier != "A") & (s.previous_priority_tier == "A")).sum())
        cards.append(_card("Tier A moves", f"+{into:,} / −{out:,}", "customers who entered / left tier A"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def horizon(days: int) -> str:
    """A horizon in words: ``12 months`` for 365 days, ``90 days`` otherwise."""
    return f"{round(days / 365 * 12)} months" if days % 365 == 0 else f"{days} days"


def _five_numbers(now: Snapshot, before: Snapshot | None, money: Money, clv_horizon: str) -> str:
    s = now.scores
    b = before.scores if before else None
    buyers = int(now.buyers.sum())
    risk, act = now.at_risk(), now.with_action()
    cards = [
        _card("Customers scored", f"{len(s):,}", f"{buyers:,} buyers, {len(s) - buyers:,} prospects (no order yet)",
              _delta(len(s), len(b) if b is not None else None, "n", good_when_up=True)),
        _card(f"Expected value, next {clv_horizon}", money.short(s.clv.sum()), "total CLV, discounted",
              _delta(s.clv.sum(), b.clv.sum() if b is not None else None, "money", True, money)),
        _card("Tier A", f"{int((s.priority_tier == 'A').sum()):,}",
              f"customers holding {_pct(now.tier_a_value_share())} of the expected value",
              _delta(now.tier_a_value_share(), before.tier_a_value_share() if before else None, "pts", True)),
        _card("At risk or lapsed", f"{len(risk):,}", f"{money.short(risk.clv.sum())} expected value still in reach",
              _delta(len(risk), len(before.at_risk()) if before else None, "n", good_when_up=False)),
        _card("Customers with an action", f"{len(act):,}",
              f"{money.short(act.clv.sum())} of expected value ({_pct(act.clv.sum() / max(s.clv.sum(), 1e-12))})",
              _delta(len(act), len(before.with_action()) if before else None, "n", good_when_up=True)),
    ]
    return '<div class="cards five">' + "".join(cards) + "</div>"


def _ordered_actions(s: pd.DataFrame) -> list[str]:
    value = s.groupby("next_best_action").clv.sum().sort_values(ascending=False)
    return [a for a in value.index if a != NO_ACTION] + [a for a in value.index if a == NO_ACTION]


def _actions_by_channel(s: pd.DataFrame, money: Money) -> str:
    """Actions (rows, by value, ``no_action`` last) against channels (columns, by customers): customers and
    their expected value per cell; below, folded, the most common reason for each action. Any action and
    channel names work: both come from the data."""
    channel = s.action_channel.fillna("none")
    counts = channel.value_counts()
    channels = [c for c in counts.index if c != "none"] + [c for c in counts.index if c == "none"]
    total = max(s.clv.sum(), 1e-12)

    def cell(part: pd.DataFrame) -> str:
        return (f"{len(part):,} <small class='muted'>{money.short(part.clv.sum())}</small>" if len(part)
                else '<span class="muted">–</span>')

    rows, reasons = [], []
    for action in _ordered_actions(s):
        part = s[s.next_best_action == action]
        rows.append([f"<b>{_e(action.replace('_', ' '))}</b>", f"{len(part):,}", money.full(part.clv.sum()),
                     _pct(part.clv.sum() / total), *[cell(part[channel[part.index] == ch]) for ch in channels]])
        if "action_reason" in part and part.action_reason.notna().any():
            top = part.action_reason.value_counts()
            share = top.iloc[0] / len(part)
            reasons.append(f"<li><b>{_e(action.replace('_', ' '))}</b>: {_e(top.index[0])}"
                           + (f" <span class='muted'>({share:.0%} of them)</span>" if share < 0.995 else "") + "</li>")
    rows.append(["<b>all</b>", f"<b>{len(s):,}</b>", money.full(s.clv.sum()), "100%",
                 *[cell(s[channel == ch]) for ch in channels]])
    channel_width = 63.0 / max(len(channels), 1)
    widths = ["13%", "8%", "10%", "6%", *[f"{channel_width:.2f}%"] * len(channels)]
    table = _table(["action", "customers", "expected value", "share", *[_e(c.replace("_", " ")) for c in channels]],
                   rows, numeric=set(range(1, 4 + len(channels))), cls="data actions", widths=widths)
    why = (f"<details><summary>Why each action (its most common reason)</summary><ul class='reasons'>"
           f"{''.join(reasons)}</ul></details>") if reasons else ""
    return table + why


# ---------------------------------------------------------------- sections below the fold

def _segments(summary: pd.DataFrame, money: Money) -> list[str]:
    out = []
    overall = summary[summary.cut_type == "all"]
    rfm = overall[overall.segment_type == "rfm_segment"]
    if len(rfm):
        out.append(_img(_png(plots.segment_value_by_size(rfm, money.currency, "RFM segments: value against size")),
                        "RFM segments: share of customers and of expected value"))
    share_col = "recommended_action_clv_share" if "recommended_action_clv_share" in overall else None
    for kind, title in (("rfm_segment", "RFM segments"), ("behaviour_cluster", "Behaviour clusters")):
        part = overall[overall.segment_type == kind].sort_values("total_clv", ascending=False)
        if not len(part):
            continue
        rows = [[_e(r.segment), f"{r.customers:,}", _pct(r.share_of_customers), money.full(r.total_clv),
                 money.full(r.avg_clv), _pct(r.avg_churn_probability), _e(str(r.recommended_action).replace("_", " "))
                 + (f" <small class='muted'>({_pct(getattr(r, share_col))} of the value)</small>"
                    if share_col and pd.notna(getattr(r, share_col)) else "")]
                for r in part.itertuples()]
        out.append(f"<h3>{title}</h3>" + _table(
            ["segment", "customers", "share", "expected value", "per customer", "mean churn", "recommended action"],
            rows, numeric={1, 2, 3, 4, 5}, widths=["26%", "9%", "7%", "12%", "11%", "9%", "26%"]))
    return out


def _funnel(funnel: pd.DataFrame) -> list[str]:
    latest = funnel[funnel.is_latest_period]
    if not len(latest):
        return ["<p>No lifecycle periods published.</p>"]
    start, end = (str(pd.Timestamp(latest[c].iloc[0]).date()) for c in ("period_start", "period_end"))
    out = [_img(_png(plots.lifecycle_flows(latest, STAGE_ORDER, f"Where customers went, {start} to {end}")),
                "Lifecycle flows over the last period")]
    moves = latest[latest.from_stage != latest.to_stage].sort_values("customers", ascending=False).head(8)
    rows = [[_e(r.from_stage), _e(r.to_stage), f"{r.customers:,}", _pct(r.conversion_rate)]
            for r in moves.itertuples()]
    stay = latest[latest.from_stage == latest.to_stage]
    stayed = ", ".join(f"{_e(r.from_stage)} {_pct(r.conversion_rate)}" for r in stay.sort_values(
        "from_stage", key=lambda c: c.map({s: i for i, s in enumerate(STAGE_ORDER)})).itertuples())
    out.append('<div class="two"><div><h3>Largest moves between stages</h3>'
               + _table(["from", "to", "customers", "share of from-stage"], rows, numeric={2, 3})
               + f"</div><div><h3>Stayed in their stage</h3><p>{stayed}</p></div></div>")
    return out


def _people(frame: pd.DataFrame, money: Money, why: bool = True) -> str:
    """Customers with their numbers, action and reasons (``value_reasons`` when published, else the potential
    drivers); ``why=False`` leaves out the action's reason (a table grouped by action shows it once)."""
    value_col = "value_reasons" if "value_reasons" in frame else "potential_drivers"
    rows = []
    for r in frame.itertuples():
        row = [f"{r.potential_rank:,}", _e(r.customer_id), _e(r.priority_tier), _e(r.lifecycle_stage),
               money.full(r.clv), _pct(r.churn_probability), _e(str(r.next_best_action).replace("_", " "))
               + f"<br><small class='muted'>{_e(str(r.action_channel).replace('_', ' '))}</small>"]
        row += [_e(getattr(r, "action_reason", ""))] if why else []
        rows.append(row + [_e(getattr(r, value_col, "")), _e(getattr(r, "top_reasons", ""))])
    head = ["rank", "customer", "tier", "stage", "CLV", "churn", "action"]
    widths = ["5%", "9%", "4%", "7%", "7%", "5%", "11%"]
    text = ["why this action"] * why + [value_col.replace("_", " "), "churn reasons"]
    return _table(head + text, rows, numeric={0, 4, 5}, cls="data people",
                  widths=widths + [f"{52 / len(text):.2f}%"] * len(text))


def _top_customers(s: pd.DataFrame, money: Money, published: PublishedTables, per_tier: int = 3,
                   per_action: int = 3) -> list[str]:
    ranked = s.sort_values("potential_rank")
    tiers = _with_texts(published, ranked.groupby("priority_tier", sort=True).head(per_tier))
    order = {a: i for i, a in enumerate(_ordered_actions(s))}
    actions = _with_texts(published, ranked.groupby("next_best_action").head(per_action).sort_values(
        ["next_best_action", "potential_rank"], key=lambda c: c.map(order) if c.name == "next_best_action" else c))
    return [f"<h3>Top {per_tier} per tier</h3>", _people(tiers, money),
            f"<h3>Top {per_action} per action</h3>", _people(actions, money, why=False)]


def _run_order(runs: pd.DataFrame, run_id: str) -> list[tuple[str, str]]:
    """(run_id, label) of the published runs, oldest first, ending with ``run_id``; label = as-of date."""
    done = runs[runs.published.fillna(False).astype(bool)] if "published" in runs else runs
    done = done.sort_values("finished_at")
    ids = [r for r in done.run_id if r != run_id][-(TREND_RUNS - 1):] + [run_id]
    as_of = dict(zip(runs.run_id, runs.as_of_date))
    labels, seen = [], {}
    for r in ids:
        label = str(pd.Timestamp(as_of[r]).date()) if r in as_of and pd.notna(as_of[r]) else r[:8]
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return list(zip(ids, labels))


def _primary(task: str, metrics: set[str]) -> str | None:
    if PRIMARY_METRIC.get(task) in metrics:
        return PRIMARY_METRIC[task]
    candidates = sorted(m for m in metrics if any(w in m for w in ("auc", "gini", "hit_rate")))
    return candidates[0] if candidates else next(iter(sorted(metrics - {"n_customers"})), None)


def model_health(performance: pd.DataFrame, runs: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task of this run: champion, headline metric, its value, the best baseline (a naive, recency or
    popularity model; else the best other model) and its value, the champion's value over the last runs.
    Also the long trend frame the trend figure draws (task, metric, run, role, value)."""
    order = _run_order(runs, run_id)
    params = {}
    mine = runs[runs.run_id == run_id]
    if len(mine) and "parameters" in mine and mine.parameters.iloc[0]:
        params = json.loads(mine.parameters.iloc[0])
    now = performance[performance.run_id == run_id]
    table, trend = [], []
    for task in dict.fromkeys(now.task):
        part = now[now.task == task]
        metric = _primary(task, set(part.metric))
        champions = part[part.is_champion.fillna(False).astype(bool)].model_name.unique()
        if metric is None or not len(champions):
            continue
        champion = champions[0]
        # a challenger that lost to the champion shares its model name: the champion's rows speak for the name
        flagged = part.assign(_champion=part.is_champion.fillna(False).astype(bool))
        part = flagged[flagged._champion | (flagged.model_name != champion)]
        values = part[part.metric == metric].drop_duplicates("model_name").set_index("model_name").value
        if champion not in values.index:
            continue
        others = values.drop(champion, errors="ignore")
        named = others[[any(w in m for w in BASELINE_WORDS) for m in others.index]]
        pool = named if len(named) else others
        baseline = pool.idxmax() if len(pool) else None
        second_metric, second_label = SECOND_METRIC.get(task, (None, None))
        second = part[(part.metric == second_metric) & (part.model_name == champion)].value
        n = part[(part.metric == "n_customers") & (part.model_name == champion)].value
        history = []
        for rid, label in order:
            rows = performance[(performance.run_id == rid) & (performance.task == task)
                               & (performance.metric == metric)]
            champ = rows[rows.is_champion.fillna(False).astype(bool)].value
            base = rows[rows.model_name == baseline].value if baseline else pd.Series(dtype=float)
            if len(champ):
                history.append(float(champ.iloc[0]))
                trend.append(dict(task=TASK_LABELS.get(task, task), metric=metric, run=label, role="champion",
                                  value=float(champ.iloc[0])))
            if len(base):
                trend.append(dict(task=TASK_LABELS.get(task, task), metric=metric, run=label, role="baseline",
                                  value=float(base.iloc[0])))
        window = part[part.model_name == champion].iloc[0]
        table.append(dict(
            task=TASK_LABELS.get(task, task), champion=champion, metric=metric, value=float(values[champion]),
            baseline=baseline, baseline_value=float(values[baseline]) if baseline else None,
            floor=params.get(FLOOR_PARAMETER.get(task, ""), None), trend=history,
            second_label=second_label, second=float(second.iloc[0]) if len(second) else None,
            test_window=f"{pd.Timestamp(window.test_window_start).date()} to "
                        f"{pd.Timestamp(window.test_window_end).date()}"
            if pd.notna(window.test_window_start) else "", customers=int(n.iloc[0]) if len(n) else None))
    return pd.DataFrame(table), pd.DataFrame(trend)


def _models(performance: pd.DataFrame, runs: pd.DataFrame, run_id: str, plots_dir: Path | None) -> list[str]:
    table, trend = model_health(performance, runs, run_id)
    rows = []
    for r in table.itertuples():
        lift = "" if r.baseline_value is None or pd.isna(r.baseline_value) else (
            f"{r.value - r.baseline_value:+.3f}" if r.value >= r.baseline_value
            else f"<b class=bad>{r.value - r.baseline_value:+.3f}</b>")
        floor = "" if r.floor is None or pd.isna(r.floor) else (
            f"{'above' if r.value >= r.floor else '<b class=bad>below</b>'} {r.floor:g}")
        trend_text = " → ".join(f"{v:.3f}" for v in r.trend)
        rows.append([f"<b>{_e(r.task)}</b>", _e(r.champion), _e(r.metric.replace("_", " ")), f"{r.value:.3f}",
                     _e(r.baseline or "") + ("" if r.baseline_value is None or pd.isna(r.baseline_value)
                                             else f" {r.baseline_value:.3f}"),
                     lift, floor, trend_text,
                     "" if r.second is None or pd.isna(r.second) else f"{_e(r.second_label)} {r.second:.3f}",
                     _e(r.test_window) + ("" if r.customers is None or pd.isna(r.customers) else
                                          f"<br><small class='muted'>{int(r.customers):,} customers</small>")])
    out = [_table(["task", "champion", "metric", "champion", "baseline", "vs baseline", "floor",
                   f"trend (last {TREND_RUNS} runs)", "level check", "test window"], rows,
                  numeric={3, 5}, widths=["10%", "12%", "10%", "7%", "15%", "7%", "8%", "10%", "11%", "10%"])]
    if len(trend) and trend.run.nunique() > 1:
        out.append(_img(_png(plots.model_trend(trend)), "Headline back-test metric per run, champion and baseline"))
    else:
        out.append("<p class='muted'>The trend chart starts with the second published run.</p>")
    model_plots = sorted(Path(plots_dir).glob("*.png")) if plots_dir and Path(plots_dir).exists() else []
    if model_plots:
        figures = "".join(_img(base64.b64encode(p.read_bytes()).decode(), p.stem.replace("_", " "),
                               p.stem.replace("_", " ")) for p in model_plots)
        out.append(f"<details><summary>Model plots ({len(model_plots)}): calibration, ROC, lift, deciles, "
                   f"feature importance</summary><div class='grid'>{figures}</div></details>")
    return out


def _campaigns(campaigns: pd.DataFrame, money: Money) -> list[str]:
    total = campaigns[campaigns.is_campaign_total] if "is_campaign_total" in campaigns else campaigns
    if not len(total):
        return ["<p>No campaigns in view.</p>"]
    window = int(total.response_window_days.iloc[0]) if "response_window_days" in total else None
    out = [_img(_png(plots.campaign_returns(total, money.currency)),
                "Campaign revenue against cost, and response rates")]
    by = total.groupby("channel").agg(campaigns=("campaign_id", "nunique"), reach=("reach", "sum"),
                                      responders=("responders", "sum"), revenue=("revenue_after_response", "sum"),
                                      cost=("campaign_cost", "sum")).sort_values("revenue", ascending=False)
    rows = [[_e(r.Index), f"{r.campaigns:,}", f"{r.reach:,}", f"{r.responders:,}",
             _pct(r.responders / max(r.reach, 1), 1), money.full(r.revenue), money.full(r.cost),
             f"{r.revenue / r.cost:.2f}" if r.cost else ""] for r in by.itertuples()]
    out.append(_table(["channel", "campaigns", "reached", "responders", "response rate", "revenue after response",
                       "cost", "revenue per unit of cost"], rows, numeric=set(range(1, 8))))
    if window:
        out.append(f"<p class='muted'>Revenue after response: orders within {window} days of a response "
                   "(not proven to be caused by the campaign).</p>")
    return out


def _quality(checks: CheckSummary, run: pd.Series | None, quality_href: str | None) -> list[str]:
    """One check count, the one in ``pipeline_runs``: the checks evaluated before the publish step wrote the
    record. Checks on the publication (read back after the swap) and on this report run later; they are
    named here, so the report, ``pipeline_runs`` and Dagster's run page can be told apart."""
    later = [r for r in checks.rows if r[0].startswith("serving/")]
    if run is not None and pd.notna(run.get("checks_passed")):
        passed, failed = int(run.checks_passed), int(run.checks_failed)
    else:  # no record (a report rebuilt from an old file): count the evaluations before publishing
        before = [r for r in checks.rows if not r[0].startswith("serving/")]
        passed, failed = sum(r[2] for r in before), sum(not r[2] for r in before)
    later_text = "; ".join(f"{_e(c)} on {_e(a)} {'passed' if ok else '<b class=bad>failed</b>'}"
                           for a, c, ok, _ in later)
    pending = ", ".join(_e(c) for c in checks.later_checks)
    out = [f"<p><b>{passed:,}</b> checks passed and <b>{failed:,}</b> failed before publishing (the count in "
           "<code>pipeline_runs</code>; blocking checks stop a run before it publishes, so a published run has none "
           "failed)." + (f" After the swap: {later_text}." if later_text else "")
           + (f" Still to run on this report: {pending} (Dagster's run page counts "
              f"{passed + failed + len(later) + len(checks.later_checks):,})." if pending else "") + "</p>"]
    if run is not None and "rows_quarantined" in run and pd.notna(run.rows_quarantined):
        rules = json.loads(run.quarantined_by_rule) if isinstance(run.get("quarantined_by_rule"), str) else {}
        parts = [f"{_e(entity)}: " + ", ".join(f"{_e(rule)} {n:,}" for rule, n in by.items())
                 for entity, by in rules.items() if by]
        out.append(f"<p><b>{int(run.rows_quarantined):,}</b> source rows quarantined"
                   + (" (" + "; ".join(parts) + ")" if parts else "") + ".</p>")
    failed_rows = [r for r in checks.rows if not r[2]]
    if failed_rows:
        out.append(_table(["asset", "check", "description"], [[_e(a), _e(c), _e(d)] for a, c, _, d in failed_rows]))
    if checks.gx_suites:
        rows = [[_e(s.asset), f"{s.rows:,}" if s.rows is not None else "", f"{len(s.expectations):,}",
                 f"{s.failed:,}", "passed" if s.success else "<b class=bad>failed</b>",
                 _e(f"{s.validated_at:%H:%M:%S} UTC")]
                for s in checks.gx_suites]
        out.append("<h3>Great Expectations suites</h3>" + _table(
            ["table", "rows", "expectations", "failed", "result", "validated"], rows, numeric={1, 2, 3}))
    if quality_href:
        out.append(f'<p>Every check and expectation of this run: <a href="{_e(quality_href)}">quality page</a> '
                   "(one file, opens offline).</p>")
    return out


STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:16px 0 8px;border-bottom:1px solid #e3e3e3;padding-bottom:3px}
h3{font-size:14px;margin:14px 0 6px}
.meta{color:#555;margin:0 0 6px}.note{color:#555;font-size:12px;margin:-4px 0 0}
nav{font-size:12px;margin:0 0 4px}nav a{color:#1b5e8c;margin-right:10px;text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}.cards.five{grid-template-columns:repeat(5,1fr)}
.card{border:1px solid #dde3ea;border-radius:6px;padding:7px 10px;background:#f8fafc;min-width:0}
.card-title{font-size:12px;color:#555;text-transform:uppercase;letter-spacing:.03em}
.card-value{font-size:22px;font-weight:600;margin:2px 0}.card-note{font-size:12px;color:#555}
.delta{font-size:12px;font-weight:600;white-space:nowrap}.delta.good{color:#1e7b34}
.delta.bad,.bad{color:#b3261e}.delta.flat{color:#777}
table.data{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px;width:100%;table-layout:fixed}
table.data th{background:#f1f4f7;font-weight:600;text-align:left;padding:4px 6px;vertical-align:bottom}
table.data td{padding:3px 6px;border-bottom:1px solid #e8e8e8;vertical-align:top;overflow-wrap:anywhere}
table.data .num{text-align:right}table.people td{font-size:12px}
ul.reasons{margin:4px 0;padding-left:20px;font-size:12.5px}
small{font-size:11px}.muted{color:#777}
figure{margin:6px 0}img{max-width:100%;height:auto;display:block}figcaption{font-size:12px;color:#666}
.two{display:grid;grid-template-columns:1fr 1fr;gap:20px}.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}
details{margin:8px 0}summary{cursor:pointer;color:#1b5e8c}
code{font-size:12px}
"""


def build_report(published: PublishedTables, previous: PublishedTables | None, plots_dir: Path | None,
                 checks: CheckSummary, run_id: str, currency: str = "EUR", quality_href: str | None = None,
                 columns: dict[str, list[str]] | None = REPORT_COLUMNS) -> str:
    """The report's HTML for ``run_id``, from the publication (``orchestration/published.py``) and the one
    before it; of the per-customer tables only ``columns`` are read (None: every column)."""
    money = Money(currency)
    data = _read(published, ["customer_scores", "customer_profile", "segment_summary", "lifecycle_funnel",
                                      "campaign_effectiveness", "model_performance", "pipeline_runs"], columns)
    now = Snapshot(data["customer_scores"], data.get("customer_profile"))
    before = None
    if previous is not None:
        old = _read(previous, ["customer_scores", "customer_profile"], columns)
        if "customer_scores" in old and len(old["customer_scores"]):
            before = Snapshot(old["customer_scores"], old.get("customer_profile"))
    runs = data.get("pipeline_runs", pd.DataFrame(columns=["run_id", "as_of_date", "published", "finished_at"]))
    mine = runs[runs.run_id == run_id]
    run = mine.iloc[0] if len(mine) else None
    params = json.loads(run.parameters) if run is not None and isinstance(run.get("parameters"), str) else {}
    clv_horizon = horizon(int(params.get("clv_horizon_days", 365)))
    churn_horizon = horizon(int(params.get("churn_horizon_days", 90)))
    s = now.scores
    compared = (f"compared with the publication as of <b>{_e(before.as_of)}</b>" if before else
                "first publication kept here: nothing to compare with yet")
    seconds = ""
    if run is not None and pd.notna(run.get("started_at")) and pd.notna(run.get("finished_at")):
        seconds = f" &middot; ran {(run.finished_at - run.started_at).total_seconds():,.0f} s"
    nav = "".join(f'<a href="#{_anchor(t)}">{_e(t)}</a>' for t in SECTIONS[3:])
    night = str(pd.Timestamp(run.as_of_date).date()) if run is not None and pd.notna(run.get("as_of_date")) else None
    backfilled = (f"<p class='meta'><b>This run added the night of {_e(night)} to the score history</b> "
                  f"(customer_scores_history, segment_history); the tables below are the latest publication, as of "
                  f"{_e(now.as_of)}: an earlier night never replaces it.</p>" if night and night != now.as_of else "")

    def section(title: str, *body: str) -> str:
        return f'<section id="{_anchor(title)}"><h2>{_e(title)}</h2>' + "\n".join(body) + "</section>"

    parts = [
        f"<header><h1>Customer potential: run briefing, as of {_e(now.as_of)}</h1>"
        f"<p class='meta'>Run <code>{_e(run_id[:8])}</code> &middot; {compared} &middot; amounts in "
        f"<b>{_e(currency)}</b>, CLV over the next {clv_horizon}{seconds}</p>{backfilled}<nav>{nav}</nav></header>",
        section("Since the last run", _changes(now, before, money)),
        section("Five numbers", _five_numbers(now, before, money, clv_horizon)),
        section("Actions by channel", "<p class='note'>Customers per next best action and channel, with their "
                "expected value (CLV) in small print.</p>", _actions_by_channel(s, money)),
        section("Scores and value", _img(_png(plots.score_distributions(s, currency, clv_horizon, churn_horizon)),
                                         "Distributions of the potential score, CLV and churn probability")),
        section("Segments", *_segments(data.get("segment_summary", pd.DataFrame(columns=["cut_type"])), money)),
        section("Lifecycle funnel", *_funnel(data["lifecycle_funnel"])),
        section("Top customers", *_top_customers(s, money, published)),
        section("Model health", *_models(data["model_performance"], runs, run_id, plots_dir)),
        section("Campaigns", *_campaigns(data["campaign_effectiveness"], money)),
        section("Quality", *_quality(checks, run, quality_href)),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Customer potential briefing {_e(now.as_of)}</title><style>{STYLE}</style></head><body><main>"
            + "\n".join(parts) + f"<p class='muted'>run {_e(run_id)}</p></main></body></html>")


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def build_quality_page(checks: CheckSummary, run_id: str, as_of: str, data_docs_href: str | None = None) -> str:
    """Every Dagster check of the run and every Great Expectations expectation, in one self-contained page."""
    by_asset: dict[str, list] = {}
    for row in checks.rows:
        by_asset.setdefault(row[0], []).append(row)
    summary = [[_e(asset), f"{len(rows):,}", f"{sum(r[2] for r in rows):,}", f"{sum(not r[2] for r in rows):,}"]
               for asset, rows in sorted(by_asset.items())]
    parts = [f"<h1>Quality checks, run {_e(run_id[:8])} (as of {_e(as_of)})</h1>",
             '<p><a href="../latest.html">latest report</a> &middot; '
             f'<a href="../run_{_e(run_id)}.html">this run\'s report</a></p>',
             "<h2>Dagster asset checks per asset</h2>",
             _table(["asset", "checks", "passed", "failed"], summary, numeric={1, 2, 3})]
    for suite in checks.gx_suites:
        rows = [[_e(e["type"].replace("expect_", "")), _e(e["column"]),
                 "passed" if e["success"] else "<b class=bad>failed</b>", _e(e["detail"])] for e in suite.expectations]
        parts.append(f"<h2>Great Expectations: {_e(suite.asset)}</h2><p>{suite.rows or 0:,} rows, validated "
                     f"{suite.validated_at:%Y-%m-%d %H:%M:%S} UTC, suite {_e(suite.suite)}: "
                     f"{'passed' if suite.success else '<b class=bad>failed</b>'}</p>"
                     + _table(["expectation", "column", "result", "detail"], rows))
    parts.append("<h2>Every check</h2>" + _table(
        ["asset", "check", "result", "description"],
        [[_e(a), _e(c), "passed" if ok else "<b class=bad>failed</b>", _e(d)] for a, c, ok, d in checks.rows],
        widths=["20%", "22%", "8%", "50%"]))
    if data_docs_href:
        parts.append(f'<p class="muted">Great Expectations\' own Data Docs: <a href="{_e(data_docs_href)}">'
                     "data_docs/local_site/index.html</a> (they load their styles from the internet).</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Quality checks {_e(as_of)}</title><style>{STYLE}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>")


def write_report(text: str, reports_dir: Path, run_id: str) -> tuple[Path, Path]:
    """``run_<run_id>.html`` and a copy at the fixed path ``latest.html`` (replaced atomically)."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"run_{run_id}.html"
    path.write_text(text, encoding="utf-8")
    tmp = reports_dir / ".latest.html.tmp"
    shutil.copyfile(path, tmp)
    tmp.replace(reports_dir / "latest.html")
    return path, reports_dir / "latest.html"


def write_quality_page(text: str, reports_dir: Path, run_id: str) -> Path:
    """The run's quality page, ``<run_id>/quality.html`` beside the run's plots (the report links it)."""
    path = Path(reports_dir) / run_id / "quality.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
