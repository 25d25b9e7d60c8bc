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
ONCE_FROM = 1_000_000  # from this size, one run per engine


def _run(engine: str, source: Path, work: Path) -> RunMeasure:
    env = {"CRM_SPARK_DIR": str(work / "spark-catalog"), "CRM_SPARK_DRIVER_MEMORY": DRIVER_MEMORY}
    return run_once(source, work, env=env, cli=str(SPARK_CLI), extra=("--engine", engine))


def section(sizes: list[int], repeats: int, generated, work_root: Path) -> list[str]:
    lines = ["## The nightly job on DuckDB and on a local Spark session", "",
             "`crm-potential run` on the same generated source with the default engine and with `--engine spark` "
             f"(`local[2]`, driver memory {DRIVER_MEMORY}; see `bench/spark_bench.py`), both from `.venv-spark`; wall "
             f"time and peak memory of each run's process tree (the JVM included), medians of {repeats} run(s) "
             f"below {ONCE_FROM:,} customers, one run from there (a Spark night at a million takes most of an hour "
             "here). "
             "On Spark the source still lands in the DuckDB file first (ingest), the contract step copies it into "
             "the Spark catalog, and everything after runs on Spark.", ""]
    if not SPARK_CLI.exists():
        return lines + ["Not measured: `.venv-spark` is missing (`make test-spark` builds it).", ""]
    for size in sizes:
        runs: dict[str, list[RunMeasure]] = {engine: [] for engine in ENGINES}
        source = generated(size)
        times = repeats if size < ONCE_FROM else 1
        for i in range(times):
            for engine in ENGINES:
                print(f"spark: {size:,} customers, the nightly job on {engine}, run {i + 1}/{times} ...", flush=True)
                runs[engine].append(_run(engine, source, work_root / f"{engine}_{size}"))
        lines += _table(size, runs)
    shutil.rmtree(work_root, ignore_errors=True)
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
