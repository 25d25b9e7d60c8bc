"""Plots for the value models (PNG, matplotlib Agg backend, no display or network needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402



def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration_by_frequency(backtest: pd.DataFrame, path: Path, max_group: int = 7, label: str = "BTYD") -> Path:
    """Mean holdout purchases, actual vs BTYD-predicted, by number of calibration repeat purchases."""
    buyers = backtest[backtest.n_orders > 0]
    group = np.minimum(buyers.frequency.to_numpy(int), max_group)
    table = pd.DataFrame({"group": group, "actual": buyers.actual_purchases, "predicted": buyers.btyd_expected_purchases})
    agg = table.groupby("group").mean()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(agg.index, agg.actual, "o-", label="actual")
    ax.plot(agg.index, agg.predicted, "s--", label=f"{label} predicted")
    ax.set_xticks(agg.index, [str(i) if i < max_group else f"{max_group}+" for i in agg.index])
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("mean purchases in the holdout window")
    ax.set_title(f"{label} calibration vs holdout")
    ax.legend()
    return _save(fig, path)


def frequency_recency_matrices(fit, horizon_days: int, T_days: float, path_expected: Path,
                               path_alive: Path, max_frequency: int = 30) -> tuple[Path, Path]:
    """Expected purchases in the horizon and P(alive) for a customer observed ``T_days`` days, from a fitted
    BTYD model (``ml.value_models.BtydFit``: any member of the family)."""
    freq = np.arange(0, max_frequency + 1, dtype=float)
    rec = np.linspace(0, T_days, 40)
    F, R = np.meshgrid(freq, rec, indexing="ij")
    R = np.where(F == 0, 0.0, R)
    T = np.full(F.size, T_days)
    expected = fit.spec.expected_purchases(fit.params, horizon_days, F.ravel(), R.ravel(), T).reshape(F.shape)
    alive = fit.spec.p_alive(fit.params, F.ravel(), R.ravel(), T).reshape(F.shape)
    paths = []
    for values, title, path in ((expected, f"expected purchases in the next {horizon_days} days", path_expected),
                                (alive, "probability alive", path_alive)):
        fig, ax = plt.subplots(figsize=(6.5, 5))
        im = ax.imshow(values, origin="lower", aspect="auto", extent=[0, T_days, 0, max_frequency], cmap="viridis")
        fig.colorbar(im, ax=ax)
        ax.set_xlabel("recency: days from first to last purchase")
        ax.set_ylabel("frequency: repeat purchases")
        ax.set_title(f"{fit.spec.label}: {title}\n(customers first seen {T_days:.0f} days ago)")
        paths.append(_save(fig, path))
    return paths[0], paths[1]


def spend_by_decile(backtest: pd.DataFrame, models: list[str], ranking_model: str, path: Path) -> Path:
    """Mean actual vs predicted spend per decile of the ranking model's prediction."""
    order = backtest[ranking_model].rank(method="first", ascending=False)
    decile = np.ceil(order / len(backtest) * 10).astype(int).clip(1, 10)
    agg = backtest.assign(decile=decile).groupby("decile")[["actual_spend", *models]].mean()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / (len(models) + 1)
    ax.bar(agg.index - 0.4 + width / 2, agg.actual_spend, width, label="actual")
    for i, m in enumerate(models, start=1):
        ax.bar(agg.index - 0.4 + width / 2 + i * width, agg[m], width, label=m)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel(f"decile of predicted spend ({ranking_model}; 1 = highest)")
    ax.set_ylabel("mean spend in the holdout window")
    ax.set_title("Predicted vs actual spend by decile (back-test)")
    ax.legend()
    return _save(fig, path)


