"""Benchmarks (``make bench``): medians of repeated runs, with ratios against a baseline in the same process.

Sections (``--only NAME`` to run one):

* ``pipeline``: the nightly job end to end through ``crm-potential run`` at 5,000 (the bundled sample's size), 100k and 1M customers
  (``--sizes``), per stage (wall, CPU, peak memory) and against its compute floor; see
  ``bench/pipeline_bench.py``.
* ``scale``: one run at 10,000,000 customers (``--scale-size``; generated in shards straight to Parquet) against
  the largest pipeline size measured in the same process, per stage, with the growth per 10x
  (``scale_section`` in ``bench/pipeline_bench.py``). About an hour on 2 cores: ``--skip scale`` leaves it out.
* ``spark``: the nightly job on DuckDB against the same job with ``--engine spark`` on a local Spark session
  (``local[2]``), at 100k and 1M customers, per stage (``bench/spark_bench.py``; needs ``.venv-spark``, which
  ``make test-spark`` builds).
* ``sample``: the learned models' back-test metrics and fit time by training sample size, on the
  warehouse of the largest pipeline size (``bench/sample_bench.py``).
* ``source``: the ingest step from Parquet files against a PostgreSQL database, full and incremental (1 % changed),
  at 1M customers (``bench/source_bench.py``; a throw-away PostgreSQL server as in the tests).
* ``btyd``: BG/NBD + Gamma-Gamma fits on 1,000,000 generated customers (ours), with the archived
  ``lifetimes`` package as the baseline when it is installed (``make venv``), and the
  CDNOW sample tiled 43 times (a correct fit on weighted unique rows returns the same parameters).

Generated data is cached under ``bench/cache`` (``--clean``, which ``make bench`` passes, removes it and every
work folder afterwards). Results are written to ``bench/results.md`` with a description of the machine; a
section run alone (``--only``) replaces its own part of the file and keeps the others.
"""

from __future__ import annotations

import argparse
import re
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.btyd import fit_bgnbd, fit_gamma_gamma  # noqa: E402
from ml.sample_data import GeneratorConfig, generate  # noqa: E402

CACHE = ROOT / "bench" / "cache"
SCALE_SIZE = 10_000_000  # the scale section's one run (``--scale-size``)
SPARK_SIZES = (100_000, 1_000_000)  # the spark section's sizes, those of --sizes among them
RESULTS = ROOT / "bench" / "results.md"
END = date(2026, 9, 30)


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, "
        f"numpy {np.__version__}, duckdb {duckdb.__version__}"
    )


SAMPLE_CUSTOMERS = 5_000  # the bundled sample of `make run`: the same generator, seed and CSV files


def generated(customers: int) -> Path:
    sample = customers == SAMPLE_CUSTOMERS
    folder = CACHE / f"customers_{customers}"
    if not (folder / ("orders.csv" if sample else "orders.parquet")).exists():
        print(f"generating {customers:,} customers into {folder} ...", flush=True)
        generate(GeneratorConfig(customers=customers, seed=42 if sample else 1, end_date=END,
                                 file_format="csv" if sample else "parquet"), folder)
    return folder


def btyd_summary(folder: Path) -> pd.DataFrame:
    """(x, t_x, T, mean repeat spend) per buyer at END, in days, computed in DuckDB."""
    return duckdb.sql(f"""
        with days as (
            select customer_id, cast(ordered_at as date) as d, sum(amount) as spend
            from read_parquet('{folder}/orders.parquet') where status = 'completed' group by 1, 2),
        firsts as (select customer_id, min(d) as first from days group by 1)
        select count(*) - 1 as x, date_diff('day', min(d), max(d)) as tx,
               date_diff('day', min(d), date '{END}') as "T",
               avg(case when d > first then spend end) as m
        from days join firsts using (customer_id) group by customer_id""").df()


