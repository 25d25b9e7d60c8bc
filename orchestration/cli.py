"""``crm-potential``: generate sample data, run the nightly job, and look after the dbt project.

Every run goes through Dagster (a real run, recorded in ``$DAGSTER_HOME``, default ``./.dagster``),
so the CLI, the schedule and the UI run exactly the same graph.

This module imports only the standard library at the top: ``--help`` answers at once, and ``run`` prints its
first line before Dagster, dbt and the model libraries load (``orchestration/progress.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
import traceback
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration import progress
from orchestration.run_lock import RunLockHeld, describe_holder, run_lock

if TYPE_CHECKING:
    from orchestration.settings import PipelineSettings

EPILOG_RUN = """
Every option can also be set with an environment variable (in brackets) or, from the Dagster UI, as
run config under resources.settings.config. Exit status: 0 published (warnings, if a step after the
publication failed, are printed and noted in pipeline_runs), 1 the run failed (nothing was published;
the previous serving database is untouched) or another run holds the warehouse, 2 bad arguments.

One run per warehouse at a time: a run holds <warehouse>.lock (an OS lock, released when the process ends,
however it ends). A second run exits 1 at once with "another run (<id>, started <time>) holds <warehouse>",
without touching the warehouse; with --wait it waits for the first one to end, then runs.

A failed run prints one line per failed step or check; the full error text and stack frames are in the run
log <warehouse folder>/logs/run_<run_id>.log and in the Dagster UI (--log-level DEBUG prints them too).

examples:
  crm-potential run                                   # the sample data, as of its latest order date
  crm-potential run --source /exports/crm --as-of 2026-06-30
"""


class _ProgressFilter(io.TextIOBase):
    """Keeps the console readable: passes dbt's model, failure and summary lines and drops the per-test chatter,
    except one finished node's line after ``EVERY`` seconds without a line, which shows how far dbt is
    (``150 of 237 PASS ...``)."""

    KEEP = (" OK created", "ERROR", "FAIL", "WARN", "Done.", "Finished running", "Completed successfully", "Found ")
    PROBLEM = re.compile(r"\b(ERROR|FAIL|WARN)\b(?!=)")  # --quiet: dbt's warnings and failures only (not "WARN=0")
    EVERY = 2.0
    NODE = re.compile(r"\b\d+ of \d+ (PASS|OK|SKIP)\b")
    COLOUR = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, target, quiet: bool = False):
        self._target = target
        self._buffer = ""
        self._last = time.monotonic()
        self._quiet = quiet
        self._colour = bool(getattr(target, "isatty", lambda: False)())  # no escape codes in a redirected log

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            now = time.monotonic()
            if self.PROBLEM.search(line) if self._quiet else (
                    any(key in line for key in self.KEEP) or (now - self._last >= self.EVERY and self.NODE.search(line))):
                self._target.write("  dbt | " + (line if self._colour else self.COLOUR.sub("", line)).strip() + "\n")
                self._last = now
                progress.touch()
        return len(text)

    def flush(self) -> None:
        self._target.flush()


def _dagster_home() -> Path:
    """The run history's home (see ``orchestration/run_history.py``)."""
    from orchestration.run_history import dagster_home, write_without_fsync
    from orchestration.settings import PROJECT_ROOT

    home = dagster_home(PROJECT_ROOT / ".dagster")
    write_without_fsync(home)
    return home


def _settings_from_args(args: argparse.Namespace) -> "PipelineSettings":
    from orchestration.settings import PipelineSettings, SettingsError

    overrides = {
        "source_dir": _path_or_url(args.source),
        "full_refresh": True if getattr(args, "full_refresh", False) else None,
        "as_of_date": args.as_of,
        "warehouse_path": str(Path(args.warehouse).resolve()) if args.warehouse else None,
        "serving_path": _path_or_url(args.serving),
        "churn_horizon_days": args.churn_horizon_days,
        "clv_horizon_days": args.clv_horizon_days,
        "model_registry_dir": str(Path(args.models).resolve()) if getattr(args, "models", None) else None,
        "erase_file": str(Path(args.erase).resolve()) if getattr(args, "erase", None) else None,
        "export_parquet_dir": str(Path(args.export_parquet).resolve()) if getattr(args, "export_parquet", None) else None,
        "engine": getattr(args, "engine", None),
    }
    try:
        return PipelineSettings.from_env(config=getattr(args, "config", None), **overrides)
    except (SettingsError, ValueError) as exc:
        raise SystemExit(_usage_error(_settings_message(exc)))


def _path_or_url(value: str | None) -> str | None:
    """``--serving`` / ``--source``: a file or folder (made absolute) or a PostgreSQL URL (kept as given)."""
    from orchestration.serving_postgres import is_database_url

    if not value:
        return None
    return value.strip() if is_database_url(value) else str(Path(value).resolve())


def _settings_message(exc: Exception) -> str:
    """A settings error in one line per bad setting (pydantic's own text spans several, with a URL)."""
    errors = getattr(exc.__cause__ or exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in errors())


def _usage_error(message: str) -> int:
    print(f"crm-potential: error: {message}", file=sys.stderr)
    return 2