def churn_plots(y: np.ndarray, predictions: dict[str, np.ndarray], importance: dict[str, float],
                folder: Path) -> dict[str, Path]:
    """ROC curves, calibration curves, lift chart (back-test window) and feature importance."""
    from sklearn.metrics import roc_curve

    paths = {}
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in predictions.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Churn ROC (back-test window)")
    ax.legend()
    paths["churn_roc"] = _save(fig, folder / "churn_roc.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in predictions.items():
        order = np.argsort(p)
        bins = np.array_split(order, 10)
        ax.plot([p[b].mean() for b in bins], [y[b].mean() for b in bins], "o-", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("predicted churn probability (decile mean)")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Churn calibration (back-test window)")
    ax.legend()
    paths["churn_calibration"] = _save(fig, folder / "churn_calibration.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(predictions)
    for i, (name, p) in enumerate(predictions.items()):
        order = np.argsort(-p, kind="stable")
        lift = [y[b].mean() / y.mean() for b in np.array_split(order, 10)]
        ax.bar(np.arange(1, 11) - 0.4 + width * (i + 0.5), lift, width, label=name)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("decile of predicted churn (1 = highest risk)")
    ax.set_ylabel("lift (churn rate / average)")
    ax.set_title("Churn lift by decile")
    ax.legend()
    paths["churn_lift"] = _save(fig, folder / "churn_lift.png")

    top = list(importance.items())[:15][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set_xlabel("mean |change in risk score| when set to a typical value")
    ax.set_title("Churn model: feature importance")
    paths["churn_feature_importance"] = _save(fig, folder / "churn_feature_importance.png")
    return paths


# ---- figures of the run report (orchestration/report.py): each returns a Figure sized for a 1,180 px column ----

CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "INR": "₹"}
TIER_COLOURS = {"A": "#1b5e8c", "B": "#4f93c4", "C": "#9cc3e0", "D": "#d5e3ef"}
REPORT_WIDTH_IN = 11.8  # inches at 100 dpi: the report's content column


def currency_prefix(code: str) -> str:
    """What goes before an amount: the symbol of a common currency, else the ISO code and a space."""
    code = (code or "").strip().upper()
    return CURRENCY_SYMBOLS.get(code, f"{code} " if code else "")


def short_money(value: float, currency: str) -> str:
    """An amount for a chart label or a headline card: ``€1.2M``, ``€35k``, ``€820``, ``€0.5``."""
    prefix = currency_prefix(currency)
    sign = "-" if value < 0 else ""
    v = abs(float(value))
    for bound, suffix in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
        if v >= bound:
            digits = 1 if v < 10 * bound else 0
            return f"{sign}{prefix}{v / bound:,.{digits}f}{suffix}"
    return f"{sign}{prefix}{v:,.0f}" if v >= 10 else f"{sign}{prefix}{v:.2g}"


def _money_axis(axis, currency: str) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: short_money(v, currency)))


def score_distributions(scores: pd.DataFrame, currency: str, clv_horizon: str = "12 months",
                        churn_horizon: str = "90 days") -> plt.Figure:
    """Three histograms of ``customer_scores``: the potential score stacked by tier, CLV on a log axis in the
    currency (customers at 0 counted in the title; the axis shows amounts, never negative exponents) and the
    churn probability with customers who never bought apart (their probability is not a buyer's)."""
    fig, axes = plt.subplots(1, 3, figsize=(REPORT_WIDTH_IN, 3.3))
    tiers = sorted(scores.priority_tier.dropna().unique())
    bins = np.linspace(0, 100, 41)
    axes[0].hist([scores.potential_score[scores.priority_tier == t].dropna() for t in tiers], bins=bins, stacked=True,
                 color=[TIER_COLOURS.get(t, "#999") for t in tiers], label=[f"tier {t}" for t in tiers])
    axes[0].set_xlabel("potential score (0-100)")
    axes[0].set_ylabel("customers")
    axes[0].set_title("Potential score by tier")
    axes[0].legend(fontsize=8, frameon=False)

    clv = scores.clv.to_numpy(float)
    positive = clv[clv > 0]
    zero = int((clv <= 0).sum())
    if len(positive):
        low = max(10 ** np.floor(np.log10(np.quantile(positive, 0.01))), 0.01)
        high = max(positive.max(), low * 10)
        edges = np.logspace(np.log10(low), np.log10(high), 40)
        axes[1].hist(np.clip(positive, low, high), bins=edges, color="#3f7f3f")
        axes[1].set_xscale("log")
        _money_axis(axes[1].xaxis, currency)
    axes[1].set_xlabel(f"CLV, next {clv_horizon} ({currency}, log scale)")
    axes[1].set_ylabel("customers")
    axes[1].set_title("CLV" + (f" ({zero:,} customers at 0 not shown)" if zero else ""))

    prospect = (scores.lifecycle_stage == "prospect").to_numpy() if "lifecycle_stage" in scores else \
        np.zeros(len(scores), bool)
    churn = scores.churn_probability.to_numpy(float)
    known = ~np.isnan(churn)
    axes[2].hist([churn[~prospect & known], churn[prospect & known]], bins=np.linspace(0, 1, 41), stacked=True,
                 color=["#a33b3b", "#e2b4b4"], label=["bought before", "never bought (prospects)"])
    axes[2].set_xlabel(f"churn probability (next {churn_horizon})")
    axes[2].set_ylabel("customers")
    axes[2].set_title("Churn probability")
    axes[2].legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def segment_value_by_size(segments: pd.DataFrame, currency: str, title: str) -> plt.Figure:
    """Each segment's share of the customers beside its share of the expected value (``segment``,
    ``customers``, ``total_clv``): a segment whose value bar is longer than its size bar is worth more than
    its head count. Sorted by value, amounts written at the bars."""
    frame = segments.sort_values("total_clv").reset_index(drop=True)
    size = frame.customers / frame.customers.sum()
    value = frame.total_clv / max(frame.total_clv.sum(), 1e-12)
    y = np.arange(len(frame))
    fig, ax = plt.subplots(figsize=(REPORT_WIDTH_IN, 1.0 + 0.27 * len(frame)))
    ax.barh(y + 0.2, size, 0.4, color="#b9b9b9", label="share of customers")
    ax.barh(y - 0.2, value, 0.4, color="#3f7f3f", label="share of expected value (CLV)")
    for i, row in frame.iterrows():
        ax.text(max(size[i], value[i]) + 0.005, i,
                f"{row.customers:,} customers · {short_money(row.total_clv, currency)}", va="center", fontsize=8,
                color="#333")
    ax.set_yticks(y, frame.segment)
    ax.set_xlim(0, max(size.max(), value.max()) * 1.3)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of all customers / of all expected value")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


STAGE_COLOURS = {"(joined)": "#9e9e9e", "prospect": "#c8c8c8", "new": "#8fc1e3", "active": "#5aa0d0",
                 "repeat": "#4f9a5a", "loyal": "#2e7d32", "at risk": "#f0a030", "lapsed": "#d9622b",
                 "churned": "#a33b3b"}


def lifecycle_flows(flows: pd.DataFrame, stage_order: list[str], title: str) -> plt.Figure:
    """Stage-to-stage flows over one period (``from_stage``, ``to_stage``, ``customers``) as an alluvial
    diagram: stages at the start of the period on the left, at its end on the right, bands as wide as the
    customers who moved, coloured by the stage they reached."""
    total = float(flows.customers.sum())
    gap = total * 0.018
    order = {s: i for i, s in enumerate(stage_order)}
    key = lambda s: order.get(s, len(order))  # noqa: E731
    left = flows.groupby("from_stage").customers.sum()
    right = flows.groupby("to_stage").customers.sum()

    def positions(sizes: pd.Series) -> dict[str, float]:
        top, out = 0.0, {}
        for stage in sorted(sizes.index, key=key):
            out[stage] = top
            top += sizes[stage] + gap
        return out

    y_left, y_right = positions(left), positions(right)
    height = max(sum(left) + gap * (len(left) - 1), sum(right) + gap * (len(right) - 1))
    fig, ax = plt.subplots(figsize=(REPORT_WIDTH_IN, 5.2))
    x0, x1, w = 0.0, 1.0, 0.035
    t = np.linspace(0, 1, 60)
    s = 3 * t ** 2 - 2 * t ** 3  # smooth step between the two columns
    out_used = {k: 0.0 for k in y_left}
    in_used = {k: 0.0 for k in y_right}
    for row in flows.sort_values(["from_stage", "to_stage"], key=lambda c: c.map(key)).itertuples():
        a = y_left[row.from_stage] + out_used[row.from_stage]
        b = y_right[row.to_stage] + in_used[row.to_stage]
        out_used[row.from_stage] += row.customers
        in_used[row.to_stage] += row.customers
        xs = x0 + w + (x1 - x0 - 2 * w) * t
        low = a + (b - a) * s
        ax.fill_between(xs, low, low + row.customers, color=STAGE_COLOURS.get(row.to_stage, "#888"), alpha=0.55,
                        lw=0)
    for stages, y, x, ha, dx in ((left, y_left, x0, "right", -0.01), (right, y_right, x1 - w, "left", w + 0.01)):
        for stage, n in stages.items():
            ax.add_patch(plt.Rectangle((x, y[stage]), w, n, color=STAGE_COLOURS.get(stage, "#888")))
            ax.text(x + dx, y[stage] + n / 2, f"{stage}  {n:,}", ha=ha, va="center", fontsize=9)
    ax.set_xlim(-0.16, 1.16)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(x0 + w / 2, -gap * 0.6, "start of the period", ha="center", fontsize=9, color="#555")
    ax.text(x1 - w / 2, -gap * 0.6, "as-of date", ha="center", fontsize=9, color="#555")
    ax.set_title(title, pad=18)
    fig.tight_layout()
    return fig


def model_trend(trend: pd.DataFrame) -> plt.Figure:
    """The headline back-test metric per task over the last runs (``task``, ``metric``, ``run``, ``role``
    in champion/baseline, ``value``): one small panel per task, champion and baseline as lines."""
    tasks = list(dict.fromkeys(trend.task))
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(REPORT_WIDTH_IN, 2.6), squeeze=False)
    for i, (ax, task) in enumerate(zip(axes[0], tasks)):
        part = trend[trend.task == task]
        runs = list(dict.fromkeys(part.run))
        for role, style in (("champion", "o-"), ("baseline", "s--")):
            series = part[part.role == role].set_index("run").value.reindex(runs)
            if series.notna().any():
                ax.plot(range(len(runs)), series.to_numpy(float), style, label=role)
        ax.set_xticks(range(len(runs)), runs, fontsize=8)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set_xlabel("run (as-of date)")
        ax.set_ylabel(part.metric.iloc[0].replace("_", " "))
        ax.set_title(task, fontsize=10)
        if i == 0:
            ax.legend(fontsize=8, frameon=False)
    for ax in axes[0][len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def campaign_returns(campaigns: pd.DataFrame, currency: str) -> plt.Figure:
    """Revenue after response against the campaign's cost, one dot per campaign (``campaign_name``,
    ``channel``, ``reach``, ``campaign_cost``, ``revenue_after_response``, ``response_rate``), sized by reach,
    coloured by channel, with the break-even line; beside it the response rate per channel."""
    fig, axes = plt.subplots(1, 2, figsize=(REPORT_WIDTH_IN, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    channels = sorted(campaigns.channel.dropna().unique())
    colours = dict(zip(channels, plt.cm.tab10.colors))
    size = 15 + 185 * campaigns.reach / max(campaigns.reach.max(), 1)
    for ch in channels:
        part = campaigns.channel == ch
        ax.scatter(campaigns.campaign_cost[part], campaigns.revenue_after_response[part], s=size[part],
                   color=colours[ch], alpha=0.7, label=ch, edgecolors="white", linewidths=0.5)
    top = float(max(campaigns.campaign_cost.max(), campaigns.revenue_after_response.max(), 1))
    ax.plot([0, top], [0, top], "k:", lw=0.8, label="break-even")
    ax.set_xlim(0, campaigns.campaign_cost.max() * 1.05 + 1)
    ax.set_ylim(0, campaigns.revenue_after_response.max() * 1.1 + 1)
    _money_axis(ax.xaxis, currency)
    _money_axis(ax.yaxis, currency)
    ax.set_xlabel(f"campaign cost ({currency})")
    ax.set_ylabel(f"revenue after response ({currency})")
    ax.set_title("Campaigns: revenue after response vs cost (dot size: reach)")
    legend = ax.legend(fontsize=8, loc="upper left", framealpha=0.9, ncol=len(channels) + 1, columnspacing=1.0)
    for handle in legend.legend_handles:
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([30])
    by_channel = campaigns.groupby("channel").agg(reach=("reach", "sum"), responders=("responders", "sum"))
    rate = (by_channel.responders / by_channel.reach.clip(lower=1)).reindex(channels)
    axes[1].barh(channels, rate, color=[colours[c] for c in channels])
    for i, (ch, r) in enumerate(rate.items()):
        axes[1].text(r, i, f" {r:.1%}", va="center", fontsize=8)
    axes[1].set_xlim(0, max(rate.max() * 1.3, 0.01))
    axes[1].xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    axes[1].set_xlabel("response rate (responders / reached)")
    axes[1].set_title("Response rate per channel")
    fig.tight_layout()
    return fig
