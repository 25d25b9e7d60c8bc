"""The nightly job end to end at several sizes, per stage, against its compute floor.

Each run is the user's entry point, ``crm-potential run``, in a subprocess with a fresh work folder (warehouse,
serving database, model registry, Dagster home), so every run is a first night: the churn model is trained,
not reused. A sampler reads ``/proc`` every 50 ms for the whole process tree (the CLI and its dbt
subprocesses): resident memory and CPU time (live processes plus reaped children). Stage boundaries come from
Dagster's step statistics; dbt layers from dbt's ``run_results.json``.

The compute floor is the same work without orchestration, in this process, on the run's own warehouse: the
source files read into DuckDB tables, every dbt model's compiled SQL executed directly (no tests, no dbt), and
the value, churn and scoring functions called directly on the same data.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestration.run_log import stage_of  # noqa: E402
CLI = str(Path(sys.executable).with_name("crm-potential"))
TICK = os.sysconf("SC_CLK_TCK")
DBT_STEP = "dbt staging to marts (whole step; layers below)"
PAGE = os.sysconf("SC_PAGE_SIZE")

# ---------------------------------------------------------------- sampling the process tree

def _stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds of the process itself, resident bytes) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    ppid = int(fields[1])
    cpu = sum(int(fields[i]) for i in (11, 12)) / TICK  # utime stime
    return ppid, cpu, int(fields[21]) * PAGE


class TreeSampler(threading.Thread):
    """Samples a process tree every ``interval`` seconds: (time, CPU seconds so far, resident bytes).

    The CPU total never goes down: a member that exits keeps the CPU it was last seen with (a reaped child's
    time is not taken from its parent's ``cutime``, which would count it twice, or miss it when the parent is
    gone first, as Spark's Python workers go). A child that lives less than one interval is not seen."""

    def __init__(self, root: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.root, self.interval, self.samples, self.stop = root, interval, [], threading.Event()
        self.seen: dict[int, float] = {}  # CPU seconds of every member seen, by pid

    def tree(self) -> tuple[float, int]:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                s = _stat(int(entry))
                if s:
                    stats[int(entry)] = s
        members, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, _, _) in stats.items():
                if ppid == parent and pid not in members:
                    members.add(pid)
                    frontier.append(pid)
        for p in members:
            if p in stats:  # a pid reused by an unrelated process would not be in the tree
                self.seen[p] = max(self.seen.get(p, 0.0), stats[p][1])
        rss = sum(stats[p][2] for p in members if p in stats)
        return sum(self.seen.values()), rss

    def run(self):
        while not self.stop.is_set():
            cpu, rss = self.tree()
            if rss:
                self.samples.append((time.time(), cpu, rss))
            time.sleep(self.interval)

    def window(self, start: float, end: float) -> tuple[float, int]:
        """CPU seconds used and peak resident bytes between two wall-clock times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        cpu = after[0][1] - before[-1][1]
        peak = max([s[2] for s in inside] or [before[-1][2], after[0][2]])
        return max(cpu, 0.0), peak


def sampled(cmd: list[str], **popen) -> tuple[subprocess.CompletedProcess, float, float, TreeSampler]:
    """Run ``cmd`` to its end while its process tree is sampled: (its result, start and end time, the sampler)."""
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **popen)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    finished = time.time()
    sampler.stop.set()
    sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), started, finished, sampler


# ---------------------------------------------------------------- one run

@dataclass
class RunMeasure:
    total_wall: float
    total_cpu: float
    peak_rss: int
    stages: dict[str, dict] = field(default_factory=dict)  # stage -> wall, cpu, peak
    dbt_layers: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    work: Path | None = None


def warehouse_of(work_root: Path, size: int) -> Path:
    """Where the pipeline section leaves the warehouse of its last run at ``size`` customers."""
    return work_root / f"warehouse_{size}.duckdb"


def run_once(source: Path, work: Path, env: dict[str, str] | None = None, cli: str = CLI,
             extra: tuple[str, ...] = ()) -> RunMeasure:
    """One ``crm-potential run`` (``cli``, with ``extra`` arguments) in a fresh ``work`` folder, its process tree
    sampled: wall, CPU and peak memory, in total and per stage."""
    if work.exists():
        shutil.rmtree(work)
    (work / "dagster").mkdir(parents=True)
    (work / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(work / "dagster")}
    cmd = [cli, "run", "--source", str(source), "--warehouse", str(work / "warehouse.duckdb"),
           "--serving", str(work / "serving.duckdb"), "--models", str(work / "models"), "--quiet", *extra]
    done, started, finished, sampler = sampled(cmd, env=env, stderr=subprocess.STDOUT)
    import dagster as dg

    total_cpu, peak = sampler.window(started, finished)
    with dg.DagsterInstance.from_config(str(work / "dagster")) as instance:
        runs = instance.get_runs(limit=1)
        steps = instance.get_run_step_stats(runs[0].run_id) if runs else []
    if done.returncode != 0:  # what it got through, how long each step took, and how it ended
        how = (f"killed by signal {-done.returncode}" + (" (SIGKILL: the kernel's out-of-memory killer, when the "
               "machine ran out of memory)" if done.returncode == -9 else "")) if done.returncode < 0 \
            else f"exit status {done.returncode}"
        finished_steps = [f"  {s.step_key}: {s.end_time - s.start_time:.0f} s" if s.end_time and s.start_time
                          else f"  {s.step_key}: running at the end" for s in steps]
        raise RuntimeError(f"crm-potential run failed on {source} after {finished - started:.0f} s, {how}; peak "
                           f"memory of the process tree {_fmt_bytes(peak)}. Steps:\n" + "\n".join(finished_steps)
                           + f"\nIts output:\n{done.stdout[-3000:]}")
    measure = RunMeasure(finished - started, total_cpu, peak, work=work)
    first_step = min(s.start_time for s in steps if s.start_time)
    last_step = max(s.end_time for s in steps if s.end_time)
    windows: dict[str, list[tuple[float, float]]] = {"start-up (imports, definitions)": [(started, first_step)]}
    for s in steps:
        if s.start_time and s.end_time:
            stage = DBT_STEP if s.step_key in ("dbt_contract", "dbt_models") else stage_of(s.step_key)
            windows.setdefault(stage, []).append((s.start_time, s.end_time))
    windows["shut-down"] = [(last_step, finished)]
    for stage, spans in windows.items():
        wall = sum(e - b for b, e in spans)
        cpu = sum(sampler.window(b, e)[0] for b, e in spans)
        peak_stage = max(sampler.window(b, e)[1] for b, e in spans)
        measure.stages[stage] = {"wall": wall, "cpu": cpu, "peak": peak_stage}

    if not (work / "serving.duckdb").exists():  # published elsewhere (the Spark catalog): no per-layer figures
        return measure
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        seconds, rows = con.execute("select stage_seconds, stage_rows from pipeline_runs order by finished_at desc "
                                    "limit 1").fetchall()[0]
    measure.rows = json.loads(rows or "{}")
    measure.dbt_layers = {k[4:]: v for k, v in json.loads(seconds).items() if k.startswith("dbt:")}
    return measure


# ---------------------------------------------------------------- the compute floor

def compute_floor(source: Path, work: Path) -> dict[str, float]:
    """The same work without orchestration, on a copy of the run's warehouse."""
    from ml.churn import churn_scorer, cutoff_rows, score, train_churn_models, training_set
    from ml.cutoff_data import EVAL_ROWS, CutoffData
    from ml.scoring import ScoringRules, score_customers
    from ml.value_models import CATEGORICAL, run_value_models
    from orchestration.dbt_project import step_target_path
    from orchestration.settings import PipelineSettings
    from orchestration.warehouse import DuckDBWarehouse

    floor: dict[str, float] = {}
    copy = work / "floor.duckdb"
    shutil.copyfile(work / "warehouse.duckdb", copy)
    settings = PipelineSettings(warehouse_path=str(copy), source_dir=str(source))
    con = duckdb.connect()
    con.execute(f"attach '{copy}' as warehouse")  # dbt's relation names say "warehouse"."schema"."table"
    con.execute("use warehouse")
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")

    t0 = time.perf_counter()
    for entity in ("customers", "orders", "interactions", "campaigns"):
        files = sorted(Path(source).glob(f"{entity}.*"))
        if files:
            reader = "read_parquet" if files[0].suffix == ".parquet" else "read_csv"
            con.execute(f"create or replace table raw.floor_{entity} as select * from {reader}('{files[0]}')")
    floor["ingest"] = time.perf_counter() - t0

    for names, key in ((("dbt_contract", "dbt_models"), "dbt SQL (staging to marts)"),
                       (("dbt_analytics",), "dbt SQL (analyst tables)")):
        results = [r for name in names
                   for r in json.loads((step_target_path(work / "warehouse.duckdb", name) / "run_results.json").read_text())["results"]]
        t0 = time.perf_counter()
        for result in results:
            if result["unique_id"].startswith("model.") and result.get("compiled_code"):
                con.execute(f"create or replace table {result['relation_name']} as {result['compiled_code']}")
        floor[key] = time.perf_counter() - t0

    windows = settings.resolve_windows(DuckDBWarehouse(con))
    as_of = windows.as_of
    # qualified names: CutoffData reads through cursors, which do not inherit "use warehouse"
    data = CutoffData(DuckDBWarehouse(con), "warehouse.marts.customer_features_history", "warehouse.marts.customer_outcomes")
    t0 = time.perf_counter()
    value = run_value_models(data, windows=windows, annual_discount_rate=settings.annual_discount_rate, run_id="floor")
    predictions = value.predictions
    floor["value models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    h = settings.churn_horizon_days
    kw = dict(horizon_days=h, clv_horizon_days=settings.clv_horizon_days, fits={}, btyd_model=value.btyd_model)
    levels = data.category_levels([as_of, *windows.churn_production_train, *windows.churn_backtest_train], CATEGORICAL)
    backtest = train_churn_models(training_set(data, windows.churn_backtest_train, levels=levels, **kw),
                                  min_customers=settings.churn_min_customers)
    _, X_t, _, _ = cutoff_rows(data, windows.churn_test, levels=levels,
                               customers=data.sample(windows.churn_test, EVAL_ROWS, 1), **kw)
    backtest.predict(X_t), backtest.predict_logit(X_t)
    models = train_churn_models(training_set(data, windows.churn_production_train, levels=levels, **kw),
                                min_customers=settings.churn_min_customers, baseline=False)
    models.levels = levels
    churn = score(data, as_of, churn_scorer(data, as_of, models, model_version="floor", **kw))
    floor["churn model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    features = con.sql("select * from marts.customer_features").to_arrow_table().to_pandas()
    categories = con.sql("select customer_id, product_category, n_orders, last_ordered_at from "
                             "intermediate.int_customer_categories where cutoff_date = ?", params=[as_of]).to_arrow_table().to_pandas()
    score_customers(features, predictions, churn, run_id="floor", categories=categories, rules=ScoringRules())
    floor["scoring"] = time.perf_counter() - t0
    con.close()
    copy.unlink()
    return floor


# ---------------------------------------------------------------- the section

MEASURED: dict[int, list[RunMeasure]] = {}  # runs of this process by size: the scale section's baseline


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def section(sizes: list[int], repeats: int, generated, work_root: Path, on_progress=None) -> list[str]:
    lines = ["## The nightly job end to end (`crm-potential run`)", "",
             "Fresh work folder per run (a first night: the churn model is trained). Wall and CPU seconds and "
             f"peak resident memory of the whole process tree; medians of {repeats} runs. The compute floor is the "
             "same SQL run directly in DuckDB and the same model functions called directly (see "
             "`bench/pipeline_bench.py`).", ""]
    summary = ["| customers | orders | interactions | wall (s) | CPU (s) | peak memory | compute floor (s) | "
               "overhead (wall - floor) / wall |", "|---|---|---|---|---|---|---|---|"]
    details: list[str] = []
    measured: dict[int, dict[str, float]] = {}
    for size in sizes:
        source = generated(size)
        runs = []
        for i in range(repeats):
            print(f"pipeline: {size:,} customers, run {i + 1}/{repeats} ...", flush=True)
            runs.append(run_once(source, work_root / f"run_{size}"))
            print(f"  {runs[-1].total_wall:.1f} s wall, peak {_fmt_bytes(runs[-1].peak_rss)}", flush=True)
        print(f"pipeline: {size:,} customers, compute floor ...", flush=True)
        floor = compute_floor(source, runs[-1].work)
        # the last run's warehouse is kept for the sample-size section (removed by --clean)
        shutil.move(runs[-1].work / "warehouse.duckdb", warehouse_of(work_root, size))
        shutil.rmtree(work_root / f"run_{size}", ignore_errors=True)
        med = lambda values: statistics.median(values)  # noqa: E731
        wall, cpu = med([r.total_wall for r in runs]), med([r.total_cpu for r in runs])
        peak = med([r.peak_rss for r in runs])
        floor_total = sum(floor.values())
        rows = runs[-1].rows
        summary.append(f"| {size:,} | {rows.get('staging.stg_orders', 0):,} | {rows.get('staging.stg_interactions', 0):,} "
                       f"| {wall:.1f} | {cpu:.1f} | {_fmt_bytes(peak)} | {floor_total:.1f} | "
                       f"{(wall - floor_total) / wall:.0%} |")
        details += [f"### {size:,} customers", "", "| stage | wall (s) | CPU (s) | peak memory |", "|---|---|---|---|"]
        for stage in runs[0].stages:
            w = med([r.stages.get(stage, {}).get("wall", 0.0) for r in runs])
            c = med([r.stages.get(stage, {}).get("cpu", 0.0) for r in runs])
            p = med([r.stages.get(stage, {}).get("peak", 0) for r in runs])
            details.append(f"| {stage} | {w:.1f} | {c:.1f} | {_fmt_bytes(p)} |")
        details.append(f"| **total** | **{wall:.1f}** | **{cpu:.1f}** | **{_fmt_bytes(peak)}** |")
        details += ["", "dbt time by layer (s, sum of node execution times, median): " + ", ".join(
            f"{layer} {med([r.dbt_layers.get(layer, 0.0) for r in runs]):.1f}" for layer in runs[0].dbt_layers), "",
            "Compute floor (s): " + ", ".join(f"{k} {v:.1f}" for k, v in floor.items())
            + f"; total {floor_total:.1f} vs {wall:.1f} through the pipeline ({wall / floor_total:.2f}x).", ""]
        measured[size] = {"wall": wall, "peak": peak, "floor": floor_total}
        MEASURED[size] = runs
        if on_progress:  # a long benchmark keeps what it has measured so far
            on_progress(lines + summary + [""] + targets(measured) + details)
    return lines + summary + [""] + targets(measured) + details


# customers: (wall seconds, peak bytes) on 2 cores, medians (issue 13); 5,000 is the bundled sample's size
TARGETS = {5_000: (15, 2**30), 100_000: (40, 2 * 2**30), 1_000_000: (180, 6 * 2**30)}


def targets(measured: dict[int, dict[str, float]]) -> list[str]:
    """The issue's targets against what was measured (sizes that were not run are left out)."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    out = []
    for size, (wall, peak) in TARGETS.items():
        if size in measured:
            m = measured[size]
            out.append(f"- {size:,} customers in at most {wall} s and {_fmt_bytes(peak)}: {m['wall']:.1f} s "
                       f"({verdict(m['wall'] <= wall)}), {_fmt_bytes(m['peak'])} ({verdict(m['peak'] <= peak)}).")
    if 1_000_000 in measured:
        m = measured[1_000_000]
        out.append(f"- Orchestration overhead at 1M (wall - compute floor) / wall: {(m['wall'] - m['floor']) / m['wall']:.0%}.")
    sizes = sorted(measured)
    if len(sizes) > 1:
        steps = [f"x{measured[b]['peak'] / measured[a]['peak']:.1f} for x{b / a:.0f} customers ({a:,} -> {b:,})"
                 for a, b in zip(sizes, sizes[1:])]
        linear = all(measured[b]["peak"] / measured[a]["peak"] <= b / a for a, b in zip(sizes, sizes[1:]))
        out.append(f"- Peak memory no faster than linear: {'; '.join(steps)}, {verdict(linear)}.")
    return ["Targets on this machine:", "", *out, ""]


# ---------------------------------------------------------------- one run at scale

def half_the_memory() -> str:
    """Half of this machine's memory as a DuckDB limit, in whole GB, rounded down ("11GB" here: 24 GiB of RAM, of
    which the kernel reports a little less)."""
    return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**31}GB"


def scale_section(size: int, baseline: int, generated, work_root: Path, memory_limit: str | None = None) -> list[str]:
    """One run at ``size`` customers (10M by default: an hour on 2 cores, so one run, not a median) against
    ``baseline`` customers measured in this process (the pipeline section's runs, else one run here), per
    stage, with the growth factor per stage. No compute floor: it would repeat the hour.

    The large run gets ``CRM_DUCKDB_MEMORY_LIMIT=memory_limit`` (half the machine's memory by default): at the
    default 3GB, 10M customers stop in the contract step (DuckDB: "failed to allocate data", 2026-11-29), as a
    user at that size would be told to raise it. The model steps keep their own, smaller limit
    (``CRM_MODELS_DUCKDB_MEMORY_LIMIT``)."""
    memory_limit = memory_limit or half_the_memory()
    lines = [f"## At scale: {size:,} customers, one run", "",
             f"One `crm-potential run` at {size:,} customers (generated in shards of a million straight to Parquet) "
             f"against {baseline:,} customers measured in the same process (the median of the pipeline section's "
             "runs when it ran, else one run). Growth = the larger run's figure / the baseline's. The larger run "
             f"has `CRM_DUCKDB_MEMORY_LIMIT={memory_limit}` (half this machine's memory): at the default 3GB, DuckDB "
             "stops in the contract step at 10M customers (\"failed to allocate data\"; the run fails with the "
             "advice to raise it). The model and scoring steps keep their own limit (`CRM_MODELS_DUCKDB_MEMORY_LIMIT`, "
             "2GB by default): DuckDB keeps what it read cached up to its limit, beside the models' frames.", ""]
    if baseline not in MEASURED:
        print(f"scale: baseline run at {baseline:,} customers ...", flush=True)
        MEASURED[baseline] = [run_once(generated(baseline), work_root / f"run_{baseline}")]
        shutil.rmtree(work_root / f"run_{baseline}", ignore_errors=True)
    base = MEASURED[baseline]
    t0 = time.perf_counter()
    source = generated(size)
    generation = time.perf_counter() - t0
    print(f"scale: {size:,} customers, one run ...", flush=True)
    work = work_root / f"run_{size}"
    try:
        big = run_once(source, work, env={"CRM_DUCKDB_MEMORY_LIMIT": memory_limit})
    except RuntimeError as failed:  # reported, not hidden: where a size stops fitting is the finding
        shutil.rmtree(work, ignore_errors=True)
        return lines + [f"The run at {size:,} customers **failed**:", "", "```", str(failed)[-3000:], "```", ""]
    warehouse_bytes = sum(f.stat().st_size for f in work.rglob("*.duckdb"))
    shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    b_wall, b_peak = med([r.total_wall for r in base]), med([r.peak_rss for r in base])
    rows = big.rows
    lines += [f"- Data: {size:,} customers, {rows.get('staging.stg_orders', 0):,} orders, "
              f"{rows.get('staging.stg_interactions', 0):,} interactions"
              + (f" (generated in {generation:.0f} s)" if generation > 1 else "") + f"; warehouse and serving files "
              f"{_fmt_bytes(warehouse_bytes)} at the end of the run.",
              f"- Whole run: {big.total_wall:.1f} s wall ({big.total_wall / 60:.1f} min), {big.total_cpu:.1f} s CPU, "
              f"peak {_fmt_bytes(big.peak_rss)}; growth x{big.total_wall / b_wall:.1f} in wall time and "
              f"x{big.peak_rss / b_peak:.1f} in peak memory for x{size / baseline:.0f} customers.", "",
              f"| stage | wall at {baseline:,} (s) | wall at {size:,} (s) | growth | peak at {baseline:,} | "
              f"peak at {size:,} | growth |", "|---|---|---|---|---|---|---|"]
    for stage in big.stages:
        bw = med([r.stages.get(stage, {}).get("wall", 0.0) for r in base])
        bp = med([r.stages.get(stage, {}).get("peak", 0) for r in base])
        w, p = big.stages[stage]["wall"], big.stages[stage]["peak"]
        lines.append(f"| {stage} | {bw:.1f} | {w:.1f} | {f'x{w / bw:.1f}' if bw > 0.05 else '-'} | {_fmt_bytes(bp)} | "
                     f"{_fmt_bytes(p)} | {f'x{p / bp:.1f}' if bp else '-'} |")
    lines += [f"| **total** | **{b_wall:.1f}** | **{big.total_wall:.1f}** | **x{big.total_wall / b_wall:.1f}** | "
              f"**{_fmt_bytes(b_peak)}** | **{_fmt_bytes(big.peak_rss)}** | **x{big.peak_rss / b_peak:.1f}** |", "",
              "dbt time by layer (s, sum of node execution times): " + ", ".join(
                  f"{layer} {med([r.dbt_layers.get(layer, 0.0) for r in base]):.1f} -> {v:.1f}"
                  for layer, v in big.dbt_layers.items()), ""]
    return lines