def section_btyd(repeats: int) -> list[str]:
    summary = btyd_summary(generated(1_000_000))
    repeat = summary[summary.x > 0]
    print(f"btyd: {len(summary):,} buyers, {len(repeat):,} repeat buyers", flush=True)
    ours_bg, bg = median_time(lambda: fit_bgnbd(summary.x, summary.tx, summary["T"]), repeats)
    ours_gg, gg = median_time(lambda: fit_gamma_gamma(repeat.x, repeat.m), repeats)
    lines = [
        "## BG/NBD + Gamma-Gamma fit, 1,000,000 generated customers",
        "",
        f"{len(summary):,} customers with a purchase ({len(repeat):,} repeat buyers); "
        f"{bg.n_unique_rows:,} unique (x, t_x, T) rows at day resolution. Median of {repeats} runs.",
        "",
        "| fit | ours (s) | lifetimes 0.11.3 (s) | lifetimes / ours |",
        "|---|---|---|---|",
    ]
    have_lifetimes = importlib.util.find_spec("lifetimes") is not None
    ref = {}
    if have_lifetimes:
        from lifetimes import BetaGeoFitter, GammaGammaFitter

        ref["bg"], ref_bg = median_time(
            lambda: BetaGeoFitter().fit(summary.x, summary.tx, summary["T"]).params_, repeats)
        ref["gg"], ref_gg = median_time(lambda: GammaGammaFitter().fit(repeat.x, repeat.m).params_, repeats)
    for name, ours in (("BG/NBD", ours_bg), ("Gamma-Gamma", ours_gg)):
        key = "bg" if name == "BG/NBD" else "gg"
        if key in ref:
            lines.append(f"| {name} | {ours:.2f} | {ref[key]:.2f} | {ref[key] / ours:.1f}x |")
        else:
            lines.append(f"| {name} | {ours:.2f} | not installed | |")
    lines.append(f"| both | **{ours_bg + ours_gg:.2f}** | {sum(ref.values()):.2f} | |" if ref else
                 f"| both | **{ours_bg + ours_gg:.2f}** | | |")
    lines += ["", f"Parameters (per day): r={bg.r:.4f}, alpha={bg.alpha:.3f}, a={bg.a:.4f}, b={bg.b:.4f}; "
              f"p={gg.p:.4f}, q={gg.q:.4f}, gamma={gg.gamma:.3f}."]
    if have_lifetimes:
        lines.append(f"lifetimes: r={ref_bg['r']:.4f}, alpha={ref_bg['alpha']:.3f}, a={ref_bg['a']:.4f}, "
                     f"b={ref_bg['b']:.4f}; p={ref_gg['p']:.4f}, q={ref_gg['q']:.4f}, gamma={ref_gg['v']:.3f}.")

    # CDNOW tiled 43 times: the same data, so the same maximum-likelihood parameters
    if have_lifetimes:
        from lifetimes import BetaGeoFitter
        from lifetimes.datasets import load_cdnow_summary

        cdnow = load_cdnow_summary(index_col=[0])
        tiled = pd.concat([cdnow] * 43)
        once = fit_bgnbd(cdnow.frequency, cdnow.recency, cdnow["T"])
        many = fit_bgnbd(tiled.frequency, tiled.recency, tiled["T"])
        ref_once = BetaGeoFitter().fit(cdnow.frequency, cdnow.recency, cdnow["T"]).params_
        ref_many = BetaGeoFitter().fit(tiled.frequency, tiled.recency, tiled["T"]).params_
        lines += ["", "## CDNOW (2,357 customers, weeks) tiled 43 times", "",
                  "| fit | r | alpha | a | b |", "|---|---|---|---|---|"]
        for label, p in (("ours, once", once.as_dict()), ("ours, tiled", many.as_dict()),
                         ("lifetimes, once", ref_once), ("lifetimes, tiled", ref_many)):
            lines.append(f"| {label} | {p['r']:.4f} | {p['alpha']:.4f} | {p['a']:.4f} | {p['b']:.4f} |")
    return lines


def keeper(name: str):
    """``on_progress`` for a long section: its partial lines written to the results file as they come."""
    def keep(partial: list[str]) -> None:
        RESULTS.write_text("\n".join(HEADER + merge(RESULTS.read_text() if RESULTS.exists() else "",
                                                     {name: partial})))
    return keep


