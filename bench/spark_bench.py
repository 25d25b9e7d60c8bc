"""The dbt project on DuckDB against the same project on a local Spark session (``make bench``, section ``spark``).

What runs on Spark today is the dbt layer (issue 18), so that is what is compared: one real nightly run at each
size builds the raw tables, the pseudonyms and the scores (dbt's sources); then ``dbt build`` of the whole
project (every model and test) runs on a copy of that warehouse with dbt-duckdb, and on a local Spark session
(``local[<cores>]``, ``orchestration/spark_session.py``) after the same sources are copied into its catalog.
Each runs in a subprocess of ``.venv-spark`` (pyspark, dbt-spark; ``make test-spark`` builds it) whose process
tree is sampled for wall time and peak memory; Spark's JVM start and the copy of the sources are timed apart
from its ``dbt build``. Medians of ``repeats`` runs.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline_bench import _fmt_bytes, run_once, sampled  # noqa: E402

SPARK_PYTHON = ROOT / ".venv-spark" / "bin" / "python"

BUILD = r"""
import json, os, sys, time
from pathlib import Path
engine, warehouse, work, dbt_vars = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
sys.path.insert(0, os.getcwd())
from orchestration.dbt_project import dbt_project
from orchestration.spark_session import build_project, copy_sources, local_session
timings = {}
t0 = time.perf_counter()
if engine == "spark":
    spark = local_session(work / "spark", driver_memory="4g")
    timings["session"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    copy_sources(spark, warehouse, dbt_project.manifest_path)
    timings["copy sources"] = time.perf_counter() - t0
    t0 = time.perf_counter()
ok, results = build_project(engine, work / "target", dbt_vars)
timings["dbt build"] = time.perf_counter() - t0
bad = [r["unique_id"] for r in results if r["status"] not in ("success", "pass")]
print(json.dumps({"timings": timings, "nodes": len(results), "failed": bad, "ok": ok}))
"""


def _build(engine: str, warehouse: Path, work: Path, dbt_vars: dict) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    done, started, finished, sampler = sampled([str(SPARK_PYTHON), "-c", BUILD, engine, str(warehouse), str(work),
                                                json.dumps(dbt_vars)], cwd=ROOT, stderr=subprocess.PIPE)
    if done.returncode:
        raise RuntimeError(f"dbt build on {engine} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["failed"] or not out["ok"]:
        raise RuntimeError(f"dbt build on {engine}: {out['failed'][:5]}")
    out["wall"], out["peak"] = finished - started, sampler.window(started, finished)[1]
    return out


def section(sizes: list[int], repeats: int, generated, work_root: Path) -> list[str]:
    from orchestration.dbt_project import run_vars

    lines = ["## dbt on DuckDB and on a local Spark session", "",
             "The whole dbt project (every model and test) on the sources of one real nightly run, with dbt-duckdb "
             "and with dbt-spark on `local[2]` (see `bench/spark_bench.py`); wall time and peak memory of each "
             f"subprocess, medians of {repeats} runs. Spark's wall includes its JVM start and the copy of the "
             "sources into its catalog, shown apart.", "",
             "| customers | engine | wall (s) | of which dbt build (s) | JVM start (s) | copy sources (s) | peak memory | "
             "wall / DuckDB's |", "|---|---|---|---|---|---|---|---|"]
    if not SPARK_PYTHON.exists():
        return lines[:2] + ["Not measured: `.venv-spark` is missing (`make test-spark` builds it).", ""]
    for size in sizes:
        print(f"spark: a nightly run at {size:,} customers for dbt's sources ...", flush=True)
        measure = run_once(generated(size), work_root / f"spark_run_{size}")
        warehouse = measure.work / "warehouse.duckdb"
        dbt_vars = run_vars(warehouse)
        runs: dict[str, list[dict]] = {"duckdb": [], "spark": []}
        for i in range(repeats):
            for engine in runs:
                print(f"spark: {size:,} customers, dbt build on {engine}, run {i + 1}/{repeats} ...", flush=True)
                copy = work_root / f"spark_{engine}.duckdb"
                shutil.copyfile(warehouse, copy)
                runs[engine].append(_build(engine, copy, work_root / f"spark_{engine}", {**dbt_vars, "warehouse_path": str(copy)}))
                copy.unlink()
        shutil.rmtree(measure.work, ignore_errors=True)
        med = statistics.median
        base = med([r["wall"] for r in runs["duckdb"]])
        for engine, rs in runs.items():
            part = lambda key: med([r["timings"].get(key, 0.0) for r in rs])  # noqa: E731
            wall = med([r["wall"] for r in rs])
            lines.append(f"| {size:,} | {engine} | {wall:.1f} | {part('dbt build'):.1f} | "
                         f"{part('session'):.1f} | {part('copy sources'):.1f} | {_fmt_bytes(med([r['peak'] for r in rs]))} | "
                         f"{wall / base:.2f} |")
    shutil.rmtree(work_root, ignore_errors=True)
    return lines + [""]