def _print_summary(settings: "PipelineSettings", run_id: str, seconds: float) -> None:
    from orchestration import run_logging
    from orchestration.published import open_published

    with open_published(settings) as published:
        top = published.warehouse.rows(
            f"""select potential_rank, customer_id, potential_score, priority_tier, round(clv, 2),
                      round(churn_probability, 3), rfm_segment, next_best_action
               from {published.relation('customer_scores')} order by potential_rank limit 10""")
        n, as_of = published.warehouse.rows(
            f"select count(*), min(as_of_date) from {published.relation('customer_scores')}")[0]
        stages = published.warehouse.rows(f"select stage_seconds, stage_rows from {published.relation('pipeline_runs')} "
                                          "where run_id = ?", [run_id])[0]
        night, night_rows = published.warehouse.rows(
            f"select min(as_of_date), count(*) from {published.relation('customer_scores_history')} where run_id = ?",
            [run_id])[0] if published.has("customer_scores_history") else (None, 0)
    if night is not None and night != as_of:  # a backfilled night: history only, the newer latest tables stay
        print(f"\nAdded the night of {night} to customer_scores_history ({night_rows:,} customers; run {run_id}, "
              f"{seconds:.1f}s). customer_scores stays as of {as_of}, a later night: an earlier night never "
              "replaces it.")
    else:
        print(f"\nPublished {n:,} customer scores as of {as_of} (run {run_id}, {seconds:.1f}s)")
    print(f"  serving database : {settings.serving_display}")
    print(f"  warehouse        : {settings.warehouse_path}" + (" (the landed source; the rest in the Spark catalog)"
                                                                    if settings.engine == "spark" else ""))
    print(f"  Dagster runs     : {os.environ['DAGSTER_HOME']} (make ui)")
    print(f"  run log          : {run_logging.run_log_path(settings.warehouse_path, run_id)}")
    report = settings.reports_dir / f"run_{run_id}.html"
    if report.exists():
        print(f"  run report       : {report} (the newest also at {settings.reports_dir / 'latest.html'})")
    print("\nTop 10 customers by potential:")
    header = ("rank", "customer_id", "score", "tier", "clv", "churn", "rfm_segment", "next_best_action")
    rows = [header] + [tuple(str(v) for v in row) for row in top]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)))
    if stages and stages[0]:
        print_stage_table(json.loads(stages[0]), json.loads(stages[1] or "{}"), run_id)


def print_stage_table(stage_seconds: dict, stage_rows: dict, run_id: str) -> None:
    """Seconds and rows per stage; the publish and report steps (after the record was written) come from
    Dagster's step statistics."""
    from dagster import DagsterInstance

    from orchestration.run_log import stage_summary

    with DagsterInstance.get() as instance:
        for stat in instance.get_run_step_stats(run_id):
            if stat.step_key not in stage_seconds and stat.start_time and stat.end_time:
                stage_seconds[stat.step_key] = stat.end_time - stat.start_time
    table = stage_summary(stage_seconds, stage_rows)
    print("\nStages (seconds, rows out):")
    width = max(len(stage) for stage, _, _ in table)
    for stage, seconds, rows in table:
        print(f"  {stage.ljust(width)}  {seconds:7.1f}  {'' if rows is None else f'{rows:,}'}")


def _quarantine_lines(settings: "PipelineSettings") -> list[str]:
    """What the quarantine holds after a failed run (the usual reason a dbt gate stops it)."""
    from data_quality.quarantine import describe, quarantine_counts, raw_counts

    try:
        with settings.open_warehouse() as warehouse:
            return describe(quarantine_counts(warehouse), raw_counts(warehouse), settings.max_bad_row_share)
    except Exception:  # the warehouse may be what broke; the failure messages above still stand
        return []


def _erased_ids(settings: "PipelineSettings") -> list[str]:
    """Erased customers' ids, so that no failure line names one (the lines are stored and printed)."""
    from data_quality.pii import erased_ids

    if not Path(settings.warehouse_path).exists():
        return []
    try:
        with settings.warehouse() as con:
            return erased_ids(con)
    except Exception:  # the warehouse may be what broke; the generic scrub still applies
        return []


def _record_failure(settings: "PipelineSettings", run_id: str, messages: list[str], started: datetime) -> None:
    """Note the failed run in the warehouse's pipeline_runs (published with the next good run). The lines
    were scrubbed by the caller; the record is scrubbed again as it is stored."""
    from data_quality.pii import scrub_text
    from orchestration import run_log
    from orchestration.failures import first_line
    from orchestration.publication import ensure_ops_tables

    record = run_log.RunRecord(run_id=run_id, as_of_date=settings.as_of_date or None, started_at=started,
                               status="failed", published=False, source_dir=settings.source_dir,
                               parameters=settings.recorded_parameters(),
                               message=scrub_text(" | ".join(messages))[:4000])
    try:
        if settings.engine == "spark":  # the run log the next release publishes
            from orchestration.publication_spark import record_run

            with settings.open_warehouse() as warehouse:
                record_run(warehouse, record)
            return
        with settings.warehouse() as con:
            ensure_ops_tables(con)
            run_log.insert(con, record)
    except Exception as exc:  # the warehouse itself may be the problem; the run's failure is what matters
        print(f"  (not recorded in pipeline_runs: {type(exc).__name__}: {first_line(str(exc), 200)})", file=sys.stderr)


