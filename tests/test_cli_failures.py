"""A failed run reads as one screen: one sentence per failed step, no stack frames on the terminal (they are
in the run log), and no value from the source in anything printed, stored or logged."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import duckdb
import pytest
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from ml.btyd import BtydFitError
from orchestration.cli import main
from orchestration.failures import DUCKDB_MEMORY, dbt_sentence, run_outcome, sentence_for, step_sentence
from tests.conftest import run_args


def _error_info(fn):
    try:
        fn()
    except Exception:
        return serializable_error_info_from_exc_info(sys.exc_info())
    raise AssertionError("no exception")


@pytest.mark.slow
def test_a_headerless_file_fails_in_one_line_without_its_values(small_sample, tmp_path, capsys):
    source = tmp_path / "source"
    shutil.copytree(small_sample, source)
    lines = (source / "customers.csv").read_text().splitlines()
    (source / "customers.csv").write_text("\n".join(lines[1:]) + "\n")  # the header row is gone
    values = [v for v in lines[1].split(",") if re.search(r"\d|@| ", v)]  # id, dates, e-mail, phone, name, zip
    assert len(values) >= 6 and any("@" in v for v in values)
    work = tmp_path / "work"
    capsys.readouterr()
    started = time.perf_counter()
    assert main(run_args(source, work)) == 1
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    terminal = out + err
    for frame in ("Traceback", 'File "', "Stack Trace", "Not executing", "dagster._core"):
        assert frame not in terminal, (frame, terminal[-3000:])
    failed = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(failed) == 1 and failed[0].startswith("  - raw__customers: customers ("), err
    assert "customers.csv" in failed[0] and "header" in failed[0]
    log = re.search(r"Full error text and stack frames: (\S+\.log)", err)
    assert log, err
    log_text = open(log.group(1), encoding="utf-8").read()
    assert "Stack Trace" in log_text and 'File "' in log_text  # the frames are kept, in the log
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        stored = con.execute("select status, published, message from ops.pipeline_runs").fetchall()
    assert len(stored) == 1 and stored[0][:2] == ("failed", False)
    assert stored[0][2] == failed[0][len("  - "):]
    for text in (terminal, stored[0][2], log_text):
        assert not [v for v in values if v in text], [v for v in values if v in text]
    assert oct(work.joinpath("logs").stat().st_mode & 0o777) == "0o700"
    assert seconds < 120


def test_known_exceptions_read_as_sentences(tmp_path):
    # DuckDB refusing a file another process writes to: the failure two concurrent runs used to print raw
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        locked = step_sentence(_error_info(lambda: duckdb.connect(str(db))))
    finally:
        holder.kill()
        holder.wait()
    assert locked == (f"the DuckDB file {db} is in use by another process (process {holder.pid}): close the program "
                      "holding it (a notebook or BI tool with a write connection, another run) and run again")
    parser = step_sentence(_error_info(lambda: duckdb.sql(f"attach '{tmp_path}/it's.duckdb' as x")))
    assert parser.startswith("DuckDB could not parse a statement this step built"), parser
    missing = step_sentence(_error_info(lambda: duckdb.connect(str(tmp_path / "no" / "such" / "dir.duckdb"))))
    assert missing.startswith(f"DuckDB could not read or write {tmp_path}/no/such/dir.duckdb ("), missing

    def btyd():
        try:
            raise ValueError("singular matrix")
        except ValueError as exc:
            raise BtydFitError("BG/NBD fit did not converge (abnormal termination); data: 3 customers") from exc

    assert step_sentence(_error_info(btyd)) == (
        "the value model (BTYD) could not be fitted to this order history (BG/NBD fit did not converge (abnormal "
        "termination); data: 3 customers): look for extreme amounts or very few repeat buyers in the orders file")
    unknown = step_sentence(_error_info(lambda: {}["anna@example.com"]))
    assert unknown == "KeyError: '<e-mail>'"
    assert step_sentence(None, "customers (x.csv): 3 rows of ben@example.com") == (
        "customers (x.csv): 3 rows of <e-mail>")


DBT_FAILURE = """dagster_dbt.errors.DagsterDbtCliRuntimeError: The dbt CLI process with command

`/work/main/.venv/bin/dbt build --vars {"as_of_date": "2026-09-30"}`

failed with exit code `1`. Check the stdout in the Dagster compute logs for the full information about the error, \
or view the dbt debug log: /work/main/dbt_project/target/dbt_models/dbt.log.

Errors parsed from dbt logs:

39 of 240 FAIL 1 reject_share_within_threshold_quarantine_orders_orders ........ [\x1b[31mFAIL 1\x1b[0m in 0.03s]

\x1b[31mFailure in test reject_share_within_threshold_quarantine_orders_orders (models/quarantine/_quarantine.yml)\x1b[0m

  Got 1 result, configured to fail if != 0
"""


def test_dbt_failures_name_the_model_or_the_tests():
    log = "; dbt log: /work/main/dbt_project/target/dbt_models/dbt.log"
    assert dbt_sentence(DBT_FAILURE) == "dbt stopped after 1 failed test(s), each named on its check line" + log
    model = DBT_FAILURE.replace("Failure in test reject_share_within_threshold_quarantine_orders_orders",
                                "Runtime Error in model stg_orders").replace(
        "Got 1 result, configured to fail if != 0",
        "Conversion Error: Could not convert string 'ben@example.com' to DOUBLE")
    assert dbt_sentence(model) == ("dbt could not build model stg_orders: Could not convert string '<e-mail>' to "
                                   "DOUBLE" + log)
    # DuckDB at its own memory limit (seen at 10M customers with the default 3GB): say which knob helps
    out_of_memory = model.replace("Conversion Error: Could not convert string 'ben@example.com' to DOUBLE",
                                  "Out of Memory Error: failed to allocate data of size 16.0 KiB (2.7 GiB/2.7 GiB used)")
    assert dbt_sentence(out_of_memory) == ("dbt could not build model stg_orders: failed to "
                                           "allocate data of size 16.0 KiB (2.7 GiB/2.7 GiB used); " + DUCKDB_MEMORY + log)
    assert "raise CRM_DUCKDB_MEMORY_LIMIT" in sentence_for("OutOfMemoryException", "Out of Memory Error: failed")
    assert json.dumps(dbt_sentence("exit code `2`")) == json.dumps("dbt failed (exit code 2)")
    # dagster-dbt raises a Failure whose description is dbt's whole output: the step gets the dbt sentence
    failure = DBT_FAILURE.split(": ", 1)[1]

    def dbt_step():
        raise DagsterDbtCliRuntimeError(description=failure)

    assert step_sentence(_error_info(dbt_step), failure) == dbt_sentence(DBT_FAILURE)


def test_a_failure_after_the_publication_is_a_warning_on_a_published_run(tmp_path):
    """run_outcome on a real Dagster run: the publication step succeeded, the report after it failed."""
    import dagster as dg

    @dg.asset(key=["serving", "publication"])
    def publication():
        return 1

    @dg.asset(key=["serving", "run_report"], deps=[publication])
    def run_report():
        (tmp_path / "latest.html").mkdir()
        (tmp_path / "latest.html").write_text("report")

    result = dg.materialize([publication, run_report], raise_on_error=False,
                            instance=dg.DagsterInstance.ephemeral())
    outcome = run_outcome(result.all_events)
    assert not result.success and outcome.published
    assert outcome.lines == [f"serving__run_report: a folder is where a file should be written ([Errno 21] Is a "
                             f"directory: '{tmp_path}/latest.html'): move it away and run again"]
