"""The production set-up (issue 16, item 4): one Dagster home for the CLI, ``dagster dev``, the webserver and the
daemon; PostgreSQL run storage as docs/production.md documents it; ``make serve``; the deployment files.

Each test works on a copy of the repository's ``dagster.yaml`` in a temporary folder laid out like the repository
root, never on the repository's own ``.dagster/``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestration.run_history import LIGHT_CONFIG, dagster_home, instance_config, write_without_fsync

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root(tmp_path) -> Path:
    """A folder standing for the repository root: the repository's dagster.yaml and nothing else."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "dagster.yaml", root / "dagster.yaml")
    return root


def _record_a_run() -> str:
    """A one-op job executed in this process on ``DagsterInstance.get()``, as ``crm-potential run`` executes the
    night; returns its run id."""
    import dagster as dg

    @dg.op
    def hello() -> int:
        return 1

    @dg.job
    def tiny():
        hello()

    with dg.DagsterInstance.get() as instance:
        result = tiny.execute_in_process(instance=instance)
    assert result.success
    return result.run_id


def _synchronous(db: Path) -> int:
    """SQLite's ``synchronous`` setting on a new SQLAlchemy connection to ``db`` (0 off, 2 full)."""
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as con:
            return con.exec_driver_sql("pragma synchronous").scalar()
    finally:
        engine.dispose()


def test_the_cli_and_dagster_dev_record_to_and_read_one_home(repo_root, tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._cli.utils import get_possibly_temporary_instance_for_cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the CLI runs from any folder
    monkeypatch.delenv("DAGSTER_HOME")
    home = dagster_home(repo_root / ".dagster")
    assert home == repo_root / ".dagster" and os.environ["DAGSTER_HOME"] == str(home)
    copy = yaml.safe_load((home / "dagster.yaml").read_text())
    assert copy["storage"] == {"sqlite": {"base_dir": str(repo_root / ".dagster")}}
    assert copy["compute_logs"]["config"]["base_dir"] == str(repo_root / ".dagster" / "storage")
    assert copy["telemetry"] == {"enabled": False} and copy["run_queue"] == {"max_concurrent_runs": 1}

    write_without_fsync(home)
    run_id = _record_a_run()
    assert _synchronous(home / "history" / "runs.db") == 0  # SQLite under the home: no fsync per commit
    assert _synchronous(tmp_path / "other.db") == 2  # anything else keeps SQLite's default
    assert not any(elsewhere.iterdir())  # nothing recorded in the working directory

    # `dagster dev -w workspace.yaml` in the root without DAGSTER_HOME: the instance dagster dev builds
    monkeypatch.chdir(repo_root)
    with get_possibly_temporary_instance_for_cli("dagster dev") as instance:
        assert instance.has_run(run_id)
    # make ui / make serve / the services: DAGSTER_HOME is the root
    monkeypatch.setenv("DAGSTER_HOME", str(repo_root))
    with DagsterInstance.get() as instance:
        assert instance.has_run(run_id)
    assert sorted(p.name for p in repo_root.iterdir()) == [".dagster", "dagster.yaml"]

    # the CLI given DAGSTER_HOME=root from elsewhere records to the same place, and follows edits of the root file
    monkeypatch.chdir(elsewhere)
    (repo_root / "dagster.yaml").write_text((repo_root / "dagster.yaml").read_text()
                                            .replace("max_concurrent_runs: 1", "max_concurrent_runs: 2"))
    assert dagster_home(repo_root / ".dagster") == repo_root / ".dagster"
    assert os.environ["DAGSTER_HOME"] == str(repo_root / ".dagster")
    assert yaml.safe_load((home / "dagster.yaml").read_text())["run_queue"] == {"max_concurrent_runs": 2}

    # a home of one's own (tests, benchmarks) is used as it is
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "own"))
    assert dagster_home(repo_root / ".dagster") == tmp_path / "own"
    assert (tmp_path / "own" / "dagster.yaml").read_text() == LIGHT_CONFIG


def test_the_repository_instance_keeps_its_history_in_dot_dagster():
    copy = yaml.safe_load(instance_config(REPO / "dagster.yaml"))
    assert copy["storage"] == {"sqlite": {"base_dir": str(REPO / ".dagster")}}  # where the CLI always recorded
    assert copy["local_artifact_storage"]["config"]["base_dir"] == str(REPO / ".dagster")
    assert copy["telemetry"] == {"enabled": False}


