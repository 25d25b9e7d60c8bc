"""The public real-data benchmark (``make bench-models``): the project's own CLI on CDNOW against
``lifetimes`` BG/NBD + Gamma-Gamma and naive baselines, scored on the hold-out.

What it does, end to end:

1. Downloads the ``lifetimes`` 0.11.3 wheel (cached in ``bench/cache/cdnow``), reads the CDNOW master
   file out of it and writes it in the source contract (``bench/cdnow.py``): every raw row an order,
   1997-01 to 1998-06, nothing cut at the as-of date (the pipeline must ignore later rows itself).
2. Runs ``crm-potential run --as-of 1997-09-30 --clv-horizon-days 273 --churn-horizon-days 90`` in a
   subprocess with a fresh work folder (warehouse, serving file, model registry, Dagster home; ``CRM_*``
   variables of the caller's environment are not passed on, so the run uses the defaults) and times it.
   A failed run is reported with its exit code and last lines; the other rows are still computed.
3. Fits ``lifetimes``' ``BetaGeoFitter`` (penalizer 0) on the daily summary at the as-of date and
   ``GammaGammaFitter`` on the repeat buyers with a positive mean repeat spend, and predicts the 273
   days after it; churn = P(no purchase in the 90 days after) from the BG/NBD closed form
   (:func:`bgnbd_prob_no_purchase`: lifetimes 0.11.3 has no conditional version).
4. Naive baselines: the last 273 days (all of the history here) repeated, and the last 90 days x 273/90;
   churn ranked by recency, and "no purchase in the last 90 days".
5. Scores every row on the hold-out (:func:`score`): daily periods (same-day purchases merged); total
   error of purchase days and of spend in ``(as_of, as_of + 273]``; normalised Gini and Spearman of
   spend; ROC AUC of churn for "no purchase in ``(as_of, as_of + 90]``". Population: every customer
   with a purchase on or before the as-of date (all 23,570 CDNOW customers, acquired in Q1 1997).

The table, the targets (met or not), the run time and the pipeline's own notes (champions, back-test
metrics) are printed and written into ``bench/results.md`` between ``<!-- cdnow:start -->`` and
``<!-- cdnow:end -->``; the rest of that file is left as it is.

Flags: ``--keep`` keeps the work folder (a failed run's is always kept); ``--reuse-run DIR`` skips the CLI
run and reads ``DIR`` (a work folder holding ``serving.duckdb``, or the serving file itself); ``--timeout S``
stops a CLI run that takes longer (default 30 minutes); ``--no-write`` leaves ``bench/results.md`` alone.
Exit status: 0 when every row was scored (targets met or not), 1 when the project or lifetimes could not be.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import cdnow  # noqa: E402
from ml.intervals import interval_coverage as covered_share  # noqa: E402
from ml.metrics import normalised_gini  # noqa: E402

CACHE = ROOT / "bench" / "cache" / "cdnow"
RESULTS = ROOT / "bench" / "results.md"
CLI = Path(sys.executable).with_name("crm-potential")
START, END = "<!-- cdnow:start -->", "<!-- cdnow:end -->"

AS_OF = date(1997, 9, 30)
CLV_DAYS = 273
CHURN_DAYS = 90
EXPECTED_CUSTOMERS = 23_570

METRICS = ("purchases_total_error", "spend_total_error", "spend_gini", "spend_spearman", "churn_auc")
LABELS = {
    "purchases_total_error": "purchases total error",
    "spend_total_error": "spend total error",
    "spend_gini": "spend Gini",
    "spend_spearman": "spend Spearman",
    "churn_auc": "churn ROC AUC",
}
# metric -> (absolute target on the project's value, its wording); None: only "better than the others"
TARGETS = {
    "purchases_total_error": (lambda v: abs(v) <= 0.10, "within ±10 %"),
    "spend_total_error": (lambda v: abs(v) <= 0.10, "within ±10 %"),
    "spend_gini": (lambda v: v >= 0.72, ">= 0.72"),
    "spend_spearman": None,
    "churn_auc": (lambda v: v >= 0.79, ">= 0.79"),
}
ERROR_METRICS = {"purchases_total_error", "spend_total_error"}  # closer to 0 is better; else higher is better

PROJECT, LIFETIMES, NAIVE_PERIOD, NAIVE_90 = "project", "lifetimes", "naive_period", "naive_90d"


# ---------------------------------------------------------------- metrics (pure)

def total_error(predicted, actual) -> float:
    """sum(predicted) / sum(actual) - 1: -0.1 means 10 % too low in total. NaN when nothing happened."""
    p, a = np.asarray(predicted, float), np.asarray(actual, float)
    if p.shape != a.shape:
        raise ValueError(f"predicted has {p.size} values, actual {a.size}")
    total = a.sum()
    return float(p.sum() / total - 1) if total > 0 else float("nan")


def spearman(actual, predicted) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr

    a, p = np.asarray(actual, float), np.asarray(predicted, float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(spearmanr(a, p).statistic)


def churn_auc(churned, churn_score) -> float:
    """ROC AUC of a churn score (higher = more likely to churn) for a 0/1 label; NaN with one class."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(churned, int), np.asarray(churn_score, float)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def score(predictions: pd.DataFrame, outcomes: pd.DataFrame) -> dict[str, float]:
    """The five metrics of one model on the hold-out.

    ``predictions`` (indexed by customer_id): ``expected_purchases``, ``expected_spend``, ``churn_score``.
    ``outcomes`` (indexed by customer_id, :func:`bench.cdnow.outcomes`): ``purchases``, ``spend``,
    ``churned``. Every customer of ``outcomes`` must be predicted; extra predictions are ignored.
    """
    missing = outcomes.index.difference(predictions.index)
    if len(missing):
        raise ValueError(f"{len(missing):,} of {len(outcomes):,} customers have no prediction "
                         f"(e.g. {', '.join(map(str, missing[:3]))})")
    pred = predictions.reindex(outcomes.index)
    bad = {c: int((~np.isfinite(pred[c].to_numpy(float))).sum())
           for c in ("expected_purchases", "expected_spend", "churn_score")}
    bad = {c: n for c, n in bad.items() if n}
    if bad:
        raise ValueError("missing or non-finite predictions (customers per column): "
                         + ", ".join(f"{c} {n:,}" for c, n in bad.items()))
    return {
        "purchases_total_error": total_error(pred.expected_purchases, outcomes.purchases),
        "spend_total_error": total_error(pred.expected_spend, outcomes.spend),
        "spend_gini": normalised_gini(outcomes.spend, pred.expected_spend),
        "spend_spearman": spearman(outcomes.spend, pred.expected_spend),
        "churn_auc": churn_auc(outcomes.churned, pred.churn_score),
    }


