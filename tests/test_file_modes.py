"""The warehouse, its WAL and spill folder, and the pseudonym key are owner-only (0600 / 0700); the folder the
pipeline creates is 0711 when the serving file (0644, for BI readers) lives in it, else 0700."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import duckdb
import pytest

from orchestration.file_modes import private_files


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_real_warehouse_connection_leaves_owner_only_files(tmp_path):
    folder = tmp_path / "data"
    warehouse = folder / "warehouse.duckdb"
    with private_files(warehouse, serving_file=folder / "serving.duckdb"):
        con = duckdb.connect(str(warehouse), config={"memory_limit": "25MB", "threads": "1"})
        try:
            con.execute("create table t as select range as i, md5(range::varchar) as s from range(300000) order by s")
            con.execute("checkpoint")  # deletes the WAL; the next write creates it again
            con.execute("insert into t values (1, 'x')")
            modes = {p.name: _mode(p) for p in folder.iterdir()}
        finally:
            con.close()
    assert modes["warehouse.duckdb"] == modes["warehouse.duckdb.wal"] == 0o600
    assert modes["warehouse.duckdb.tmp"] == 0o700  # spill files of the sort
    assert _mode(warehouse) == 0o600
    assert _mode(folder) == 0o711  # BI readers can open serving.duckdb by name, but not list the folder
    assert os.umask(0o022) == 0o022  # restored


def test_folder_is_0700_when_the_serving_file_lives_elsewhere(tmp_path):
    warehouse = tmp_path / "private" / "deep" / "warehouse.duckdb"
    with private_files(warehouse, serving_file=tmp_path / "bi" / "serving.duckdb"):
        duckdb.connect(str(warehouse)).close()
    assert _mode(warehouse.parent) == 0o700 and _mode(warehouse) == 0o600


def test_files_of_earlier_runs_are_tightened_and_an_existing_folder_keeps_its_mode(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    warehouse = folder / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()
    key = folder / ".pseudonym.key"
    key.write_text("k")
    (folder / "serving.duckdb").write_text("")
    for path in (warehouse, key, folder / "serving.duckdb"):
        os.chmod(path, 0o644)
    with private_files(warehouse, serving_file=folder / "serving.duckdb", extra_files=(key,)):
        pass
    assert (_mode(warehouse), _mode(key)) == (0o600, 0o600)
    assert _mode(folder) == 0o755
    assert _mode(folder / "serving.duckdb") == 0o644  # not ours to change: publication gives it 0644


def test_a_subprocess_started_in_the_block_writes_owner_only_files_and_the_umask_is_restored_on_error(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    with pytest.raises(RuntimeError):
        with private_files(warehouse):
            code = f"import duckdb; duckdb.connect({str(warehouse)!r}).execute('create table t (i int)')"
            subprocess.run([sys.executable, "-c", code], check=True)  # as dbt is started by its step
            raise RuntimeError("the step failed")
    assert _mode(warehouse) == 0o600
    assert os.umask(0o022) == 0o022


def test_the_pipelines_warehouse_connection_is_owner_only(tmp_path):
    from orchestration.settings import PipelineSettings

    previous = os.umask(0o022)
    try:
        settings = PipelineSettings.from_env(warehouse_path=str(tmp_path / "data" / "warehouse.duckdb"))
        with settings.warehouse() as con:
            con.execute("create table t as select range as i from range(1000)")
            con.execute("checkpoint")
            con.execute("insert into t values (1)")
            wal = tmp_path / "data" / "warehouse.duckdb.wal"
            assert wal.exists() and _mode(wal) == 0o600
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "data" / "warehouse.duckdb") == 0o600
    assert _mode(tmp_path / "data") == 0o711  # the serving file beside it stays reachable by name
