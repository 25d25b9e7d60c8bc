"""The run report: one self-contained HTML file per run that a manager can open (no network needed).

Headline numbers, score and CLV distributions, segment sizes and values, the lifecycle funnel, the top 50
customers with reasons and actions, model metrics and plots, and the quality-check summary. Everything is
read from the published serving database (what BI sees) plus the run's model plots; images are inlined
as base64 PNG, so the file can be mailed or archived as is.
"""

from __future__ import annotations

import base64
import html
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SECTIONS = ["Headline", "Distributions", "Segments", "Lifecycle funnel", "Top 50 customers", "Models",
            "Quality checks"]


@dataclass
class CheckSummary:
    passed: int = 0
    failed: int = 0
    rows: list[tuple[str, str, bool, str]] = field(default_factory=list)  # asset, check, passed, description
    data_docs: Path | None = None


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(data: str, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(frame: pd.DataFrame, floats: str = "{:,.2f}") -> str:
    formatters = {c: (lambda v, f=floats: "" if pd.isna(v) else f.format(v))
                  for c in frame.columns if pd.api.types.is_float_dtype(frame[c])}
    return frame.to_html(index=False, border=0, classes="data", formatters=formatters, na_rep="", escape=True)


def _distributions(scores: pd.DataFrame) -> list[str]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].hist(scores.potential_score, bins=40, color="#2f6f9f")
    axes[0].set_xlabel("potential score (0-100)")
    axes[0].set_ylabel("customers")
    axes[0].set_title("Potential score")
    clv = scores.clv.to_numpy(float)
    axes[1].hist(np.log10(clv[clv > 0]), bins=40, color="#6f9f2f")
    axes[1].set_xlabel("CLV, log10 (customers with CLV > 0)")
    axes[1].set_title(f"CLV ({int((clv <= 0).sum()):,} customers at 0 not shown)")
    churn_fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.hist(scores.churn_probability, bins=40, color="#9f2f2f")
    ax.set_xlabel("churn probability")
    ax.set_title("Churn probability")
    return [_img(_png(fig), "Distributions of potential score and CLV"), _img(_png(churn_fig), "Churn probability")]


def _segments_plot(summary: pd.DataFrame) -> str:
    rfm = summary[(summary.segment_type == "rfm_segment") & (summary.cut_type == "all")].sort_values("total_clv")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(rfm.segment, rfm.customers, color="#2f6f9f")
    axes[0].set_title("Customers per RFM segment")
    axes[1].barh(rfm.segment, rfm.total_clv, color="#6f9f2f")
    axes[1].set_title("Total CLV per RFM segment")
    axes[1].set_yticks([])
    return _img(_png(fig), "RFM segments: size and value")


def _funnel_plot(funnel: pd.DataFrame) -> str:
    latest = (funnel[funnel.is_latest_period].groupby(["to_stage_order", "to_stage"], as_index=False)
              .customers.sum().sort_values("to_stage_order"))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(latest.to_stage, latest.customers, color="#7f5f9f")
    ax.set_ylabel("customers")
    ax.set_title("Customers per lifecycle stage at the as-of date")
    ax.tick_params(axis="x", rotation=30)
    return _img(_png(fig), "Lifecycle funnel")


def build_report(serving_file: Path, plots_dir: Path | None, checks: CheckSummary, run_id: str) -> str:
    """The report's HTML for ``run_id``, from the serving database."""
    with duckdb.connect(str(serving_file), read_only=True) as con:
        def q(sql: str) -> pd.DataFrame:
            return con.sql(sql).to_arrow_table().to_pandas()
        scores = q("select * from customer_scores order by potential_rank")
        summary = q("select * from segment_summary")
        funnel = q("select * from lifecycle_funnel")
        campaigns = q("select * from campaign_effectiveness where is_campaign_total order by revenue_after_response desc")
        performance = q(f"select model_name, task, metric, value, is_champion, test_window_start, test_window_end "
                        f"from model_performance where run_id = '{run_id}' order by task, metric, model_name")
        run = q(f"select * from pipeline_runs where run_id = '{run_id}'")
    as_of = str(scores.as_of_date.iloc[0]) if len(scores) else "?"
    tiers = scores.priority_tier.value_counts().sort_index()
    headline = pd.DataFrame({
        "figure": ["customers scored", "total CLV", "mean churn probability", "tier A customers",
                   "customers at risk or lapsed", "value model", "rows quarantined"],
        "value": [f"{len(scores):,}", f"{scores.clv.sum():,.0f}", f"{scores.churn_probability.mean():.1%}",
                  f"{int(tiers.get('A', 0)):,}",
                  f"{int(scores.lifecycle_stage.isin(['at risk', 'lapsed']).sum()):,}",
                  str(scores.clv_model.iloc[0]) if len(scores) else "",
                  f"{int(run.rows_quarantined.iloc[0]):,}" if len(run) and "rows_quarantined" in run else "0"],
    })
    top = scores.head(50)[["potential_rank", "customer_id", "potential_score", "priority_tier", "clv",
                           "churn_probability", "rfm_segment", "lifecycle_stage", "next_best_action",
                           "action_channel", "next_category", "potential_drivers", "top_reasons"]]
    segments = summary[(summary.cut_type == "all")][
        ["segment_type", "segment", "customers", "share_of_customers", "total_clv", "avg_clv",
         "avg_churn_probability", "avg_potential_score", "recommended_action"]].sort_values(["segment_type", "segment"])
    latest = funnel[funnel.is_latest_period]
    conversion = latest.pivot_table(index="from_stage", columns="to_stage", values="conversion_rate", fill_value=0.0)
    conversion = conversion.reset_index()
    model_plots = sorted(Path(plots_dir).glob("*.png")) if plots_dir and Path(plots_dir).exists() else []
    failed = [r for r in checks.rows if not r[2]]
    check_table = pd.DataFrame(failed or checks.rows[:0], columns=["asset", "check", "passed", "description"])
    docs = (f'<p>Great Expectations Data Docs: <a href="{checks.data_docs.as_uri()}">{checks.data_docs}</a></p>'
            if checks.data_docs and checks.data_docs.exists() else "")

    parts = [
        f"<h1>Customer potential: run report</h1><p>As of <b>{html.escape(as_of)}</b> &middot; run "
        f"<code>{html.escape(run_id)}</code></p>",
        "<h2>Headline</h2>", _table(headline),
        "<h2>Distributions</h2>", *_distributions(scores),
        "<h2>Segments</h2>", _segments_plot(summary), _table(segments),
        "<h2>Lifecycle funnel</h2>", _funnel_plot(funnel),
        "<p>Share of each stage at the start of the latest period that ended in each stage:</p>",
        _table(conversion, "{:.0%}"),
        "<h2>Top 50 customers</h2>", _table(top),
        "<h2>Models</h2>", _table(performance, "{:.3f}"),
        *[_img(base64.b64encode(p.read_bytes()).decode(), p.stem.replace("_", " ")) for p in model_plots],
        "<h3>Campaigns</h3>", _table(campaigns.head(20)),
        "<h2>Quality checks</h2>",
        f"<p><b>{checks.passed}</b> checks passed, <b>{checks.failed}</b> failed (blocking checks stop the run "
        f"before publishing, so a published run has none failed).</p>",
        _table(check_table) if failed else "<p>All checks passed.</p>",
        docs,
    ]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
             "table.data{border-collapse:collapse;font-size:13px;margin:1em 0}"
             "table.data td,table.data th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}"
             "figure{display:inline-block;margin:0.5em}img{max-width:100%}figcaption{font-size:12px;color:#666}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Customer potential report {html.escape(as_of)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


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