def _documented_postgres_storage() -> dict:
    """The ``storage:`` block docs/production.md tells users to paste into dagster.yaml."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "production.md").read_text(), re.S)
    storage = [yaml.safe_load(b) for b in blocks if "postgres:" in b]
    assert len(storage) == 1, "docs/production.md should show one postgres storage block"
    return storage[0]["storage"]


@pytest.mark.slow
def test_postgres_run_storage_as_documented_records_a_real_run(postgres, sample_copy, tmp_path, monkeypatch,
                                                               capsys):
    """The documented block, credentials from the environment, and a real ``crm-potential run`` recorded through
    it: a night on a source whose orders lack their amount column, which fails at ingest (seconds, not a whole
    night; ``validate`` records to a throw-away instance)."""
    import duckdb
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.instance.ref import InstanceRef

    from orchestration.cli import main
    from tests.conftest import run_args
    from tests.postgres_server import DATABASE, PASSWORD, USER

    root = tmp_path / "repo"
    root.mkdir()
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["storage"] = _documented_postgres_storage()
    (root / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_config(root / "dagster.yaml"))
    assert PASSWORD not in (home / "dagster.yaml").read_text()
    for name, value in {"HOST": "127.0.0.1", "PORT": str(postgres.port), "USER": USER, "PASSWORD": PASSWORD,
                        "DB": DATABASE}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    orders = sample_copy / "orders.csv"
    duckdb.execute(f"copy (select * exclude (amount) from read_csv('{orders}', all_varchar=true)) "
                   f"to '{tmp_path / 'orders.csv'}' (header)")
    shutil.move(tmp_path / "orders.csv", orders)

    assert main(run_args(sample_copy, tmp_path / "work")) == 1
    assert "required column(s) amount missing" in capsys.readouterr().err

    with postgres.connect() as con:
        runs = con.execute("select run_id, pipeline_name, status from runs").fetchall()
        assert [(job, status) for _, job, status in runs] == [("nightly", "FAILURE")]
        run_id = runs[0][0]
        events = {row[0] for row in con.execute(
            "select distinct dagster_event_type from event_logs where run_id = %s", (run_id,))}
    assert {"PIPELINE_START", "STEP_FAILURE", "PIPELINE_FAILURE"} <= events, events  # RUN_* under their stored names
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as other:  # a second process's view
        assert type(other.run_storage).__name__ == "PostgresRunStorage"
        run = other.get_run_by_id(run_id)
        assert run.job_name == "nightly" and run.status == DagsterRunStatus.FAILURE
    assert not (home / "history").exists()  # nothing went to SQLite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their code servers, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _graphql(port: int, query: str) -> dict:
    """The webserver's answer to ``query``, as a UI or a script asks it."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


STATUS = """{
  repositoriesOrError { ... on RepositoryConnection { nodes {
    location { name } jobs { name } schedules { name scheduleState { status } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
  runsOrError { ... on Runs { results { runId jobName } } }
}"""


