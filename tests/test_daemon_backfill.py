"""A backfill launched as the UI launches one (the webserver's GraphQL API), run by the daemon: each night is one
queued run, they run one at a time in the order the backfill lists them (the UI lists a range oldest first), and
each publishes its night; an earlier night run after a later one only adds to the history (issue 16, item 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.test_production import _alive, _descendants, _free_port, _graphql, repo_root  # noqa: F401 (fixture)

NIGHTS = ["2026-09-29", "2026-09-30"]

LAUNCH = """mutation {
  launchPartitionBackfill(backfillParams: {
    selector: {partitionSetName: "nightly_partition_set",
               repositorySelector: {repositoryLocationName: "crm_potential", repositoryName: "__repository__"}},
    partitionNames: %s, fromFailure: false}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""

RUNS = """{ runsOrError(filter: {tags: [{key: "dagster/backfill", value: "%s"}]}) {
  ... on Runs { results { runId status tags { key value } startTime endTime } } } }"""


def _up(port: int, launcher: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        assert launcher.poll() is None, log.read_text()
        try:
            status = _graphql(port, "{ instance { daemonHealth { allDaemonStatuses { required healthy } } } "
                                    "repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
        except OSError:
            time.sleep(0.5)
            continue
        daemons = status["instance"]["daemonHealth"]["allDaemonStatuses"]
        if status["repositoriesOrError"].get("nodes") and daemons and all(d["healthy"] for d in daemons if d["required"]):
            return
        time.sleep(0.5)
    pytest.fail(f"the webserver and the daemon were not up after {seconds} s:\n{log.read_text()}")


@pytest.mark.slow
def test_a_backfill_from_the_ui_runs_each_night_on_the_daemon_one_at_a_time(repo_root, small_sample, tmp_path):
    work = tmp_path / "work"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")} | {
        "DAGSTER_HOME": str(repo_root), "CRM_SOURCE_DIR": str(small_sample),
        "CRM_WAREHOUSE": str(work / "warehouse.duckdb"), "CRM_SERVING": str(work / "serving.duckdb"),
        "CRM_MODEL_REGISTRY": str(work / "models"), "CRM_MODEL_THREADS": os.environ.get("CRM_MODEL_THREADS", "1")}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "orchestration.serve", "--port", str(port)],
                                    cwd=repo_root, env=env, stdout=out, stderr=subprocess.STDOUT)
    processes: set[int] = set()
    try:
        _up(port, launcher, log)
        processes = _descendants(launcher.pid)
        # listed newest first (the UI lists a range oldest first): the daemon runs them in the listed order, and the
        # earlier night, run last, must still not replace the later one
        launched = _graphql(port, LAUNCH % json.dumps(list(reversed(NIGHTS))))["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = launched["backfillId"]
        deadline, runs = time.monotonic() + 420, []
        while time.monotonic() < deadline:
            runs = _graphql(port, RUNS % backfill)["runsOrError"]["results"]
            if len(runs) == len(NIGHTS) and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                break
            time.sleep(2)
        else:
            pytest.fail(f"the backfill's runs did not finish: {runs}\n{log.read_text()[-3000:]}")
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=45)
        except subprocess.TimeoutExpired:
            launcher.kill()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)], "processes left running"

    night = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]}["dagster/partition"] for r in runs}
    assert [r["status"] for r in runs] == ["SUCCESS"] * len(NIGHTS), log.read_text()[-3000:]
    in_order = sorted(runs, key=lambda r: r["startTime"])
    assert [night[r["runId"]] for r in in_order] == list(reversed(NIGHTS))  # in the order the backfill listed them
    assert in_order[0]["endTime"] <= in_order[1]["startTime"]  # one at a time (run_queue in dagster.yaml)
    run_of = {n: run_id for run_id, n in night.items()}
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        published = dict(con.execute("select run_id, as_of_date::varchar from pipeline_runs where published").fetchall())
        history = con.execute("select as_of_date::varchar, count(distinct run_id) from customer_scores_history "
                              "group by 1 order by 1").fetchall()
        latest = con.execute("select any_value(as_of_date)::varchar, any_value(run_id) from customer_scores").fetchall()
    assert published == night  # each night published as of its own date
    assert history == [(n, 1) for n in NIGHTS]
    assert latest == [(NIGHTS[-1], run_of[NIGHTS[-1]])]  # the later night stays the latest
