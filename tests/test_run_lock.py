"""One run per warehouse: a second run stops at once naming the run that holds the warehouse, or waits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime

import duckdb
import pytest

from orchestration.run_lock import RunLockHeld, lock_path, run_lock
from orchestration.settings import PROJECT_ROOT, PipelineSettings
from tests.conftest import run_args


def _shown(started_at: str) -> str:
    return datetime.fromisoformat(started_at).strftime("%Y-%m-%d %H:%M:%S UTC")


def _enter(warehouse):
    with run_lock(warehouse, "run-b"):
        pytest.fail("two holders")


def test_a_second_run_is_refused_with_the_holder_named(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with run_lock(warehouse, "run-a") as holder:
        with run_lock(warehouse, "run-a-again") as nested:  # the same thread: re-entrant, still run-a's
            assert nested == holder
        refused = []
        thread = threading.Thread(target=lambda: refused.append(pytest.raises(RunLockHeld, _enter, warehouse)))
        thread.start()
        thread.join()
        assert str(refused[0].value) == f"another run (run-a, started {_shown(holder['started_at'])}) holds {warehouse}"
        assert not warehouse.exists()  # the lock is beside the warehouse; the refused run touched nothing
    with run_lock(warehouse, "run-b") as holder:  # released at the end of the first
        assert holder["run_id"] == "run-b"
    assert lock_path(warehouse).read_text() == ""
    assert oct(lock_path(warehouse).stat().st_mode & 0o777) == "0o600"


def test_a_rollback_during_a_run_is_refused(tmp_path, capsys):
    from orchestration.cli import main

    warehouse, serving = tmp_path / "warehouse.duckdb", tmp_path / "serving.duckdb"
    args = ["rollback", "--warehouse", str(warehouse), "--serving", str(serving)]
    result = []
    with run_lock(warehouse, "run-a"):
        thread = threading.Thread(target=lambda: result.append(main(args)))
        thread.start()
        thread.join()
    assert result == [1]
    err = capsys.readouterr().err
    assert f"another run (run-a, started " in err and f") holds {warehouse}; nothing was rolled back" in err
    assert main(args) == 2  # unlocked: it runs, and says there is nothing to roll back to


def test_wait_waits_for_the_holder_then_holds(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    taken, seen = threading.Event(), []

    def first():
        with run_lock(warehouse, "run-a"):
            taken.set()
            time.sleep(1.0)

    thread = threading.Thread(target=first)
    thread.start()
    taken.wait(5)
    with pytest.raises(RunLockHeld, match=r"holds .* \(waited 0 s\)$"):
        with run_lock(warehouse, "run-b", wait=0.2, poll_seconds=0.05):
            pytest.fail("held while the first run holds")
    started = time.monotonic()
    with run_lock(warehouse, "run-b", wait=0, poll_seconds=0.05, on_wait=seen.append) as holder:
        waited = time.monotonic() - started
        assert holder["run_id"] == "run-b"
    thread.join()
    assert 0.4 < waited < 5 and [h["run_id"] for h in seen] == ["run-a"]


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    code = ("import sys, time; from orchestration.run_lock import run_lock\n"
            "with run_lock(sys.argv[1], 'run-killed'):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(warehouse)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockHeld, match=r"^another run \(run-killed, started "):
            with run_lock(warehouse, "run-b"):
                pass
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait()
    with run_lock(warehouse, "run-b") as holder:
        assert holder["run_id"] == "run-b"


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_runs_at_once_one_publishes_the_other_exits_at_once(small_sample, tmp_path):
    """Run A publishes; run B, started while A holds the warehouse, exits 1 at once with the lock message and
    writes nothing; run C, started with --wait, waits for A and then runs (on a headerless customers file, so it
    fails cheaply at ingest, after A)."""
    work = tmp_path / "work"
    broken = tmp_path / "broken"
    shutil.copytree(small_sample, broken)
    lines = (broken / "customers.csv").read_text().splitlines()
    (broken / "customers.csv").write_text("\n".join(lines[1:]) + "\n")
    warehouse = work / "warehouse.duckdb"
    a = _cli(*run_args(small_sample, work))
    try:
        deadline = time.monotonic() + 120
        while '"run_id"' not in (lock_path(warehouse).read_text() if lock_path(warehouse).exists() else ""):
            assert a.poll() is None and time.monotonic() < deadline, a.communicate()
            time.sleep(0.1)
        holder = lock_path(warehouse).read_text()
        c = _cli(*run_args(broken, work, "--wait"))
        b_started = time.monotonic()
        b = _cli(*run_args(small_sample, work))
        b_out, b_err = b.communicate(timeout=120)
        b_seconds = time.monotonic() - b_started
        a_running = a.poll() is None
        a_out, a_err = a.communicate(timeout=600)
        c_out, c_err = c.communicate(timeout=300)
    finally:
        for proc in (a, locals().get("b"), locals().get("c")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    a_run = json.loads(holder)
    assert b.returncode == 1 and a_running, (b_seconds, b_err)
    expected = f"another run ({a_run['run_id']}, started {_shown(a_run['started_at'])}) holds {warehouse.resolve()}"
    assert b_err.startswith(f"crm-potential: {expected}; this run stopped before touching it"), b_err
    assert "Traceback" not in b_err and b_out == ""
    assert c.returncode == 1, c_err[-3000:]
    assert c_err.startswith(f"crm-potential: {expected}; waiting for it to end"), c_err[:500]
    assert "  - raw__customers: customers (" in c_err  # C ran once A had finished
    assert a.returncode == 0, a_err[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute("select run_id, status, published, started_at, finished_at from ops.pipeline_runs "
                           "order by started_at").fetchall()
    assert [(r[0], r[1], r[2]) for r in runs][0] == (a_run["run_id"], "success", True)
    assert len(runs) == 2 and runs[1][1:3] == ("failed", False) and runs[1][3] >= runs[0][4]
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        assert con.execute("select distinct run_id from customer_scores").fetchall() == [(a_run["run_id"],)]


def test_a_dagster_run_started_elsewhere_waits_for_the_lock(tmp_path):
    """A night launched by the daemon or the UI (not through the CLI, which takes the lock itself) takes the
    warehouse's run lock through its settings resource: it waits while a CLI run or a rollback holds it."""
    import dagster as dg

    warehouse = tmp_path / "warehouse.duckdb"
    code = ("import sys, time; from orchestration.run_lock import run_lock\n"
            "with run_lock(sys.argv[1], 'cli-run'):\n    print('held', flush=True); time.sleep(2)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(warehouse)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    seen = {}

    @dg.asset
    def needs_the_warehouse(settings: PipelineSettings) -> None:
        seen["holder"] = json.loads(lock_path(warehouse).read_text())

    started = time.monotonic()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([needs_the_warehouse], instance=instance,
                            resources={"settings": PipelineSettings(warehouse_path=str(warehouse))})
    waited = time.monotonic() - started
    holder.wait(10)
    assert result.success and waited > 1.0
    assert seen["holder"]["run_id"] == result.run_id  # the run held the lock while its step ran
    said = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("another run (cli-run, started ") and m.endswith("; waiting for it to end") for m in said)
    assert lock_path(warehouse).read_text() == ""  # released when the run ended