def _note_warnings(settings: "PipelineSettings", run_id: str, warnings: list[str]) -> None:
    """A published run whose later steps failed: the row in pipeline_runs says so (status stays success)."""
    from orchestration import run_log
    from orchestration.failures import first_line

    try:
        if settings.engine == "spark":
            from orchestration.publication_spark import add_warning

            with settings.open_warehouse() as warehouse:
                for warning in warnings:
                    add_warning(warehouse, run_id, warning)
            return
        with settings.warehouse() as con:
            for warning in warnings:
                run_log.add_warning(con, run_id, warning)
    except Exception as exc:
        print(f"  (warnings not recorded in pipeline_runs: {type(exc).__name__}: {first_line(str(exc), 200)})",
              file=sys.stderr)


def prepare_manifest() -> None:
    """Parse the dbt project when its manifest is missing or stale, before the definitions load (they are built
    from it; see ``orchestration/dbt_project.py``)."""
    from orchestration.dbt_project import ensure_manifest, manifest_is_stale

    if manifest_is_stale():
        progress.say("crm-potential: parsing the dbt project (dbt parse: its manifest is missing or older than the models)")
        progress.doing("dbt parse")
        ensure_manifest()


def run_pipeline(settings: "PipelineSettings", *, run_id: str | None = None, log_level: str = "INFO",
                 quiet: bool = False, job_name: str | None = None):
    """Run the nightly job in-process through Dagster; returns the ExecuteInProcessResult. The terminal gets
    one line per log record (``run_logging``), the run log ``<warehouse folder>/logs/run_<run_id>.log`` all."""
    _dagster_home()
    prepare_manifest()
    progress.doing("loading the pipeline definitions")
    from dagster import DagsterInstance

    from orchestration import run_logging
    from orchestration.definitions import defs
    from orchestration.jobs import NIGHTLY_JOB_NAME
    from orchestration.partitions import night_of_run

    run_id = run_id or str(uuid.uuid4())
    log_level = log_level.upper()
    log_path = run_logging.run_log_path(settings.warehouse_path, run_id)
    run_config = {
        # without the alert targets: a webhook URL holds its token, and run config is stored with the run
        "resources": {"settings": {"config": settings.recorded_parameters()}},
        "loggers": {"console": {"config": {"log_level": "WARNING" if quiet else log_level}},
                    "file": {"config": {"path": str(log_path),
                                        "log_level": "DEBUG" if log_level == "DEBUG" else "INFO"}}},
    }
    job = defs.resolve_job_def(job_name or NIGHTLY_JOB_NAME).with_logger_defs(run_logging.logger_defs(log_level))
    # every run is one night (a partition, as the UI lists them); validate's go to a throw-away Dagster instance
    partition, tags = night_of_run(settings)
    stdout = contextlib.nullcontext() if log_level == "DEBUG" else contextlib.redirect_stdout(
        _ProgressFilter(sys.stdout, quiet=quiet))
    progress.doing("starting the Dagster run: recording its planned assets and checks")
    try:
        with (DagsterInstance.get() if job.name == NIGHTLY_JOB_NAME else DagsterInstance.ephemeral()) as instance, \
                stdout:
            return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False,
                                          run_id=run_id, partition_key=partition, tags=tags)
    finally:
        progress.doing(None)
        run_logging.close(log_path)


def cmd_run(args: argparse.Namespace) -> int:
    # progress lines at the default level only: --quiet wants warnings and the summary, DEBUG prints everything
    with progress.Progress(enabled=not args.quiet and args.log_level == "INFO") as shown:
        shown.say("crm-potential: starting the nightly job (loading Dagster, dbt and the models takes a few seconds)")
        shown.doing("loading Python libraries")
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    if settings.engine == "spark" and (problem := _spark_problem()):
        return _usage_error(problem)
    if settings.engine == "spark" and (settings.serving_target is not None or settings.export_parquet_dir):
        return _usage_error("--engine spark publishes in the Spark catalog (the views serving.*); a PostgreSQL "
                            "--serving or --export-parquet is not available with it yet")
    if settings.source_database is None and not Path(settings.source_dir).is_dir():
        return _usage_error(
            f"source folder {settings.source_dir} does not exist (run `make sample` for the bundled sample)"
        )
    if settings.source_database is None and (failed := _missing_source_files(settings)):
        print(f"crm-potential: {failed}; nothing was run, the serving database {settings.serving_display} is "
              "unchanged.", file=sys.stderr)
        return 1
    if settings.source_database is not None and (failed := _database_source_problem(settings)):
        print(f"crm-potential: {failed}; nothing was run, the serving database {settings.serving_display} is "
              "unchanged.", file=sys.stderr)
        return 1
    run_id = str(uuid.uuid4())
    warehouse = Path(settings.warehouse_path)

    def waiting(holder: dict) -> None:
        limit = f" (at most {args.wait:g} s)" if args.wait else ""
        print(f"crm-potential: {describe_holder(warehouse, holder)}; waiting for it to end{limit}",
              file=sys.stderr, flush=True)
        progress.doing("waiting for the other run to end")

    try:
        with run_lock(warehouse, run_id, wait=args.wait, on_wait=waiting):
            return _run_holding_lock(settings, args, run_id)
    except RunLockHeld as exc:
        print(f"crm-potential: {exc}; this run stopped before touching it, so it is not recorded in pipeline_runs. "
              "Run again when that run has ended, or add --wait to wait for it.", file=sys.stderr)
        return 1


