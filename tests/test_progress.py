"""``crm-potential run`` is never silent: a first line at once, a line per asset step, and a heartbeat that names
what is still running whenever nothing else was printed for a few seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from orchestration import progress
from orchestration.settings import PROJECT_ROOT
from tests.conftest import run_args


def test_the_heartbeat_names_what_runs_only_when_nothing_else_is_printed(capsys):
    with progress.Progress(every=0.4) as shown:
        shown.say("first line")
        progress.doing("[5/14] scores__customer_churn")
        for _ in range(6):  # a step that prints every 0.2 s: never a heartbeat
            time.sleep(0.2)
            progress.touch()
        time.sleep(1.1)  # then silence: heartbeats
        progress.doing(None)  # nothing to name: no heartbeat however long it is quiet
        time.sleep(0.6)
    assert not progress.active()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "first line"
    beats = lines[1:]
    assert 2 <= len(beats) <= 3, lines
    assert all(re.fullmatch(r"  \.\.\. \[5/14\] scores__customer_churn \(\d+ s so far\)", b) for b in beats), beats
    assert int(re.search(r"\((\d+) s", beats[-1]).group(1)) >= 2  # counted from the step's start


def test_quiet_runs_print_no_progress(capsys):
    with progress.Progress(enabled=False, every=0.1) as shown:
        shown.say("not shown")
        progress.doing("something")
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


def test_a_run_speaks_at_once_numbers_its_steps_and_is_never_silent(sample_copy, tmp_path):
    """A real run, on a source that fails early (a customers file without its header row) to stay short: its
    start-up (imports, dbt manifest, Dagster's run plan) is where a run used to sit silent."""
    lines = (sample_copy / "customers.csv").read_text().splitlines()
    (sample_copy / "customers.csv").write_text("\n".join(lines[1:]) + "\n")
    args = [a for a in run_args(sample_copy, tmp_path / "work") if a != "--quiet"]
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", *args], cwd=PROJECT_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stamped = [(time.monotonic() - started, line.rstrip("\n")) for line in proc.stdout]
    assert proc.wait() == 1
    ended = time.monotonic() - started
    text = [line for _, line in stamped]
    assert text[0].startswith("crm-potential: starting the nightly job"), text[:3]
    assert stamped[0][0] < 5  # before Dagster, dbt or the models load (about 0.2 s on an idle machine)
    steps = [line for line in text if re.match(r"\[\d+/\d+\] ", line)]
    assert steps[0].startswith("[1/14] raw__") and "(ingest)" in steps[0], steps
    assert any(re.match(r"\[\d/14\] raw__customers: raw\.customers \(ingest\)$", s) for s in steps), steps
    assert any(line.startswith("  - raw__customers: customers (") for line in text), text[-10:]
    times = [0.0] + [t for t, _ in stamped] + [ended]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 6.5, [(round(t, 1), line) for t, line in stamped]  # heartbeat after 4 s of silence
