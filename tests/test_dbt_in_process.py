"""dbt in the pipeline's process (orchestration/dbt_in_process.py): the private dagster-dbt hook it replaces, one
parse re-pointed at any warehouse, a command's events and exit status as a subprocess would give them, the
warehouse released afterwards, and a run through a dbt subprocess publishing the same scores."""

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_args

pytestmark = pytest.mark.slow
_started: list[str] = []  # every subprocess this worker starts, while a test watches
sys.addaudithook(lambda event, args: _started.append(str(args[1])) if event == "subprocess.Popen" else None)


def test_the_dagster_dbt_hook_is_still_there():
    import dagster_dbt.core.resource as resource
    from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

    from orchestration.dbt_resource import InProcessInvocation

    assert resource.DbtCliInvocation is DbtCliInvocation, "dagster-dbt no longer starts commands through " \
        "dagster_dbt.core.resource.DbtCliInvocation: review orchestration/dbt_resource.py"
    ours = list(inspect.signature(InProcessInvocation.run).parameters)
    theirs = list(inspect.signature(DbtCliInvocation.run).parameters)
    assert ours == theirs, f"DbtCliInvocation.run now takes {theirs}"


def _parse(tmp_path):
    from orchestration.dbt_in_process import parsed_project
    from orchestration.dbt_project import dbt_project

    return parsed_project(Path(dbt_project.project_dir), Path(dbt_project.profiles_dir),
                          dbt_project.manifest_path.parent, tmp_path / "parse")


def test_one_parse_points_at_any_warehouse(tmp_path):
    from orchestration.dbt_in_process import _nodes, point_at_database

    manifest = _parse(tmp_path)
    assert _parse(tmp_path) is manifest  # once per process
    point_at_database(manifest, "nightly_2")
    relations = [n.relation_name for n in _nodes(manifest) if getattr(n, "relation_name", None)]
    assert relations and all(r.startswith('"nightly_2".') for r in relations)
    assert {n.database for n in _nodes(manifest) if getattr(n, "database", None)} == {"nightly_2"}
    point_at_database(manifest, "warehouse")
    assert all(n.relation_name.startswith('"warehouse".') for n in _nodes(manifest) if getattr(n, "relation_name", None))


def _command(two_publications, tmp_path, step: str, name: str, **vars_):
    """A copy of the shared run's warehouse under another file name, and that step's last dbt vars for it."""
    work, _, _ = two_publications
    warehouse = tmp_path / name
    shutil.copy2(work / "warehouse.duckdb", warehouse)
    args = json.loads((work / "dbt_target" / step / "run_results.json").read_text())["args"]["vars"]
    args = {**(json.loads(args) if isinstance(args, str) else args), "warehouse_path": str(warehouse), **vars_}
    return warehouse, args


def _run(tmp_path, dbt_args: list[str], manifest) -> tuple[int, list[dict], list[bytes]]:
    from orchestration.dbt_in_process import InProcessDbt
    from orchestration.dbt_project import dbt_executable, dbt_project

    env = {"DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "target"),
           "DBT_PROJECT_DIR": str(dbt_project.project_dir), "DBT_PROFILES_DIR": str(dbt_project.profiles_dir)}
    process = InProcessDbt([dbt_executable(), *dbt_args], env, manifest)
    lines = list(process.stdout)
    events, other = [], []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            other.append(line)
    return process.wait(), events, other


def _opens_read_write_elsewhere(path: Path) -> bool:
    code = f"import duckdb; duckdb.connect({str(path)!r}).execute('select 1').fetchall()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_a_command_reports_like_a_subprocess_and_releases_the_warehouse(two_publications, tmp_path):
    warehouse, dbt_vars = _command(two_publications, tmp_path, "dbt_analytics", "other_name.duckdb")
    code, events, other = _run(tmp_path, ["build", "--select", "path:models/analytics", "--vars", json.dumps(dbt_vars)],
                               _parse(tmp_path))
    assert code == 0 and not other, other
    reported = {e["data"]["node_info"]["unique_id"] for e in events
                if e["info"]["name"] in ("LogModelResult", "LogTestResult")}
    results = {r["unique_id"]: r["status"] for r in
               json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]}
    assert "model.crm_potential.customer_scores" in reported and reported == set(results)
    assert sum(uid.startswith("test.") for uid in results) >= 10 and set(results.values()) == {"success", "pass"}
    assert all(e["info"]["level"] != "error" for e in events)
    assert all(e["info"]["level"] != "debug" for e in events)  # what `dbt --log-format json` prints
    assert _opens_read_write_elsewhere(warehouse)  # dbt-duckdb's open database was closed
    with duckdb.connect(str(warehouse), read_only=True) as con:  # built in the file's own catalog
        assert con.execute("select count(*) from analytics.customer_scores").fetchone()[0] > 0


def test_a_failing_test_exits_1_with_its_error_and_releases_the_warehouse(two_publications, tmp_path):
    warehouse, dbt_vars = _command(two_publications, tmp_path, "dbt_models", "warehouse.duckdb", min_buyer_share=1.01)
    code, events, _ = _run(tmp_path, ["build", "--select", "assert_buyer_share_above_floor",
                                      "--vars", json.dumps(dbt_vars)], _parse(tmp_path))
    assert code == 1
    assert [e["data"]["status"] for e in events if e["info"]["name"] == "LogTestResult"] == ["fail"]
    assert any(e["info"]["level"] == "error" for e in events)
    assert _opens_read_write_elsewhere(warehouse)


def test_a_run_through_a_dbt_subprocess_publishes_the_same_scores(small_sample, tmp_path, monkeypatch):
    """``CRM_DBT_SUBPROCESS=1`` (dagster-dbt's own subprocess) and the default (dbt in this process) give the same
    published scores and the same dbt results, node by node, for the same first night."""
    from orchestration.cli import main

    inside, outside = tmp_path / "in_process", tmp_path / "subprocess"
    _started.clear()
    assert main(run_args(small_sample, inside, "--as-of", "2026-09-30")) == 0
    assert not [cmd for cmd in _started if "build" in cmd]
    monkeypatch.setenv("CRM_DBT_SUBPROCESS", "1")
    assert main(run_args(small_sample, outside, "--as-of", "2026-09-30")) == 0
    assert len([cmd for cmd in _started if "dbt" in cmd and "build" in cmd]) == 3

    def scores(work):
        with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
            return con.execute("select * exclude (run_id, customer_key) from customer_scores "
                               "order by customer_id").fetchall()

    def statuses(work, step):
        results = json.loads((work / "dbt_target" / step / "run_results.json").read_text())["results"]
        return {r["unique_id"]: r["status"] for r in results}

    assert len(scores(inside)) > 0 and scores(inside) == scores(outside)
    for step in ("dbt_contract", "dbt_models", "dbt_analytics"):
        assert statuses(inside, step) == statuses(outside, step), step