def better(metric: str, a: float, b: float) -> bool:
    """Is ``a`` strictly better than ``b`` on ``metric`` at the precision the table shows (0.1 % for
    errors, 0.001 otherwise)? |error| smaller, or value higher; a tie in the table is not better."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return False
    if metric in ERROR_METRICS:
        return round(abs(a), 3) < round(abs(b), 3)
    return round(a, 3) > round(b, 3)


def normalised_gini_ties_averaged(actual, predicted) -> float:
    """Normalised Gini with customers of equal prediction in random order (the expectation: the mean of
    the pessimistic and the optimistic order of ties). ``ml.metrics.normalised_gini`` orders ties
    pessimistically; this variant is shown beside it because many customers share a prediction."""
    from ml.metrics import gini

    a, p = np.asarray(actual, float), np.asarray(predicted, float)
    best = gini(a, a)
    if not (best and np.isfinite(best)):
        return float("nan")
    order = np.lexsort((-a, -p))  # ties: the largest actual first
    optimistic = float(np.cumsum(a[order]).sum() / a.sum() / a.size - (a.size + 1) / (2 * a.size))
    return float((gini(a, p) + optimistic) / 2 / best)


# ---------------------------------------------------------------- baselines

def naive_predictions(known: pd.DataFrame, clv_days: int, recent_days: int = 90) -> dict[str, pd.DataFrame]:
    """Two naive rows from :func:`bench.cdnow.history` (windows ``clv_days`` and ``recent_days``):

    * last period: the purchase days and spend of the last ``clv_days`` happen again; churn ranked by
      recency (days since the last purchase);
    * last ``recent_days`` scaled to ``clv_days``; churn = no purchase in the last ``recent_days``.
    """
    scale = clv_days / recent_days
    return {
        NAIVE_PERIOD: pd.DataFrame({
            "expected_purchases": known[f"purchases_{clv_days}d"].astype(float),
            "expected_spend": known[f"spend_{clv_days}d"].astype(float),
            "churn_score": known["recency_days"].astype(float),
        }),
        NAIVE_90: pd.DataFrame({
            "expected_purchases": known[f"purchases_{recent_days}d"] * scale,
            "expected_spend": known[f"spend_{recent_days}d"] * scale,
            "churn_score": (known[f"purchases_{recent_days}d"] == 0).astype(float),
        }),
    }


def bgnbd_prob_no_purchase(t, frequency, recency, T, r, alpha, a, b, p_alive=None) -> np.ndarray:
    """BG/NBD P(no purchase in the next ``t`` periods | x, t_x, T).

    Dropout happens only right after a purchase, so a customer alive at T who makes no purchase stays
    alive, and given alive the purchase rate is Gamma(r + x, alpha + T): P = (1 - P(alive)) +
    P(alive) * ((alpha + T) / (alpha + T + t)) ** (r + x). ``p_alive`` may be passed (lifetimes'
    ``conditional_probability_alive``); otherwise it is computed (Fader, Hardie & Lee 2005, eq. (6)).
    """
    x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
    if p_alive is None:
        log_ratio = (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
        odds = np.where(x > 0, a / np.maximum(b + x - 1, 1e-300) * np.exp(log_ratio), 0.0)
        p_alive = 1.0 / (1.0 + odds)
    p_alive = np.asarray(p_alive, float)
    silent_if_alive = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    return (1.0 - p_alive) + p_alive * silent_if_alive


@dataclass
class LifetimesRun:
    predictions: pd.DataFrame
    params: dict[str, float]
    seconds: float
    repeat_buyers_used: int
    repeat_buyers_zero_spend: int


def lifetimes_predictions(days: pd.DataFrame, as_of: date, clv_days: int, churn_days: int) -> LifetimesRun:
    """``lifetimes`` BG/NBD + Gamma-Gamma on the merged-per-day purchases up to the as-of date."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    t0 = time.perf_counter()
    seen = days[days["day"] <= pd.Timestamp(as_of)]
    summary = summary_data_from_transaction_data(
        seen, "customer_id", "day", monetary_value_col="spend", observation_period_end=pd.Timestamp(as_of), freq="D")
    x, tx, T, m = summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"]
    bg = BetaGeoFitter(penalizer_coef=0.0).fit(x, tx, T)
    # lifetimes refuses non-positive spend; CDNOW has repeat buyers whose repeat purchases were all $0
    use = (x > 0) & (m > 0)
    gg = GammaGammaFitter(penalizer_coef=0.0).fit(x[use], m[use])
    purchases = np.asarray(bg.conditional_expected_number_of_purchases_up_to_time(clv_days, x, tx, T), float)
    avg_spend = np.asarray(gg.conditional_expected_average_profit(x, m), float)
    p_alive = np.asarray(bg.conditional_probability_alive(x, tx, T), float)
    bp, gp = bg.params_, gg.params_
    silent = bgnbd_prob_no_purchase(churn_days, x, tx, T, bp["r"], bp["alpha"], bp["a"], bp["b"], p_alive=p_alive)
    preds = pd.DataFrame({"expected_purchases": purchases, "expected_spend": purchases * avg_spend,
                          "churn_score": silent, "p_alive": p_alive}, index=summary.index.astype(object))
    preds.index.name = "customer_id"
    params = {k: float(bp[k]) for k in ("r", "alpha", "a", "b")} | {k: float(gp[k]) for k in ("p", "q", "v")}
    return LifetimesRun(preds, params, time.perf_counter() - t0, int(use.sum()), int(((x > 0) & (m <= 0)).sum()))