def _spark_problem() -> str | None:
    """Why ``--engine spark`` cannot run here (PySpark, dbt-spark or Java missing), said before Dagster starts."""
    import importlib.util
    import shutil

    def importable(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    missing = [name for name, module in (("pyspark", "pyspark"), ("dbt-spark", "dbt.adapters.spark"))
               if not importable(module)]
    if missing:
        return (f"--engine spark needs {' and '.join(missing)}: install the spark extra (pip install "
                "'crm-potential[spark]'; `make test-spark` builds .venv-spark with it)")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        return "--engine spark needs Java 17 (Debian: apt-get install default-jre-headless; or set JAVA_HOME)"
    return None


def _missing_source_files(settings: "PipelineSettings") -> str | None:
    """A required entity without a file, said at once rather than after Dagster and dbt have started."""
    from data_quality.contract import ENTITIES
    from orchestration.source_files import SourceError, find_files, missing_file

    for entity in ENTITIES.values():
        try:
            if entity.required and not find_files(Path(settings.source_dir), entity.name):
                return str(missing_file(entity, Path(settings.source_dir))).rstrip(".")
        except SourceError as exc:  # a folder mixing CSV and Parquet
            return str(exc).rstrip(".")
    return None


def _database_source_problem(settings: "PipelineSettings") -> str | None:
    """A database source that cannot be read (no connection, a required table or column missing): said once,
    before Dagster starts, rather than once per ingest step."""
    from data_quality.contract import ENTITIES
    from orchestration.postgres_url import DatabaseError
    from orchestration.source_database import check_source
    from orchestration.source_files import SourceError

    try:
        check_source(settings.source_database, ENTITIES.values())
    except (DatabaseError, SourceError) as exc:
        return str(exc).rstrip(".")
    return None


def _run_holding_lock(settings: "PipelineSettings", args: argparse.Namespace, run_id: str) -> int:
    from data_quality.pii import scrub_text
    from orchestration import run_logging
    from orchestration.failures import run_outcome

    log_path = run_logging.run_log_path(settings.warehouse_path, run_id)
    print(f"crm-potential: running the nightly job on {settings.source_display} (run {run_id})", flush=True)
    progress.doing("loading Dagster and dbt")
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    t0 = time.perf_counter()
    args.run_log = log_path  # main() puts the frames of an error outside the steps there
    result = run_pipeline(settings, run_id=run_id, log_level=args.log_level, quiet=args.quiet)
    seconds = time.perf_counter() - t0
    outcome = run_outcome(result.all_events, warehouse=settings.warehouse_path)
    if result.success:
        _print_summary(settings, result.run_id, seconds)
        return 0
    from orchestration.published import published_run_id

    ids = _erased_ids(settings)
    lines = [scrub_text(line, ids) for line in outcome.lines]
    # the serving file was swapped in (the publish step said so, or the file holds this run): what failed
    # after that is a warning on a published run, never "nothing was published"
    if outcome.published or published_run_id(settings) == result.run_id:
        _note_warnings(settings, result.run_id, lines)
        _print_summary(settings, result.run_id, seconds)
        print(f"\nPublished, but {len(lines)} later step(s) or check(s) failed:", file=sys.stderr)
        for line in lines:
            print(f"  - {line}", file=sys.stderr)
        print(f"Full error text and stack frames: {log_path} (and the Dagster UI: make ui)", file=sys.stderr)
        run_logging.append(log_path, "published with warnings: " + " | ".join(lines))
        _alert(settings, result.run_id)
        return 0
    lines = (lines or ["the run failed before any step; see the run log"]) + [
        scrub_text(line, ids) for line in _quarantine_lines(settings)]
    _record_failure(settings, result.run_id, lines, started)
    print(f"\nRun {result.run_id} FAILED after {seconds:.1f}s; nothing was published.", file=sys.stderr)
    for line in lines:
        print(f"  - {line}", file=sys.stderr)
    print(f"The serving database {settings.serving_display} is unchanged.", file=sys.stderr)
    print(f"Full error text and stack frames: {log_path} (and the Dagster UI: make ui)", file=sys.stderr)
    run_logging.append(log_path, "run failed: " + " | ".join(lines))
    _alert(settings, result.run_id)
    return 1


def _alert(settings: "PipelineSettings", run_id: str) -> None:
    """A failed run alerts as the daemon's failure sensor would (no daemon sees an in-process run)."""
    from orchestration.alerts import alert_failed_run, has_targets, targets_display

    if not has_targets(settings):
        return
    problems = alert_failed_run(settings, None, run_id)
    for problem in problems:
        print(f"  (alert: {problem})", file=sys.stderr)
    if not problems:
        print(f"Alert sent: {targets_display(settings)}.", file=sys.stderr)


def cmd_backfill(args: argparse.Namespace) -> int:
    """``run`` once per night of the range, oldest first; stops at the first failure."""
    from orchestration.partitions import NIGHTLY_PARTITIONS, partition_keys, partition_of

    first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    if first > last:
        return _usage_error(f"--from {first} is after --to {last}")
    if partition_of(first) is None or partition_of(last) is None:
        return _usage_error(f"the nights run from {NIGHTLY_PARTITIONS.start.date()} (CRM_PARTITIONS_START) to today; "
                            f"{first} .. {last} is not inside them")
    nights = partition_keys(first, last)
    done: list[tuple[str, int]] = []
    for i, night in enumerate(nights, 1):
        print(f"crm-potential backfill: night {i} of {len(nights)}, {night}", flush=True)
        code = cmd_run(argparse.Namespace(**{**vars(args), "as_of": night}))
        done.append((night, code))
        if code != 0:
            break
    print(f"\nBackfill {first} .. {last}: " + ", ".join(f"{n} {'ok' if c == 0 else 'FAILED'}" for n, c in done)
          + (f"; not run: {', '.join(nights[len(done):])}" if len(done) < len(nights) else ""))
    return done[-1][1]


def cmd_validate(args: argparse.Namespace) -> int:
    """The night's source checks on a scratch warehouse: the real warehouse, serving database, cursors and models
    are not touched (a database source is read in full); exit 0 when the source would pass, 1 with the same
    failure lines as a failed night."""
    import tempfile

    from data_quality.pii import scrub_text
    from data_quality.quarantine import describe, quarantine_counts, raw_counts
    from orchestration.failures import run_outcome
    from orchestration.jobs import VALIDATE_JOB_NAME

    real = _settings_from_args(args)
    if real.source_database is None and not Path(real.source_dir).is_dir():
        return _usage_error(f"source folder {real.source_dir} does not exist")
    failed = _missing_source_files(real) if real.source_database is None else _database_source_problem(real)
    if failed:
        print(f"crm-potential: {failed}.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="crm-validate-") as scratch:
        # the last publication stays the reference of the row-count band; everything written goes to scratch;
        # on the embedded engine whatever CRM_ENGINE says (the contract's models compute the same on Spark, as
        # `make test-spark` shows, and a scratch Spark catalog would cost a JVM and minutes)
        settings = real.model_copy(update={"warehouse_path": str(Path(scratch) / "warehouse.duckdb"),
                                           "serving_path": str(real.serving_file), "erase_file": "",
                                           "export_parquet_dir": "", "engine": "duckdb"})
        print(f"crm-potential: validating {settings.source_display} (contract, quarantine and source checks; "
              "no models, nothing published)", flush=True)
        t0 = time.perf_counter()
        result = run_pipeline(settings, log_level=args.log_level, quiet=args.quiet, job_name=VALIDATE_JOB_NAME)
        seconds = time.perf_counter() - t0
        # the scratch folder goes with the validation: no pointer to its dbt log
        lines = [re.sub(r"; dbt log: \S+", "", scrub_text(line))
                 for line in run_outcome(result.all_events, warehouse=settings.warehouse_path).lines]
        try:
            with settings.open_warehouse() as warehouse:
                quarantined, read = quarantine_counts(warehouse), raw_counts(warehouse)
                lines += [] if result.success else describe(quarantined, read, settings.max_bad_row_share)
        except Exception:
            quarantined, read = {}, {}
    if result.success:
        set_aside = sum(sum(rules.values()) for rules in quarantined.values())
        print(f"\nThe source passes every check of a night ({seconds:.1f}s): "
              + ", ".join(f"{name} {n:,} rows" for name, n in read.items())
              + f"; {set_aside:,} row(s) would be quarantined.")
        for name, rules in quarantined.items():
            for rule, n in rules.items():
                print(f"  - {name}: {n:,} x {rule}")
        return 0
    print(f"\nThe source FAILS the night's checks ({seconds:.1f}s); a run on it would publish nothing:", file=sys.stderr)
    for line in lines or ["the validation failed before any step; run with --log-level debug"]:
        print(f"  - {line}", file=sys.stderr)
    return 1


def cmd_generate(args: argparse.Namespace) -> int:
    from ml.sample_data import run_from_args
    from orchestration.postgres_url import DatabaseError, is_database_url

    if not is_database_url(args.out):
        run_from_args(args)
        return 0
    import tempfile

    from data_quality.contract import ENTITIES
    from orchestration.source_database import DatabaseSource, write_source

    try:
        source = DatabaseSource.parse(args.out)
        with tempfile.TemporaryDirectory(prefix="crm-generate-") as folder:
            args.out, args.format = folder, "parquet"
            run_from_args(args)
            counts = write_source(folder, source, ENTITIES.values())
    except DatabaseError as exc:
        print(f"crm-potential: {exc}", file=sys.stderr)
        return 1
    print(f"loaded into {source.display}: " + ", ".join(f"{name} {n:,} rows" for name, n in counts.items()))
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from orchestration.dbt_project import ensure_manifest

    print(ensure_manifest(force=True))
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    """dbt docs (models, columns, tests, lineage) from the last built warehouse, as a site that opens from a file.

    ``dbt docs generate --static`` writes ``static_index.html`` with the manifest and the catalog inlined: a
    browser opening ``index.html`` from the file system cannot fetch ``manifest.json`` beside it and stays
    at "loading", the static file needs no server. The docs get their own target folder so the manifest
    Dagster loads (``dbt_project/target/manifest.json``) is left alone.
    """
    import json
    import subprocess

    import duckdb

    from orchestration.dbt_project import DBT_PROJECT_DIR, dbt_executable
    from orchestration.warehouse import DuckDBWarehouse

    settings = _settings_from_args(args)
    warehouse = Path(settings.warehouse_path)
    if not warehouse.exists():
        return _usage_error(f"no warehouse at {warehouse}; run `crm-potential run` (or `make run`) first")
    out = Path(args.out).resolve() if args.out else DBT_PROJECT_DIR / "target" / "docs"
    try:  # the same vars as the last run (as-of date and cutoffs), so the compiled SQL in the docs is the real one
        with duckdb.connect(str(warehouse), read_only=True) as con:
            windows = settings.resolve_windows(DuckDBWarehouse(con))
    except duckdb.Error as exc:
        return _usage_error(f"cannot read the warehouse {warehouse} ({exc}); is a run writing to it?")
    dbt_vars = settings.dbt_vars(windows, "docs")
    proc = subprocess.run(
        [dbt_executable(), "docs", "generate", "--static", "--vars", json.dumps(dbt_vars),
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(out)],
        cwd=DBT_PROJECT_DIR,
    )
    static = out / "static_index.html"
    if proc.returncode != 0 or not static.exists():
        print(f"crm-potential: dbt docs generate failed (exit {proc.returncode}); see dbt's messages above",
              file=sys.stderr)
        return proc.returncode or 1
    print(f"\ndbt docs: {static}\n  one self-contained file: open it in a browser from the file system (no server, "
          f"no network)\n  or serve the site: {dbt_executable()} docs serve --project-dir {DBT_PROJECT_DIR} "
          f"--profiles-dir {DBT_PROJECT_DIR} --target-path {out}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    if settings.engine == "spark":
        return _rollback_spark(settings, args)
    if settings.serving_target is not None:
        return _rollback_database(settings, args)
    from orchestration.publication import describe_publications, rollback, version_run_id

    if args.list:
        found = describe_publications(settings.serving_file)
        if not found:
            print(f"no publication in {settings.serving_file} yet")
            return 0
        print(f"{'':2}{'run':10}{'as of':12}{'published (UTC)':18}{'customers':>10}  full run id / file")
        for p in found:
            print(f"{'*' if p.current else ' ':2}{p.run_id[:8]:10}{p.as_of_date:12}{p.published_at:18}{p.rows:>10,}  "
                  f"{p.run_id}" + ("  (current)" if p.current else f"  {p.path.name}"))
        print("rollback --to RUN_ID takes the first characters of a run id when they are unambiguous")
        return 0
    try:  # a rollback during a run would be overwritten by its publication: one at a time
        with run_lock(settings.warehouse_path, f"rollback-{uuid.uuid4()}"):
            chosen = rollback(settings.serving_file, args.to)
    except RunLockHeld as exc:
        return _rollback_refused(exc)
    except FileNotFoundError as exc:
        return _usage_error(str(exc))
    print(f"rolled back {settings.serving_file} to run {version_run_id(chosen)} ({chosen.name}); readers see it on "
          "their next connection (once every connection of their process to the file is closed)")
    return 0


def _rollback_refused(exc: RunLockHeld) -> int:
    print(f"crm-potential: {exc}; nothing was rolled back. Run it again when that run has ended.", file=sys.stderr)
    return 1


def _rollback_spark(settings: "PipelineSettings", args: argparse.Namespace) -> int:
    """Rollback on Spark: the serving views point at a kept release (default: the newest before the current)."""
    from orchestration.publication_spark import PublicationError, current_release, releases, rollback_to

    if problem := _spark_problem():
        return _usage_error(problem)
    try:
        with run_lock(settings.warehouse_path, f"rollback-{uuid.uuid4()}"), settings.open_warehouse() as warehouse:
            kept, current = releases(warehouse), current_release(warehouse)
            if args.list or not kept:
                if not kept:
                    print("no release in the Spark catalog yet")
                for release, as_of, written in kept:
                    print(f"{'*' if release == current else ' ':2}{release[:8]:10}{as_of:12}{written:%Y-%m-%d %H:%M}  "
                          f"{release}" + ("  (current)" if release == current else ""))
                return 0
            ids = [r for r, _, _ in kept]
            older = ids[ids.index(current) + 1:] if current in ids else ids  # newest first
            target = args.to or (older[0] if older else None)
            if target is None:
                print("crm-potential: no release older than the current one is kept; nothing to roll back to",
                      file=sys.stderr)
                return 1
            chosen = rollback_to(warehouse, target)
    except RunLockHeld as exc:
        return _rollback_refused(exc)
    except PublicationError as exc:
        return _usage_error(str(exc))
    print(f"rolled back the Spark catalog's serving views to the release of run {chosen}; readers see it with their "
          "next query")
    return 0


def _rollback_database(settings: "PipelineSettings", args: argparse.Namespace) -> int:
    """Rollback on a PostgreSQL serving target: the kept release schema swapped back in, then the local release
    file to the same run when it is kept (the next night's segment transitions read it)."""
    from orchestration.publication import list_versions, rollback
    from orchestration.serving_postgres import ServingTargetError, connect, releases, rollback_release

    target = settings.serving_target
    try:
        if args.list:
            con = connect(target)
            try:
                for release in releases(con, target):
                    print(f"{release.schema}\trun {release.run_id}\tas of {release.as_of_date}\t"
                          f"published {release.published_at}")
            finally:
                con.close()
            return 0
        with run_lock(settings.warehouse_path, f"rollback-{uuid.uuid4()}"):
            chosen = rollback_release(target, args.to)
            local = [v for v in list_versions(settings.serving_file) if v.stem.endswith(f".{chosen.run_id}")]
            if local:
                rollback(settings.serving_file, chosen.run_id)
    except RunLockHeld as exc:
        return _rollback_refused(exc)
    except ServingTargetError as exc:
        print(f"crm-potential: {exc}", file=sys.stderr)
        return 1
    print(f"rolled back {target.display} to the release of run {chosen.run_id} (as of {chosen.as_of_date}); "
          "readers see it with their next query")
    if not local:
        print(f"  the local release file {settings.serving_file} keeps its publication: run {chosen.run_id} is not "
              "kept there", file=sys.stderr)
    return 0


class _EnvHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Fills in each option's environment variable (``{env:<setting>}`` in its help) when help is printed: the
    names live in ``orchestration.settings``, which loads Dagster, so it is imported then and not before."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if "{env:" not in text:
            return text
        from orchestration.settings import ENV_VARS

        return re.sub(r"\{env:(\w+)\}", lambda m: ENV_VARS[m.group(1)], text)


def _iso_date(text: str) -> str:
    """``--as-of``: a real calendar date, said in the flag's terms when it is not."""
    from datetime import date

    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD, got {text!r}") from None


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 day, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-potential",
        description="Customer-potential scoring for CRM data: ingest, dbt, scores, quality gates, publish.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the whole nightly job through Dagster and publish the serving database",
        description="Run the whole nightly job (ingest -> dbt -> scores -> checks -> publish) through Dagster.",
        epilog=EPILOG_RUN,
        formatter_class=_EnvHelpFormatter,
    )
    run.add_argument("--source", metavar="DIR|URL",
                     help="source folder ({env:source_dir}; default data/sample), or a PostgreSQL database "
                     "postgresql://user@host:5432/db?schema=crm read incrementally (password from CRM_SOURCE_PASSWORD, "
                     "PGPASSWORD or ~/.pgpass)")
    run.add_argument("--full-refresh", action="store_true",
                     help="a database source: read every table in full, not only the rows changed since the last "
                     "published run")
    run.add_argument(
        "--as-of", metavar="DATE", type=_iso_date,
        help="YYYY-MM-DD; the run sees data up to the end of this date ({env:as_of_date}; "
        "default: the latest order date, capped at today)",
    )
    run.add_argument("--warehouse", metavar="PATH", help="DuckDB file to build in ({env:warehouse_path}; default data/warehouse.duckdb)")
    run.add_argument("--engine", choices=["duckdb", "spark"],
                     help="where ingest, dbt, the models, the checks and the publication run ({env:engine}; default "
                     "duckdb). spark: a local Spark session (its catalog in {env:spark_dir}, default spark/ beside "
                     "the warehouse), source files read a file per task; readers query the views serving.*")
    run.add_argument("--export-parquet", metavar="DIR",
                     help="also write each release as Parquet files into DIR ({env:export_parquet_dir}): "
                     "runs/<run id>/<table>.parquet with manifest.json; DIR/latest points at the newest")
    run.add_argument("--serving", metavar="PATH|URL",
                     help="where BI tools read the publication ({env:serving_path}): a DuckDB file (default "
                     "serving.duckdb beside the warehouse) or postgresql://user@host:5432/db?schema=crm_serving "
                     "(password from CRM_SERVING_PASSWORD, PGPASSWORD or ~/.pgpass)")
    run.add_argument("--churn-horizon-days", type=_days, metavar="N", help="churn window ({env:churn_horizon_days}; default 90)")
    run.add_argument("--clv-horizon-days", type=_days, metavar="N", help="CLV window ({env:clv_horizon_days}; default 365)")
    run.add_argument("--models", metavar="DIR", help="model registry ({env:model_registry_dir}; default models/)")
    run.add_argument("--erase", metavar="FILE",
                     help="customer ids to erase, one per line ({env:erase_file}); kept and applied to every later run")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="terminal log level (default INFO; DEBUG also shows every dbt line and the full error "
                     "text and stack frames of a failure, which otherwise go to the run log only)")
    run.add_argument("--wait", nargs="?", type=float, const=0.0, default=None, metavar="SECONDS",
                     help="if another run holds the warehouse, wait for it to end (at most SECONDS; no value: as "
                     "long as it takes) instead of exiting 1 at once")
    run.add_argument("--quiet", action="store_true", help="only warnings and the final summary (or the failed steps)")
    run.add_argument("--config", metavar="FILE", help="TOML settings file (CRM_CONFIG; default ./crm-potential.toml "
                     "if present; every setting in crm-potential.example.toml); flags and CRM_* variables win over it")
    run.set_defaults(func=cmd_run)

    bf = sub.add_parser(
        "backfill",
        help="run a range of past nights, oldest first, each as of its own date",
        description="Run the nightly job for every night from --from to --to (inclusive), oldest first, each "
        "back-dated to its date (its models never see a later day) and filed under that night's partition in the "
        "Dagster UI. Each published night is added to customer_scores_history and segment_history; a night older "
        "than the one the serving database holds never replaces its latest tables. Stops at the first night that "
        "fails. Takes the options of run.",
        formatter_class=_EnvHelpFormatter,
    )
    bf.add_argument("--from", dest="first", metavar="DATE", type=_iso_date, required=True, help="first night (YYYY-MM-DD)")
    bf.add_argument("--to", dest="last", metavar="DATE", type=_iso_date, required=True, help="last night (YYYY-MM-DD)")
    for action in run._actions:  # every option of run but its one night
        if action.dest not in ("help", "as_of"):
            bf._add_action(action)
    bf.set_defaults(func=cmd_backfill, as_of=None)

    val = sub.add_parser(
        "validate",
        help="check a source against the contract without running the models or publishing (seconds)",
        description="The night's source checks only: ingest, the contract rules, the quarantine and its share "
        "thresholds, the row-count band against the last publication, the Great Expectations suites of the checked "
        "rows. Runs on a scratch warehouse: the warehouse, the serving database, a database source's cursors and "
        "the models are not touched. Exit 0: the source would pass; 1: it would stop the night (same messages).",
        formatter_class=_EnvHelpFormatter,
    )
    val.add_argument("--source", metavar="DIR|URL", help="source folder or PostgreSQL URL ({env:source_dir})")
    val.add_argument("--as-of", metavar="DATE", type=_iso_date, help="as for run ({env:as_of_date})")
    val.add_argument("--serving", metavar="PATH|URL", help="the publication whose row counts are the band's reference")
    val.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="terminal log level (default INFO)")
    val.add_argument("--quiet", action="store_true", help="only warnings and the verdict")
    val.add_argument("--config", metavar="FILE", help="TOML settings file, as for run")
    val.set_defaults(func=cmd_validate, warehouse=None, churn_horizon_days=None, clv_horizon_days=None)

    gen = sub.add_parser(
        "generate",
        help="write synthetic CRM files with known truths (the sample and benchmark data)",
        description="Write customers, orders, interactions and campaigns files that follow the data contract.",
    )
    from ml.sample_data import add_arguments

    add_arguments(gen)
    gen.set_defaults(func=cmd_generate)

    man = sub.add_parser("manifest", help="(re)build the dbt manifest that Dagster loads")
    man.set_defaults(func=cmd_manifest)

    rb = sub.add_parser(
        "rollback",
        help="put a previous publication back as the serving database",
        description="Replace the serving database atomically with a kept earlier publication (default: the newest "
        "one older than the current); the current one is kept too, so a rollback can be undone.",
    )
    rb.add_argument("--to", metavar="RUN_ID", help="the run whose publication to restore")
    rb.add_argument("--list", action="store_true", help="list the kept publications and exit")
    rb.add_argument("--serving", metavar="PATH|URL",
                    help="serving database: a DuckDB file (default data/serving.duckdb) or the PostgreSQL URL runs publish to")
    rb.add_argument("--warehouse", metavar="PATH",
                    help="the warehouse whose runs publish there (its run lock keeps a rollback and a run apart)")
    rb.add_argument("--engine", choices=["duckdb", "spark"],
                    help="spark: roll back the serving views of the Spark catalog (CRM_ENGINE; default duckdb)")
    rb.set_defaults(func=cmd_rollback, source=None, as_of=None, churn_horizon_days=None, clv_horizon_days=None)

    docs = sub.add_parser(
        "docs", help="build the dbt docs site from the warehouse (dbt_project/target/docs/static_index.html, "
        "one file that opens without a server)")
    docs.add_argument("--warehouse", metavar="PATH", help="warehouse to document (default data/warehouse.duckdb)")
    docs.add_argument("--out", metavar="DIR", help="folder for the docs (default dbt_project/target/docs)")
    docs.set_defaults(func=cmd_docs, source=None, as_of=None, serving=None, churn_horizon_days=None, clv_horizon_days=None)
    parser.subcommands = sub.choices  # name -> parser, for errors in the subcommand's terms
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the subcommand's parser: its usage, not the top-level one
            parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return args.func(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("interrupted; nothing was published", file=sys.stderr)
        return 130
    except Exception as exc:  # outside the steps (Dagster reports those): one line here, the frames in the run log
        log_path = getattr(args, "run_log", None)
        if log_path is None or args.log_level == "DEBUG":
            raise
        from orchestration import run_logging
        from orchestration.failures import first_line

        run_logging.append(log_path, traceback.format_exc())
        print(f"crm-potential: error: {type(exc).__name__}: {first_line(str(exc))} (stack frames in {log_path})",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
