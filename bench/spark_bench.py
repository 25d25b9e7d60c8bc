"""The nightly job on DuckDB against the same job on a local Spark session (``make bench``, section ``spark``).

At each size the same generated source runs through ``crm-potential run`` twice, side by side in this process:
with the default engine and with ``--engine spark`` (a local session, ``local[<cores>]``, its driver given
``DRIVER_MEMORY``: with a local master that is all the memory Spark has). Both use ``.venv-spark`` (pyspark,
dbt-spark; ``make test-spark`` builds it), so the engine is the only difference. Each run's process tree is
sampled for wall time, CPU and peak memory, per stage as the pipeline section splits them. Medians of
``repeats`` runs; the ratios are against the DuckDB run of the same size.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline_bench import RunMeasure, _fmt_bytes, run_once  # noqa: E402

SPARK_CLI = ROOT / ".venv-spark" / "bin" / "crm-potential"
DRIVER_MEMORY = "8g"
ENGINES = ("duckdb", "spark")
# The projection of a 100M-customer night on a cluster (``_projection``): its assumptions, written down.
TARGET = 100_000_000
CLUSTER_CORES = 200  # e.g. 25 executors x 8 cores
EFFICIENCY = 0.5  # of the cluster's cores doing useful work in a stage that scales out (shuffles, skew, stragglers)
# Spark's ingest reads a file per task: both engines read the generated source cut into this many part files per
# entity (row order kept), as exports at scale come
PARTS = 4
FIXED = ("start-up (imports, definitions)", "shut-down")
ONCE_FROM = 1_000_000  # from this size, one run per engine


def _run(engine: str, source: Path, work: Path) -> RunMeasure:
    env = {"CRM_SPARK_DIR": str(work / "spark-catalog"), "CRM_SPARK_DRIVER_MEMORY": DRIVER_MEMORY}
    return run_once(source, work, env=env, cli=str(SPARK_CLI), extra=("--engine", engine))


def part_files(source: Path, parts: int = PARTS) -> Path:
    """The generated (Parquet) source with each entity's file cut into ``parts`` files in a folder of its own,
    ``<entity>/part-<i>.parquet``, the rows in their order; made once, beside the source."""
    import duckdb

    out = source.with_name(f"{source.name}_parts{parts}")
    if (out / "orders").is_dir():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with duckdb.connect() as con:
        for file in sorted(source.glob("*.parquet")):
            if file.name.startswith("_"):  # the generator's truth: not part of the source
                continue
            (tmp / file.stem).mkdir()
            rows = con.execute(f"select count(*) from read_parquet('{file}')").fetchall()[0][0]
            per = -(-rows // parts)
            for i in range(parts):
                con.execute(f"copy (select * from read_parquet('{file}') limit {per} offset {i * per}) to "
                            f"'{tmp / file.stem / f'part-{i}.parquet'}' (format parquet, compression zstd)")
    tmp.rename(out)
    return out


def section(sizes: list[int], repeats: int, generated, work_root: Path, on_progress=None) -> list[str]:
    """The section's lines; ``on_progress(lines)`` after each size, so a night that fails (or a bench stopped)
    keeps the sizes measured before it."""
    lines = ["## The nightly job on DuckDB and on a local Spark session", "",
             "`crm-potential run` on the same generated source with the default engine and with `--engine spark` "
             f"(`local[2]`, driver memory {DRIVER_MEMORY}; see `bench/spark_bench.py`), both from `.venv-spark`; wall "
             f"time and peak memory of each run's process tree (the JVM included), medians of {repeats} run(s) "
             f"below {ONCE_FROM:,} customers, one run from there (a Spark night at a million takes most of an hour "
             f"here). The generated source is cut into {PARTS} Parquet part files per entity (`part_files`), which "
             "both engines read: Spark's ingest reads a file per task (DuckDB's reads them one after another, each "
             "on every core).", ""]
    if not SPARK_CLI.exists():
        return lines + ["Not measured: `.venv-spark` is missing (`make test-spark` builds it).", ""]
    measured: dict[int, list[RunMeasure]] = {}
    for size in sizes:
        runs: dict[str, list[RunMeasure]] = {engine: [] for engine in ENGINES}
        source = part_files(generated(size))
        times = repeats if size < ONCE_FROM else 1
        try:
            for i in range(times):
                for engine in ENGINES:
                    print(f"spark: {size:,} customers, the nightly job on {engine}, run {i + 1}/{times} ...", flush=True)
                    runs[engine].append(_run(engine, source, work_root / f"{engine}_{size}"))
        except RuntimeError as failed:  # what it got through is in the message
            lines += [f"### {size:,} customers", "", "A night failed; the sizes above stand:", "", "```",
                      *str(failed).splitlines()[:40], "```", ""]
            break
        lines += _table(size, runs)
        measured[size] = runs["spark"]
        if on_progress:
            on_progress(lines)
    shutil.rmtree(work_root, ignore_errors=True)
    if len(measured) >= 2:
        lines += _projection(measured)
    return lines + [""]


def _table(size: int, runs: dict[str, list[RunMeasure]]) -> list[str]:
    med = statistics.median
    base = med([r.total_wall for r in runs["duckdb"]])
    stages = list(dict.fromkeys(stage for rs in runs.values() for r in rs for stage in r.stages))
    lines = [f"### {size:,} customers", "",
             "| | " + " | ".join(f"{e} wall (s)" for e in ENGINES) + " | spark / duckdb | "
             + " | ".join(f"{e} CPU (s)" for e in ENGINES) + " | " + " | ".join(f"{e} peak" for e in ENGINES) + " |",
             "|---|" + "---|" * (3 * len(ENGINES) + 1)]

    def row(name: str, pick) -> str:
        walls = [med([pick(r)["wall"] for r in runs[e]]) for e in ENGINES]
        ratio = f"{walls[1] / walls[0]:.2f}" if walls[0] else ""
        return (f"| {name} | " + " | ".join(f"{w:.1f}" for w in walls) + f" | {ratio} | "
                + " | ".join(f"{med([pick(r)['cpu'] for r in runs[e]]):.1f}" for e in ENGINES) + " | "
                + " | ".join(_fmt_bytes(med([pick(r)["peak"] for r in runs[e]])) for e in ENGINES) + " |")

    lines.append(row("**whole night**", lambda r: {"wall": r.total_wall, "cpu": r.total_cpu, "peak": r.peak_rss}))
    for stage in stages:
        lines.append(row(stage, lambda r: r.stages.get(stage, {"wall": 0.0, "cpu": 0.0, "peak": 0})))
    return lines + ["", f"Spark's whole night: {med([r.total_wall for r in runs['spark']]) / base:.1f}x DuckDB's.", ""]


def _projection(measured: dict[int, list[RunMeasure]]) -> list[str]:
    """A 100M-customer night on a cluster, from the Spark runs at the two largest sizes measured: per stage, a
    fixed part and a per-customer part (a line through the two sizes' medians, CPU seconds); the per-customer
    part is spread over ``CLUSTER_CORES`` at ``EFFICIENCY`` (every stage runs its per-customer work on the
    executors), the fixed part runs as measured."""
    med = statistics.median
    small, large = sorted(measured)[-2:]
    stages = [s for s in dict.fromkeys(st for r in measured[large] for st in r.stages)]
    lines = [f"### Projection: {TARGET / 1e6:,.0f}M customers on a cluster", "",
             f"From the Spark runs at {small:,} and {large:,} customers above: each stage's CPU time split into a "
             "fixed part and a per-customer part (the line through the two medians), then scaled to "
             f"{TARGET:,} customers. Assumptions: {CLUSTER_CORES} executor cores (say 25 executors x 8 cores) "
             f"doing useful work {EFFICIENCY:.0%} of the time; every stage's per-customer work runs on the "
             "executors (ingest too: a task per source file, so the export comes as part files, at least as many "
             "per entity as the cluster has cores); a stage's fixed part (Spark's cost per job, dbt's parse, the "
             "driver's model fits on samples) runs as measured. The local runs' CPU time counts the JVM's and the "
             "Python workers' alike; a cluster's executors are not faster per core than this machine. Not "
             "modelled: the shuffles' network and storage traffic of a real cluster, and skew.", "",
             f"| stage | CPU at {small:,} (s) | CPU at {large:,} (s) | fixed (s) | per million customers (CPU s) | "
             f"projected wall at {TARGET / 1e6:,.0f}M (s) |",
             "|---|---|---|---|---|---|"]
    total = fixed_total = 0.0
    for stage in stages:
        at = {n: med([r.stages.get(stage, {}).get("cpu", 0.0) for r in measured[n]]) for n in (small, large)}
        per = max(at[large] - at[small], 0.0) / (large - small)
        fixed = at[large] if stage in FIXED else max(at[large] - per * large, 0.0)
        wall = fixed if stage in FIXED else fixed + per * TARGET / (CLUSTER_CORES * EFFICIENCY)
        total += wall
        fixed_total += fixed
        lines.append(f"| {stage} | {at[small]:.1f} | {at[large]:.1f} | {fixed:.1f} | {per * 1e6:.1f} | {wall:,.0f} |")
    lines.append(f"| **total** | | | | | **{total:,.0f}** ({total / 3600:.1f} h) |")
    lines += ["", f"Where the time goes: {(total - fixed_total) / 3600:.1f} h of per-customer work spread over the "
              f"executors and {fixed_total / 3600:.1f} h of fixed parts.", ""]
    return lines