# ---------------------------------------------------------------- the project's CLI

@dataclass
class PipelineRun:
    work: Path
    returncode: int | None = None  # None: reused, not run here
    seconds: float | None = None
    cpu_seconds: float | None = None
    output: str = ""
    command: list[str] = field(default_factory=list)
    code: str = ""
    timed_out: bool = False

    @property
    def serving(self) -> Path:
        return self.work / "serving.duckdb" if self.work.is_dir() else self.work

    @property
    def failed(self) -> bool:
        return self.timed_out or self.returncode not in (None, 0)


def code_version(root: Path = ROOT) -> str:
    """The commit the CLI ran from, and whether tracked files had uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def cli_command(source: Path, work: Path) -> list[str]:
    return [str(CLI), "run", "--source", str(source), "--as-of", AS_OF.isoformat(),
            "--clv-horizon-days", str(CLV_DAYS), "--churn-horizon-days", str(CHURN_DAYS),
            "--warehouse", str(work / "warehouse.duckdb"), "--serving", str(work / "serving.duckdb"),
            "--models", str(work / "models"), "--quiet"]


def run_pipeline(source: Path, work: Path, timeout: float | None = None) -> PipelineRun:
    """``crm-potential run`` in a subprocess on ``source``, everything it writes under ``work``. The CLI
    runs in its own process group; after ``timeout`` seconds that group (the CLI and its dbt children,
    nothing else) is stopped and the run counts as failed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env["DAGSTER_HOME"] = str(work / "dagster")
    (work / "dagster").mkdir(parents=True, exist_ok=True)
    cmd = cli_command(source, work)
    code = code_version()
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
                output, _ = proc.communicate(timeout=grace)
                break
            except ProcessLookupError:
                output, _ = proc.communicate()
                break
            except subprocess.TimeoutExpired:
                continue
    seconds = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    (work / "cli_output.txt").write_text(output)
    return PipelineRun(work, proc.returncode, seconds, cpu, output, cmd, code, timed_out)