@pytest.mark.slow
def test_serve_starts_the_webserver_and_the_daemon_on_the_repository_config_and_ctrl_c_stops_both(
        repo_root, tmp_path, monkeypatch):
    """``make serve``'s launcher on a new home (a copy of the repository's dagster.yaml, nothing recorded yet) and the
    repository's workspace.yaml: the UI lists the jobs, the schedule stopped, a run the CLI records meanwhile, the
    daemon healthy; SIGINT stops everything."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CRM_SCHEDULE_ENABLED"} | {"DAGSTER_HOME": str(repo_root)}
    log = tmp_path / "serve.log"
    started = time.monotonic()
    with log.open("w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "orchestration.serve", "--port", str(port)],
                                    cwd=repo_root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        status: dict = {}
        while time.monotonic() - started < 60:
            assert launcher.poll() is None, log.read_text()
            try:
                status = _graphql(port, STATUS)
            except OSError:
                time.sleep(0.5)
                continue
            daemons = status["instance"]["daemonHealth"]["allDaemonStatuses"]
            if daemons and all(d["healthy"] for d in daemons if d["required"]):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the webserver and the daemon were not up after 60 s:\n{log.read_text()}\n{status}")
        up = time.monotonic() - started

        monkeypatch.delenv("DAGSTER_HOME")
        monkeypatch.chdir(tmp_path)
        dagster_home(repo_root / ".dagster")
        run_id = _record_a_run()  # as the CLI records, while the UI is open
        status = _graphql(port, STATUS)
        (repository,) = status["repositoriesOrError"]["nodes"]  # none when the code location failed to load
        assert repository["location"]["name"] == "crm_potential"
        assert {"nightly", "validate"} <= {job["name"] for job in repository["jobs"]}
        assert [(s["name"], s["scheduleState"]["status"]) for s in repository["schedules"]] == [
            ("nightly_schedule", "STOPPED")]
        assert {"SCHEDULER", "QUEUED_RUN_COORDINATOR", "SENSOR", "BACKFILL"} <= {
            d["daemonType"] for d in status["instance"]["daemonHealth"]["allDaemonStatuses"]}
        assert (run_id, "tiny") in {(r["runId"], r["jobName"]) for r in status["runsOrError"]["results"]}

        processes = _descendants(launcher.pid)
        names = " ".join(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                         for pid in processes if _alive(pid))
        assert "dagster-webserver" in names and "dagster-daemon run" in names and " dev " not in names
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends the launcher
        assert launcher.wait(timeout=45) == 0, log.read_text()
    finally:
        if launcher.poll() is None:
            launcher.kill()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)], "processes left running after Ctrl-C"
    assert "stopping the webserver and the daemon" in log.read_text()
    print(f"webserver and daemon up in {up:.1f} s, stopped in {time.monotonic() - started - up:.1f} s")


def _unit(name: str) -> dict[str, list[str]]:
    """``key -> values`` of a systemd unit file in deploy/systemd (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (REPO / "deploy" / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_the_systemd_units_run_the_webserver_and_the_daemon_on_the_checkout(tmp_path):
    web, daemon = _unit("crm-potential-webserver.service"), _unit("crm-potential-daemon.service")
    for unit in (web, daemon):
        assert unit["User"] == ["crm"] and unit["EnvironmentFile"] == ["/etc/crm-potential.env"]
        assert unit["Restart"] == ["on-failure"]
        checkout = unit["WorkingDirectory"][0]
        assert f"DAGSTER_HOME={checkout}" in unit["Environment"]  # the home is the checkout: its dagster.yaml
        assert "CRM_SCHEDULE_ENABLED=1" in unit["Environment"]
        assert unit["ExecStartPre"] == [f"{checkout}/.venv/bin/python -m orchestration.serve --prepare"]
    assert web["ExecStart"][0].startswith(f"{checkout}/.venv/bin/dagster-webserver -w {checkout}/workspace.yaml")
    assert daemon["ExecStart"] == [f"{checkout}/.venv/bin/dagster-daemon run -w {checkout}/workspace.yaml"]
    assert "crm-potential-daemon.service" in web["After"][0].split()  # the daemon's --prepare creates the storage

    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the units were checked by reading only")
    for name in ("crm-potential-webserver.service", "crm-potential-daemon.service"):  # paths pointed at this checkout
        text = (REPO / "deploy" / "systemd" / name).read_text().replace("/srv/crm-potential", str(REPO))
        (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_container_recipe_installs_what_make_run_installs_and_serves(tmp_path):
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:3.11-slim\n" in dockerfile
    # the Makefile's uv path, the target `make run` depends on for its dependencies
    stamp = re.search(r"^RUN_STAMP := \$\(VENV\)/(\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert f"RUN make .venv/{stamp} " in dockerfile
    assert 'CMD ["python", "-m", "orchestration.serve", "--host", "0.0.0.0", "--port", "3000"]' in dockerfile
    assert 'VOLUME ["/app/data", "/app/models", "/app/.dagster"]' in dockerfile and "DAGSTER_HOME=/app " in dockerfile
    ignored = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".venv-tools", "data", ".dagster", "crm-potential.toml", ".env"} <= set(ignored)

    # make serve: the launcher, HOST and PORT overridable
    done = subprocess.run(["make", "-n", "-C", str(REPO), "serve", "HOST=0.0.0.0", "PORT=8080"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    launcher = ".venv/bin/python -m orchestration.serve --host 0.0.0.0 --port 8080 --workspace workspace.yaml"
    assert launcher in done.stdout, done.stdout
