"""The serving file read by the client libraries BI tools ship, not by our own DuckDB.

Our environment has DuckDB 2.x; Metabase's and DBeaver's drivers, ODBC and most Superset environments still ship a
DuckDB 1.x, and Superset reads through SQLAlchemy + duckdb-engine. Each client set is pinned (with hashes) in
tests/bi_clients/requirements-<name>.txt, compiled from the .in beside it that says why those versions, and
installed once into its own virtualenv, ``.venv-bi/<name>-<hash>``: kept across test sessions, rebuilt when its
requirements (or our Python) change. tests/bi_clients/probe.py runs inside it and reports, item by item, what
that client could read of the session's sample publication; the tests compare it with what our DuckDB reads.

Building a virtualenv needs the package index (as ``make test`` does for .venv): without it the tests fail and
say so, they do not skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from orchestration.publication import RELEASE_TABLES, attach_for_writing
from tests.bi_clients.probe import plain_client, split_queries

pytestmark = pytest.mark.slow  # the sample publication is a real pipeline run (shared with test_analyst_outputs)
ROOT = Path(__file__).resolve().parents[1]
CLIENTS_DIR = ROOT / "tests" / "bi_clients"
VENV_ROOT = ROOT / ".venv-bi"
CLIENTS = ["duckdb11", "duckdb1x"]  # the clients the README promises; sqlalchemy21 documents a known failure
QUERIES = split_queries((ROOT / "examples" / "queries.sql").read_text())


def _uv() -> str:
    for candidate in (ROOT / ".venv-tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("the BI client tests build their virtualenvs with uv, which is missing: run `make venv` "
                "(it installs uv into .venv-tools/)", pytrace=False)


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    if done.returncode:
        tail = " | ".join([line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()][-3:])
        pytest.fail(f"could not {what} ({tail}); it installs pinned packages from the package index (PyPI), so it "
                    "needs network access to it", pytrace=False)


def client_venv(name: str) -> Path:
    """The virtualenv of client set ``name``, built on first use by whichever test worker asks first.

    It is built in a temporary folder and renamed into place when complete, so an interrupted build never
    leaves a folder that looks usable; older builds of the same set are removed."""
    from filelock import FileLock

    requirements = CLIENTS_DIR / f"requirements-{name}.txt"
    key = requirements.read_bytes() + f"{sys.version}|{sys.base_prefix}".encode()
    venv = VENV_ROOT / f"{name}-{hashlib.sha256(key).hexdigest()[:12]}"
    VENV_ROOT.mkdir(exist_ok=True)
    with FileLock(str(VENV_ROOT / f".{name}.lock")):
        if venv.is_dir():
            return venv
        for old in VENV_ROOT.glob(f"{name}-*"):
            shutil.rmtree(old)
        building = VENV_ROOT / f".building-{venv.name}"
        shutil.rmtree(building, ignore_errors=True)
        uv, start = _uv(), time.monotonic()
        try:
            _run([uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(building)],
                 f"create the {name} BI client virtualenv")
            _run([uv, "pip", "install", "--quiet", "--require-hashes", "--python", str(building / "bin" / "python"),
                  "-r", str(requirements)], f"install the {name} BI clients ({requirements.relative_to(ROOT)})")
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        building.rename(venv)
        print(f"built {venv.relative_to(ROOT)} in {time.monotonic() - start:.1f} s")
        return venv


def run_in(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(client_venv(name) / "bin" / "python"), *args], capture_output=True, text=True,
                          timeout=120)


def probe_with(name: str, serving: Path) -> dict:
    done = run_in(name, str(CLIENTS_DIR / "probe.py"), str(serving), str(ROOT / "examples" / "queries.sql"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def ours(serving_copy) -> dict:
    """What our own DuckDB reads: the reference every client must match."""
    report = plain_client(str(serving_copy), QUERIES)
    assert set(report["tables"]) == set(RELEASE_TABLES)
    assert report["tables"]["customer_scores"]["rows"] > 1000 and len(report["queries"]) == len(QUERIES) >= 6
    assert all(result.get("rows") for result in report["queries"].values()), report["queries"]
    return report


@pytest.fixture(scope="module", params=CLIENTS)
def client(request, serving_copy) -> dict:
    return {"name": request.param, **probe_with(request.param, serving_copy)}


def test_client_versions_are_the_pinned_ones(client):
    pins = (CLIENTS_DIR / f"requirements-{client['name']}.txt").read_text()
    for package in ("duckdb", "duckdb-engine", "sqlalchemy"):
        assert f"\n{package}=={client['versions'][package]} " in pins, (client["name"], package)
    assert client["versions"]["duckdb"].startswith("1.")  # an older client than ours (2.x) reads the file


def test_plain_duckdb_client_opens_the_file_read_only_and_reads_every_table_and_query(client, ours):
    plain = client["duckdb"]
    assert "open" not in plain, f"DuckDB {client['versions']['duckdb']} cannot open the serving file: {plain['open']}"
    assert plain["tables"] == ours["tables"]  # same tables, row counts, table and column comments
    assert plain["queries"] == ours["queries"]


def test_sqlalchemy_reflects_every_table_and_runs_every_query(client, ours):
    via = client["sqlalchemy"]
    versions = f"SQLAlchemy {client['versions']['sqlalchemy']} + duckdb-engine {client['versions']['duckdb-engine']}"
    assert "open" not in via, f"{versions} cannot list the tables: {via['open']}"
    assert sorted(via["table_names"]) == sorted(ours["tables"])
    for table, expected in ours["tables"].items():
        columns, rows = via["tables"][table]["columns"], via["tables"][table]["rows"]
        assert "error" not in columns, f"{versions} cannot reflect {table}'s columns: {columns['error']}"
        assert list(columns) == list(expected["columns"]), table  # names, in order
        assert {c: v["comment"] for c, v in columns.items()} == expected["columns"], table  # Superset shows them
        assert not [c for c, v in columns.items() if v["type"] == "NullType"], f"{table}: types {versions} lacks"
        assert rows == expected["rows"], table
    assert via["queries"] == ours["queries"]


@pytest.mark.parametrize("name", CLIENTS)
def test_a_serving_file_in_duckdbs_latest_format_is_not_readable_by_1x_clients(name, serving_copy, tmp_path):
    """CRM_SERVING_STORAGE_VERSION matters: the same tables written in DuckDB 2's own format do not open."""
    latest = tmp_path / "latest.duckdb"
    with duckdb.connect() as con:
        con.execute("attach ? as published (read_only)", [str(serving_copy)])
        attach_for_writing(con, latest, "rewritten", "latest")
        con.execute("copy from database published to rewritten")
    opened = run_in(name, "-c", "import duckdb, sys\nfor p in sys.argv[1:]: duckdb.connect(p, read_only=True).close()"
                                "; print('opened', p)", str(serving_copy), str(latest))
    assert f"opened {serving_copy}" in opened.stdout, opened.stderr
    assert opened.returncode != 0 and f"opened {latest}" not in opened.stdout
    assert re.search(r"Trying to read a database file with version number \d+, but we can only read version",
                     opened.stderr), opened.stderr


def test_duckdb_engine_017_cannot_reflect_columns_on_sqlalchemy_21(serving_copy, ours):
    """Why the client sets stop at SQLAlchemy 2.0: on 2.1 duckdb-engine 0.17.0 lists the tables but reflects no
    table's columns (Superset could not add a dataset). After a new duckdb-engine release, pin it in
    requirements-sqlalchemy21.in: if this test then fails, the bug is fixed, and requirements-duckdb1x.in can move
    to SQLAlchemy 2.1 (drop this test and the README's warning)."""
    via = probe_with("sqlalchemy21", serving_copy)["sqlalchemy"]
    assert sorted(via["table_names"]) == sorted(ours["tables"])
    for table in ours["tables"]:
        assert 'Referenced table "pg_catalog.pg_collation" not found' in via["tables"][table]["columns"]["error"]
        assert via["tables"][table]["rows"] == ours["tables"][table]["rows"]
    assert via["queries"] == ours["queries"]