def unfinished_steps(dagster_home: Path) -> list[str]:
    """Steps of the (last) Dagster run under ``dagster_home`` that started and never ended, from its
    SQLite event log; [] when it cannot be read (storage layout is Dagster's, so this is best effort)."""
    logs = sorted((dagster_home / "history" / "runs").glob("*.db"), key=lambda f: f.stat().st_mtime)
    logs = [f for f in logs if f.name != "index.db"]
    if not logs:
        return []
    try:
        with sqlite3.connect(f"file:{logs[-1]}?mode=ro", uri=True) as con:
            events = con.execute("select step_key, dagster_event_type, timestamp from event_logs "
                                 "where step_key is not null and dagster_event_type in "
                                 "('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') order by id").fetchall()
    except sqlite3.Error:
        return []
    started = {key: ts for key, kind, ts in events if kind == "STEP_START"}
    ended = {key for key, kind, _ in events if kind != "STEP_START"}
    return [f"{key} (started {ts} UTC)" for key, ts in started.items() if key not in ended]


@dataclass
class ProjectScores:
    predictions: pd.DataFrame
    n_customers: int
    as_of_date: str
    clv_models: dict[str, int]
    performance: pd.DataFrame | None
    run_record: dict | None

    @property
    def model_versions(self) -> dict[str, str]:
        """task -> the model that produced the published scores (``pipeline_runs.model_versions``)."""
        raw = (self.run_record or {}).get("model_versions")
        try:
            return {str(k): str(v) for k, v in json.loads(raw).items()} if isinstance(raw, str) and raw else {}
        except (ValueError, AttributeError):
            return {}

    def stage_rows(self) -> dict[str, int]:
        raw = (self.run_record or {}).get("stage_rows")
        try:
            return json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:
            return {}


INTERVAL_COLUMNS = ("expected_purchases_low", "expected_purchases_high", "clv", "clv_low", "clv_high")


def read_project(serving: Path) -> ProjectScores:
    """``customer_scores`` (and ``model_performance``, ``pipeline_runs`` when present) of a serving file."""
    import duckdb

    if not serving.exists():
        raise FileNotFoundError(f"no serving file at {serving}")
    with duckdb.connect(str(serving), read_only=True) as con:
        tables = {t for (t,) in con.execute("select table_name from information_schema.tables").fetchall()}
        if "customer_scores" not in tables:
            raise ValueError(f"{serving} has no customer_scores table (tables: {sorted(tables)})")
        cols = {c for (c,) in con.execute(
            "select column_name from information_schema.columns where table_name = 'customer_scores'").fetchall()}
        need = {"customer_id", "expected_purchases", "expected_spend", "churn_probability"}
        if need - cols:
            raise ValueError(f"customer_scores lacks {sorted(need - cols)}")
        extra = [c for c in ("p_alive", "clv_model", "as_of_date", *INTERVAL_COLUMNS) if c in cols]
        frame = con.execute(f"select {', '.join(sorted(need) + extra)} from customer_scores").df()
        perf = con.execute("select * from model_performance").df() if "model_performance" in tables else None
        record = None
        if "pipeline_runs" in tables:
            rec = con.execute("select * from pipeline_runs order by started_at desc limit 1").df()
            record = rec.iloc[0].to_dict() if len(rec) else None
    frame["customer_id"] = frame["customer_id"].astype(str)
    preds = frame.set_index("customer_id").rename(columns={"churn_probability": "churn_score"})
    if preds.index.has_duplicates:
        raise ValueError(f"customer_scores has {preds.index.duplicated().sum():,} duplicate customer ids")
    models = preds["clv_model"].value_counts().to_dict() if "clv_model" in preds else {}
    as_of = str(pd.Timestamp(preds["as_of_date"].iloc[0]).date()) if "as_of_date" in preds and len(preds) else "?"
    floats = ("expected_purchases", "expected_spend", "churn_score", *(c for c in INTERVAL_COLUMNS if c in preds))
    return ProjectScores(preds.astype({c: float for c in floats}),
                         len(preds), as_of, models, perf, record)


def interval_coverage(predictions: pd.DataFrame, outcomes: pd.DataFrame) -> dict[str, float] | None:
    """Shares of ``outcomes``' customers whose hold-out outcome lies in the published 80 % interval (ends
    included, as ``ml/intervals.py`` counts it): purchases in ``expected_purchases_low..high``; spend in the CLV
    interval divided by the customer's discount factor (``clv / expected_spend``: the interval is the spend
    interval times the horizon's mean discount factor, which differs from the point's by about 1 % at most;
    customers with no expected spend have no factor and count with the spend interval [0, 0]). None when the
    scores carry no intervals."""
    if any(c not in predictions for c in INTERVAL_COLUMNS):
        return None
    pred = predictions.reindex(outcomes.index)
    spend_mean = pred.expected_spend.to_numpy(float)
    factor = np.divide(pred.clv.to_numpy(float), spend_mean, out=np.ones(len(pred)), where=spend_mean > 0)
    return {"purchases": covered_share(pred.expected_purchases_low, pred.expected_purchases_high, outcomes.purchases),
            "spend": covered_share(pred.clv_low.to_numpy(float) / factor, pred.clv_high.to_numpy(float) / factor,
                                   outcomes.spend),
            "customers": len(pred)}