def section_pipeline(repeats: int, sizes: list[int]) -> list[str]:
    from bench.pipeline_bench import section

    return section(sizes, repeats, generated, CACHE / "work", on_progress=keeper("pipeline"))


def section_scale(repeats: int, sizes: list[int]) -> list[str]:
    from bench.pipeline_bench import scale_section

    return scale_section(SCALE_SIZE, max(s for s in sizes if s < SCALE_SIZE), generated, CACHE / "work")


def section_spark(repeats: int, sizes: list[int]) -> list[str]:
    from bench.spark_bench import section

    return section([s for s in sizes if s in SPARK_SIZES], repeats, generated, CACHE / "work" / "spark",
                   on_progress=keeper("spark"))


def section_sample(repeats: int, sizes: list[int]) -> list[str]:
    from bench.pipeline_bench import run_once, warehouse_of
    from bench.sample_bench import section

    size = max(sizes)
    warehouse = warehouse_of(CACHE / "work", size)
    if not warehouse.exists():  # the pipeline section did not run at this size: one run builds it
        print(f"sample: building a warehouse of {size:,} customers ...", flush=True)
        measure = run_once(generated(size), CACHE / "work" / f"run_{size}")
        shutil.move(measure.work / "warehouse.duckdb", warehouse)
        shutil.rmtree(measure.work, ignore_errors=True)
    return section(warehouse, size)


def section_source(repeats: int, sizes: list[int]) -> list[str]:
    from bench.source_bench import section

    size = 1_000_000 if 1_000_000 in sizes else max(sizes)
    return section(size, repeats, generated, CACHE / "work" / "source")


SECTIONS = {"pipeline": section_pipeline, "scale": section_scale, "spark": section_spark, "btyd": section_btyd, "sample": section_sample, "source": section_source}
HEADER = ["# Benchmark results", "",
          f"Written by `make bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}.", ""]
MARKER = "<!-- section: {} -->"


def merge(previous: str, sections: dict[str, list[str]]) -> list[str]:
    """The results file with the sections just run replaced and the others kept (the CDNOW block that
    ``bench/model_bench.py`` writes between its own markers is kept at the end)."""
    cdnow = re.search(r"<!-- cdnow:start -->.*?<!-- cdnow:end -->", previous, re.S)
    if cdnow:
        previous = previous.replace(cdnow.group(0), "")
    kept: dict[str, str] = {}
    for part in previous.split("<!-- section: ")[1:]:
        name, _, body = part.partition(" -->")
        kept[name] = body.strip("\n")
    out = []
    for name in SECTIONS:
        if name in sections:
            out += [MARKER.format(name), *sections[name], ""]
        elif name in kept:
            out += [MARKER.format(name), kept[name], ""]
    if cdnow:
        out += [cdnow.group(0), ""]
    return out


def main() -> int:
    global SCALE_SIZE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--clean", action="store_true", help="delete the generated data and work folders afterwards")
    parser.add_argument("--sizes", default="5000,100000,1000000",
                        help="customer counts for the pipeline section (comma-separated; default %(default)s)")
    parser.add_argument("--scale-size", type=int, default=SCALE_SIZE,
                        help="customers of the scale section's one run (default %(default)s), against the largest "
                        "pipeline size below it")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(SECTIONS),
                        help="leave a section out (repeatable), e.g. --skip scale: the 10M run takes about an hour")
    args = parser.parse_args()
    SCALE_SIZE = args.scale_size
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    lines = list(HEADER)
    done = {}
    try:
        for name, section in SECTIONS.items():
            if (args.only and name != args.only) or name in args.skip:
                continue
            done[name] = section(args.repeats) if name == "btyd" else section(args.repeats, sizes)
    finally:
        if done:
            lines += merge(RESULTS.read_text() if RESULTS.exists() else "", done)
            RESULTS.write_text("\n".join(lines))
            print("\n".join(lines))
            print(f"\nwritten to {RESULTS}")
        if args.clean:
            shutil.rmtree(CACHE, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