def champions(perf: pd.DataFrame | None) -> dict[str, str]:
    """task -> champion model name(s) in ``model_performance`` (columns as in
    ``orchestration/publication.py``: task, model_name, metric, value, is_champion, windows)."""
    if perf is None or perf.empty:
        return {}
    chosen = perf[perf["is_champion"].astype("boolean").fillna(False).astype(bool)]
    return {str(t): ", ".join(sorted(set(g["model_name"].astype(str)))) for t, g in chosen.groupby("task")}


BACKTEST_METRICS = ("normalised_gini", "spearman", "total_ratio", "roc_auc", "pr_auc", "brier", "interval_coverage",
                    "interval_probability")


def backtest_lines(perf: pd.DataFrame | None) -> list[str]:
    """The pipeline's own back-test metrics, one line per (task, model), champion marked."""
    if perf is None or perf.empty:
        return []
    lines = []
    for (task, model), g in perf.groupby(["task", "model_name"], sort=True):
        vals = {r.metric: r.value for r in g.itertuples() if r.metric in BACKTEST_METRICS and pd.notna(r.value)}
        if not vals:
            continue
        champ = " (champion)" if g["is_champion"].astype("boolean").fillna(False).astype(bool).any() else ""
        start, end = g["test_window_start"].iloc[0], g["test_window_end"].iloc[0]
        window = f", test window {pd.Timestamp(start).date()} .. {pd.Timestamp(end).date()}" if pd.notna(start) else ""
        text = ", ".join(f"{k} {vals[k]:.3f}" for k in BACKTEST_METRICS if k in vals)
        lines.append(f"{task} / {model}{champ}: {text}{window}")
    return lines


# ---------------------------------------------------------------- report

def fmt(metric: str, value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.1%}" if metric in ERROR_METRICS else f"{value:.3f}"


def target_table(rows: dict[str, dict[str, float] | None]) -> list[str]:
    """Per metric: the project's value, its absolute target and whether it beats lifetimes and each naive
    row (at the table's precision); "met" only when every one of them holds."""
    mine = rows.get(PROJECT)
    others = [k for k in rows if k != PROJECT]
    out = ["| metric | project | target | " + " | ".join(f"better than {ROW_NAMES[k]}" for k in others)
           + " | met |", "|" + "---|" * (len(others) + 4)]
    for metric in METRICS:
        value = mine[metric] if mine else float("nan")
        ok = bool(np.isfinite(value))
        target = TARGETS[metric]
        if target is None:
            target_cell = "-"
        else:
            hit = bool(np.isfinite(value) and target[0](value))
            target_cell, ok = f"{target[1]}: {'yes' if hit else 'no'}", ok and hit
        cells = []
        for name in others:
            row = rows[name]
            if row is None or mine is None:
                cells.append("not measured")
                ok = False
                continue
            beat = better(metric, value, row[metric])
            cells.append(f"{'yes' if beat else 'no'} ({fmt(metric, row[metric])})")
            ok = ok and beat
        out.append(f"| {LABELS[metric]} | {fmt(metric, value) if mine else 'not scored'} | {target_cell} | "
                   + " | ".join(cells) + f" | {'yes' if ok else '**no**'} |")
    return out


ROW_NAMES = {PROJECT: "project", LIFETIMES: "lifetimes BG/NBD + GG", NAIVE_PERIOD: "naive last 273 days",
             NAIVE_90: "naive last 90 days x 273/90"}


def results_table(rows: dict[str, dict[str, float] | None], project_label: str) -> list[str]:
    head = "| model | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for key, row in rows.items():
        label = project_label if key == PROJECT else ROW_NAMES[key]
        cells = [fmt(m, row[m]) if row else "failed" for m in METRICS]
        if key == PROJECT:
            label, cells = f"**{label}**", [f"**{c}**" for c in cells]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the cdnow markers replaced by ``body`` (markers appended at the
    end when absent). Nothing outside the markers changes."""
    block = f"{START}\n{body.strip()}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        return head + block + rest.split(END, 1)[1]
    if (START in text) != (END in text):
        raise ValueError(f"results file has only one of {START} / {END}; fix it by hand")
    return text + ("" if text.endswith("\n") or not text else "\n") + ("\n" if text else "") + block + "\n"


def write_results(body: str, path: Path = RESULTS) -> None:
    previous = path.read_text() if path.exists() else ""
    path.write_text(replace_section(previous, body))


# ---------------------------------------------------------------- main

@dataclass
class Bench:
    """Everything one bench run measured, for :func:`render`."""

    started: datetime
    raw_rows: int
    rows_to_as_of: int
    truth: pd.DataFrame
    rows: dict[str, dict[str, float] | None]
    gini_ties_averaged: dict[str, float]
    run: PipelineRun
    lifetimes: LifetimesRun | None
    project: ProjectScores | None = None
    project_label: str = "project"
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def evaluate(raw: pd.DataFrame, run: PipelineRun, started: datetime) -> Bench:
    """Score the project's run (if it produced a serving file), lifetimes and the naive rows."""
    days = cdnow.daily(raw)
    truth = cdnow.outcomes(days, AS_OF, CLV_DAYS, CHURN_DAYS)
    known = cdnow.history(days, AS_OF, (CLV_DAYS, CHURN_DAYS))
    preds: dict[str, pd.DataFrame] = {}
    bench = Bench(started, len(raw), int((raw["date"] <= pd.Timestamp(AS_OF)).sum()), truth,
                  {PROJECT: None, LIFETIMES: None}, {}, run, None)
    if run.failed:
        tail = "\n".join(run.output.rstrip().splitlines()[-15:]) or "(no output)"
        if run.timed_out:
            hung = unfinished_steps(run.work / "dagster")
            what = (f"did not finish within {run.seconds:.0f} s and was stopped (`--timeout`)"
                    + (f"; still running: {', '.join(hung)}" if hung else ""))
        else:
            what = f"failed with exit code {run.returncode} after {run.seconds:.1f} s"
        bench.problem = (f"`crm-potential run` {what}; nothing was scored for the project. Last lines of its "
                         f"output:\n\n```\n{tail}\n```")
    else:
        try:
            project = read_project(run.serving)
            bench.project = project
            if project.n_customers != EXPECTED_CUSTOMERS:
                bench.notes.append(f"**Count check failed**: `customer_scores` holds {project.n_customers:,} "
                                   f"customers, expected {EXPECTED_CUSTOMERS:,}.")
            bench.rows[PROJECT] = score(project.predictions, truth)
            preds[PROJECT] = project.predictions
            used = {k: v for k, v in project.model_versions.items() if k in ("clv", "churn")} \
                or champions(project.performance)
            if used:
                bench.project_label = "project (" + "; ".join(f"{t}: {m}" for t, m in used.items()) + ")"
        except (FileNotFoundError, ValueError) as exc:
            bench.problem = f"The project's scores could not be read or scored: {exc}"
    try:
        bench.lifetimes = lifetimes_predictions(days, AS_OF, CLV_DAYS, CHURN_DAYS)
        preds[LIFETIMES] = bench.lifetimes.predictions
    except Exception as exc:  # not installed, or a fit that fails: the other rows still count
        bench.notes.append(f"**lifetimes failed**: {type(exc).__name__}: {exc} (install the dev extras: "
                           "`pip install -e '.[dev]'`).")
    preds.update(naive_predictions(known, CLV_DAYS, CHURN_DAYS))
    for name, frame in preds.items():
        if name != PROJECT:
            bench.rows[name] = score(frame, truth)
        bench.gini_ties_averaged[name] = normalised_gini_ties_averaged(
            truth.spend, frame.reindex(truth.index).expected_spend.fillna(0.0))
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (under bench/cache/cdnow)")
    parser.add_argument("--reuse-run", metavar="DIR", type=Path,
                        help="skip the CLI run: read DIR/serving.duckdb (or DIR itself, a serving file)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md as it is")
    parser.add_argument("--note", action="append", default=[],
                        help="a line to add to the notes (e.g. where a reused run came from); repeatable")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="stop the CLI run after this many seconds (default %(default)s)")
    args = parser.parse_args(argv)

    started = datetime.now(timezone.utc)
    raw = cdnow.download_master(CACHE, sys.executable)
    print(f"CDNOW: {len(raw):,} rows, {raw.customer_id.nunique():,} customers, "
          f"{raw.date.min():%Y-%m-%d} .. {raw.date.max():%Y-%m-%d}", flush=True)
    if args.reuse_run:
        run = PipelineRun(args.reuse_run.resolve())
        print(f"reusing {run.serving}", flush=True)
    else:
        work = CACHE / f"work_{started:%Y%m%d_%H%M%S}"
        shutil.rmtree(work, ignore_errors=True)
        n_cust, n_orders = cdnow.write_source(raw, work / "source")
        print(f"source: {n_cust:,} customers, {n_orders:,} orders -> {work / 'source'}", flush=True)
        print("running: " + " ".join(cli_command(work / "source", work)), flush=True)
        run = run_pipeline(work / "source", work, timeout=args.timeout)
        ended = "was stopped (timeout)" if run.timed_out else f"exited {run.returncode}"
        print(f"crm-potential run {ended} after {run.seconds:.1f} s", flush=True)

    bench = evaluate(raw, run, started)
    bench.notes += args.note
    body = render(bench)
    if run.work.is_dir():
        body += "\n" + "\n".join(gap_lines(raw, run.work))
    print("\n" + body)
    if bench.problem:
        print(f"\n{bench.problem.splitlines()[0]}", file=sys.stderr)
    if not args.no_write:
        write_results(body)
        print(f"\nwritten to {RESULTS} (between {START} and {END})")
    if run.returncode is not None:
        if args.keep or run.failed:
            print(f"work folder kept: {run.work}")
        else:
            shutil.rmtree(run.work, ignore_errors=True)
    return 1 if bench.problem or bench.lifetimes is None else 0


def render(b: Bench) -> str:
    """The markdown section for ``bench/results.md``."""
    truth, run, lt, project = b.truth, b.run, b.lifetimes, b.project
    lines = [
        "## Models on real data: CDNOW (`make bench-models`)",
        "",
        f"Written by `bench/model_bench.py` on {b.started:%Y-%m-%d %H:%M} UTC. CDNOW master file (from the "
        f"lifetimes 0.11.3 wheel): {b.raw_rows:,} rows, {len(truth):,} customers, 1997-01 .. 1998-06, all handed "
        f"to the pipeline ({b.rows_to_as_of:,} rows dated up to the as-of date). As of {AS_OF}; CLV horizon "
        f"{CLV_DAYS} days (hold-out {AS_OF + timedelta(days=1)} .. {AS_OF + timedelta(days=CLV_DAYS)}: "
        f"{int(truth.purchases.sum()):,} purchase days, ${truth.spend.sum():,.0f}); churn horizon {CHURN_DAYS} "
        f"days ({truth.churned.mean():.1%} of customers make no purchase in it). Daily periods, same-day "
        f"purchases merged.",
        "",
    ]
    lines += results_table(b.rows, b.project_label)
    lines += ["", "Targets, on the project's row:", ""] + target_table(b.rows) + [""]
    if run.returncode is not None:
        cpu = f", {run.cpu_seconds:.0f} s CPU" if run.cpu_seconds is not None else ""
        lines.append(f"Pipeline run: `crm-potential run --as-of {AS_OF} --clv-horizon-days {CLV_DAYS} "
                     f"--churn-horizon-days {CHURN_DAYS} --quiet` in a fresh work folder (a first night), exit "
                     f"{run.returncode}, {run.seconds:.1f} s wall{cpu}; code {run.code}; machine {platform.machine()}, "
                     f"{os.cpu_count()} cores, Python {platform.python_version()}.")
    else:
        rec = (project.run_record or {}) if project else {}
        took = ""
        if pd.notna(rec.get("started_at")) and pd.notna(rec.get("finished_at")):
            took = (f" (run {rec.get('run_id')}, started {pd.Timestamp(rec['started_at']):%Y-%m-%d %H:%M} UTC, "
                    f"{(pd.Timestamp(rec['finished_at']) - pd.Timestamp(rec['started_at'])).total_seconds():.0f} s "
                    f"by its own record, which ends before the publish and report steps)")
        lines.append(f"Pipeline run: not run by this bench; scores read from an earlier run (`--reuse-run "
                     f"{run.work.name}`){took}.")
    if b.problem:
        first, _, rest = b.problem.partition("\n")
        lines += ["", f"**{first}**"] + (["", rest.strip()] if rest.strip() else [])
    if project is not None:
        lines += ["", "Pipeline notes:", ""] + [f"- {n}" for n in pipeline_notes(b)]
        back = backtest_lines(project.performance)
        lines += ["- Its own back-test (`model_performance`): " + ("" if back else
                  "no rows (the pipeline ran no back-test on this history).")]
        lines += [f"  - {x}" for x in back]
        cover = interval_coverage(project.predictions, truth)
        if cover is not None:
            lines.append(f"- The published 80 % intervals on the hold-out ({cover['customers']:,} customers): purchases "
                         f"({CLV_DAYS} days) cover {cover['purchases']:.1%}, spend {cover['spend']:.1%} (ends "
                         "included; to be compared with the intervals' model probability, `interval_probability` "
                         "on the back-test above, which is at least 80 % because counts tie).")
    warnings = [ln.strip() for ln in run.output.splitlines()
                if re.search(r"\bWARN(ING)?\b", ln) and "dbt |" not in ln][:10]
    if warnings:
        lines += ["", "Warnings printed by the run:", ""] + [f"- `{w[:300]}`" for w in warnings]
    if b.notes:
        lines += [""] + [f"- {n}" for n in b.notes]
    ties = ", ".join(f"{ROW_NAMES[k]} {v:.3f}" for k, v in b.gini_ties_averaged.items())
    lines += [] if lt is None else [
        "",
        f"lifetimes: BG/NBD r={lt.params['r']:.4f}, alpha={lt.params['alpha']:.3f}, a={lt.params['a']:.4f}, "
        f"b={lt.params['b']:.4f} (per day); Gamma-Gamma p={lt.params['p']:.3f}, q={lt.params['q']:.3f}, "
        f"v={lt.params['v']:.3f} on {lt.repeat_buyers_used:,} repeat buyers ({lt.repeat_buyers_zero_spend} with "
        f"$0 mean repeat spend left out: lifetimes refuses them); {lt.seconds:.1f} s."]
    lines += [
        "",
        "Definitions: total error = sum(predicted) / sum(actual) - 1 (purchases = purchase days in the "
        "hold-out); spend Gini = normalised Gini of `ml/metrics.py` (ties in the prediction ordered "
        f"pessimistically; with ties in random order, the expectation, it is: {ties}); Spearman with average "
        "ranks; churn ROC AUC of `churn_probability` (lifetimes: the BG/NBD P(no purchase in 90 days); naive: "
        "days since the last purchase, or no purchase in the last 90 days) for 'no purchase in the 90 days "
        "after the as-of date'. Population: customers with a purchase on or before the as-of date. Naive rows: "
        "the last 273 days (all of the history here) happen again; the last 90 days x 273/90.",
    ]
    return "\n".join(lines)


def gap_lines(raw: pd.DataFrame, work: Path) -> list[str]:
    """Where the totals' gap comes from: purchase days per month around the as-of date (the hold-out holds the
    holiday season and decays more slowly than the history before it), and what every BTYD model fitted at
    the as-of date on the run's own warehouse predicts for the hold-out in total."""
    days = cdnow.daily(raw)
    month = days.assign(month=days.day.dt.to_period("M")).groupby("month").size()
    shown = [m for m in month.index if str(m) >= "1997-07"]
    lines = ["", "Where the totals' gap comes from (computed here, not used by the pipeline):", "",
             "| month | " + " | ".join(str(m) for m in shown) + " |", "|---|" + "---|" * len(shown),
             "| purchase days | " + " | ".join(f"{month[m]:,}" for m in shown) + " |"]
    warehouse = work / "warehouse.duckdb"
    if not warehouse.exists():
        return lines
    import duckdb

    from ml.cutoff_data import CutoffData
    from orchestration.warehouse import DuckDBWarehouse
    from ml.value_models import BTYD_FAMILY, BTYD_INPUTS, LeadRates, btyd_predict, fit_btyd

    truth = cdnow.outcomes(days, str(AS_OF), CLV_DAYS, CHURN_DAYS)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        feats = CutoffData(DuckDBWarehouse(con)).features(AS_OF, BTYD_INPUTS)
    totals = []
    for family in BTYD_FAMILY:
        pred = btyd_predict(fit_btyd(feats, family), feats, horizon_days=CLV_DAYS, churn_horizon_days=CHURN_DAYS,
                            annual_discount_rate=0.0, leads=LeadRates(), with_clv=False)
        totals.append(f"{family} {pred.btyd_expected_purchases.sum() / truth.purchases.sum() - 1:+.1%} purchases, "
                      f"{pred.btyd_expected_spend.sum() / truth.spend.sum() - 1:+.1%} spend")
    lines += ["", f"Every BTYD model fitted at {AS_OF} on the run's warehouse, total error over the hold-out: "
              + "; ".join(totals) + "."]
    return lines


def pipeline_notes(b: Bench) -> list[str]:
    """What the run says about itself: models used, counts, the as-of view, its run record."""
    project = b.project
    out = [f"`customer_scores`: {project.n_customers:,} customers (expected {EXPECTED_CUSTOMERS:,}), as of "
           f"{project.as_of_date}; `clv_model`: " + ", ".join(f"{k} ({v:,})" for k, v in project.clv_models.items())
           + (f"; mean `p_alive` {project.predictions['p_alive'].mean():.3f}" if "p_alive" in project.predictions else "")
           + (f" (lifetimes {b.lifetimes.predictions['p_alive'].mean():.3f})"
              if b.lifetimes is not None and "p_alive" in project.predictions else "") + "."]
    if project.model_versions:
        out.append("Model versions: " + ", ".join(f"{k} `{v}`" for k, v in project.model_versions.items()) + ".")
    rec = project.run_record or {}
    if rec:
        rows_in = rec.get("rows_in") or ""
        seen = project.stage_rows().get("marts.fct_orders")
        view = ""
        if seen is not None:
            verdict = "as expected" if int(seen) == b.rows_to_as_of else f"**expected {b.rows_to_as_of:,}**"
            view = f"; `marts.fct_orders` {int(seen):,} rows ({verdict}: rows up to the as-of date)"
        out.append(f"Run record: status {rec.get('status')}, rows in {rows_in}{view}; rows quarantined "
                   f"{rec.get('rows_quarantined')}; checks passed {rec.get('checks_passed')}, failed "
                   f"{rec.get('checks_failed')}.")
        msg = rec.get("message")
        if isinstance(msg, str) and msg.strip():
            out.append(f"Run message: {msg.strip()}")
    return out


if __name__ == "__main__":
    sys.exit(main())
