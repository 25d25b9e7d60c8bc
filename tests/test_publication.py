"""Write, audit, publish: failed or killed runs leave the serving database as it was, readers keep
reading whole publications during a run, and earlier publications can be rolled back to."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from data_quality.pii import pseudonym_key
from orchestration.cli import main
from orchestration.parquet_export import export_release
from orchestration.score_history import CUSTOMER_COLUMNS
from orchestration.publication import erased_keys, list_versions, publish, published_run_id, scrub_version
from orchestration.run_log import RunRecord
from tests.conftest import published_run_id as _run_id
from tests.conftest import run_args

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("crm-potential"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# A BI tool as the README recommends: a read-only connection, with a query left open. It prints what it sees
# (rows, run ids, rows of the customer argv[2]), waits for a line on stdin, and prints what it sees again.
HOLDER = r"""
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
table = sys.argv[3]
pending = con.cursor().execute(f"select * from {table}")
pending.fetchone()
def view():
    return con.execute(f"select count(*), string_agg(distinct run_id), count(*) filter (where customer_id = ?) "
                       f"from {table}", [sys.argv[2]]).fetchall()[0]
print(*view(), flush=True)
sys.stdin.readline()
print(*view(), flush=True)
"""


class Holder:
    """A separate process holding ``path`` open read-only (its lock on the file's inode) until ``view_again``."""

    def __init__(self, path: Path, customer_id: str, table: str = "customer_scores"):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), customer_id, table],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first_view = self.proc.stdout.readline().split()
        assert self.first_view, "the reader could not open the file"

    def view_again(self) -> list[str]:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        seen = self.proc.stdout.readline().split()
        self.proc.wait(timeout=30)
        return seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _rows_of(db: Path, ids: set[str]) -> dict[str, int]:
    """Rows per table and text column of ``db`` holding one of ``ids``."""
    found = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for schema, table, column in con.execute(
                "select table_schema, table_name, column_name from information_schema.columns "
                "where data_type = 'VARCHAR'").fetchall():
            n = con.execute(f'select count(*) from "{schema}"."{table}" where "{column}" in (select unnest(?))',
                            [sorted(ids)]).fetchall()[0][0]
            if n:
                found[f"{table}.{column}"] = n
    return found


def test_a_kept_version_a_reader_holds_is_scrubbed_by_a_new_file(tmp_path):
    folder = tmp_path / "kept O'Brien ü"
    folder.mkdir()
    version = folder / "serving.20260101T000000.r'1.duckdb"
    with duckdb.connect(str(version)) as con:
        con.execute("create table customer_scores as select 'c' || range as customer_id, 'k' || range as customer_key, "
                    "'r1' as run_id from range(10)")
        con.execute("create table customer_profile as select 'k' || range as customer_key from range(10)")
        con.execute("comment on table customer_scores is 'the scores, it''s documented'")
        con.execute("comment on column customer_scores.customer_key is 'pseudonym'")
    reader = Holder(version, "c1")
    try:
        erased = {"customer_id": ["c1"], "customer_key": ["k3"]}
        assert scrub_version(version, erased) == 3  # rows c1 and k3 in scores, k3 in profile
        untouched = version.stat().st_ino
        assert scrub_version(version, erased) == 0 and version.stat().st_ino == untouched  # left alone
        assert reader.view_again() == reader.first_view == ["10", "r1", "1"]  # the reader's view did not move
    finally:
        reader.close()
    assert _rows_of(version, {"c1", "k3"}) == {}
    with duckdb.connect(str(version), read_only=True) as con:
        assert con.execute("select count(*) from customer_scores").fetchall()[0][0] == 8
        assert con.execute("select comment from duckdb_tables() where table_name = 'customer_scores'"
                           ).fetchall() == [("the scores, it's documented",)]
        assert con.execute("select comment from duckdb_columns() where column_name = 'customer_key' "
                           "and table_name = 'customer_scores'").fetchall() == [("pseudonym",)]
    assert [p.name for p in folder.iterdir()] == [version.name]  # no temporary file left


def _tiny_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse tables ``publish`` reads, one row each."""
    con = duckdb.connect(str(path))
    for schema in ("analytics", "marts"):
        con.execute(f"create schema {schema}")
    others = ", ".join(f"null as {c}" for c in CUSTOMER_COLUMNS
                       if c not in ("customer_id", "customer_key", "potential_rank", "as_of_date", "run_id"))
    con.execute("create table analytics.customer_scores as select 'c1' as customer_id, 'k1' as customer_key, "
                f"1 as potential_rank, date '2026-01-31' as as_of_date, 'r' as run_id, {others}")
    con.execute("create table marts.customer_profile as select 'p1' as profile_key")
    con.execute("create table analytics.segment_summary as select 'rfm' as segment_type, 'all' as cut_type, "
                "'all' as cut_value, 'x' as segment, date '2026-01-31' as as_of_date, 'r' as run_id")
    con.execute("create table analytics.lifecycle_funnel as select date '2026-01-31' as period_end, "
                "'new' as from_stage, 1 as to_stage_order")
    con.execute("create table analytics.campaign_effectiveness as select 'cmp' as campaign_id, 'x' as segment")
    return con


def _record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, as_of_date="2026-01-31", started_at=None, status="success", published=True,
                     source_dir="source")


def test_what_fails_around_the_swap_is_a_warning_on_a_published_run(tmp_path):
    folder = tmp_path / "it's ü"
    folder.mkdir()
    serving = folder / "serving '1.duckdb"
    with _tiny_warehouse(folder / "warehouse.duckdb") as con:
        assert publish(con, serving, _record("r1")).warnings == []
        (folder / ".serving-versions").write_text("not a folder")  # the previous publication cannot be kept
        published = publish(con, serving, _record("r2"))
        assert published_run_id(serving) == "r2" and published.counts["customer_scores"] == 1
        assert len(published.warnings) == 1
        assert published.warnings[0].startswith("the previous publication was not kept")
        warehouse_row = con.execute("select status, published, message from ops.pipeline_runs where run_id = 'r2'"
                                    ).fetchall()
    with duckdb.connect(str(serving), read_only=True) as con:
        serving_row = con.execute("select status, published, message from pipeline_runs where run_id = 'r2'").fetchall()
    assert warehouse_row == serving_row == [("success", True, published.message)]
    assert published.message.startswith("warning: the previous publication was not kept in ")



def test_rollback_restores_the_previous_publication_and_can_be_undone(two_publications, tmp_path):
    work, first, second = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    versions = list_versions(serving)
    assert versions and versions[0].name.endswith(f".{first}.duckdb")
    assert oct(serving.stat().st_mode & 0o777) == "0o644"
    assert main(["rollback", "--serving", str(serving)]) == 0
    assert _run_id(serving) == first
    assert main(["rollback", "--serving", str(serving), "--to", second]) == 0
    assert _run_id(serving) == second
    assert main(["rollback", "--serving", str(serving), "--to", "no-such-run"]) == 2


# layer -> (environment that makes its gate fail, phrases the error must show). The raw and staging
# layers are broken through their input in test_bad_input.py, the scores layer in the drift test below.
LAYER_FAILURES = {
    "marts": ({"CRM_MIN_BUYER_SHARE": "0.99"}, ["assert_buyer_share_above_floor", "customer_features"]),
    "models": ({"CRM_MIN_CHURN_AUC": "0.999"}, ["model_metric_floors", "below the floor 0.999"]),
}


@pytest.mark.parametrize("layer", list(LAYER_FAILURES))
def test_a_gate_failure_publishes_nothing(layer, two_publications, small_sample, tmp_path, monkeypatch, capsys):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    before = _digest(copy / "serving.duckdb")
    environment, phrases = LAYER_FAILURES[layer]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(run_args(small_sample, copy, "--as-of", "2026-09-29")) == 1
    err = capsys.readouterr().err
    for phrase in phrases:
        assert phrase in err, (layer, phrase, err[-3000:])
    assert "nothing was published" in err
    with duckdb.connect(str(copy / "warehouse.duckdb"), read_only=True) as con:
        published = con.execute("select count(*) from ops.pipeline_runs where published and as_of_date = '2026-09-29'")
        assert published.fetchall()[0][0] == 0
    assert _digest(copy / "serving.duckdb") == before


def test_a_killed_run_leaves_the_serving_database_untouched(two_publications, small_sample, tmp_path):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    before = _digest(serving)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # without --quiet: the dbt lines say when models are being built
    args = [a for a in run_args(small_sample, copy, "--as-of", "2026-09-28") if a != "--quiet"]
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until dbt is building models, then kill everything
        if "OK created sql table model" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _digest(serving) == before
    # the next run recovers and publishes
    assert main(run_args(small_sample, copy)) == 0
    assert not list(copy.glob(".serving.duckdb.*.tmp*"))


READER = r"""
import sys, time, duckdb
path, stop, log = sys.argv[1], sys.argv[2], open(sys.argv[3], "w")
import os
while not os.path.exists(stop):
    try:
        with duckdb.connect(path, read_only=True) as con:
            runs = con.execute("select distinct run_id from customer_scores").fetchall()
            latest = con.execute("select run_id from pipeline_runs where published order by finished_at desc limit 1").fetchall()
            n = con.execute("select count(*), max(potential_rank) from customer_scores").fetchall()[0]
        whole = len(runs) == 1 and runs[0][0] == latest[0][0] and n[0] == n[1]
        log.write(f"ok {runs[0][0]} {whole}\n")
    except Exception as exc:
        log.write(f"error {type(exc).__name__}: {exc}\n")
    log.flush()
    time.sleep(0.02)
"""


def test_readers_are_never_locked_out_and_see_whole_publications(two_publications, small_sample, tmp_path):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    old = _run_id(serving)
    stop, log = tmp_path / "stop", tmp_path / "reader.log"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(serving), str(stop), str(log)])
    try:
        # a later night than the copy's 2026-09-30: it replaces the latest tables (an earlier one would not)
        assert main(run_args(small_sample, copy, "--as-of", "2026-10-01")) == 0
        time.sleep(0.5)
    finally:
        stop.touch()
        reader.wait(timeout=30)
    new = _run_id(serving)
    lines = log.read_text().splitlines()
    assert len(lines) > 20
    assert not [line for line in lines if line.startswith("error")]
    assert all(line.endswith(" True") for line in lines)  # never a mixed publication
    seen = {line.split()[1] for line in lines}
    assert seen == {old, new}  # read the old one during the run and the new one after the swap


def test_a_held_reader_and_an_erasure_request_publish_and_scrub_the_kept_versions(two_publications, small_sample,
                                                                                 tmp_path, capsys):
    """The situation of issue 17: a BI reader holds the serving file open read-only while a run with an
    erasure request replaces it and keeps the old one (a hard link: the reader's inode)."""
    work, first, second = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    with duckdb.connect(str(serving), read_only=True) as con:
        victim = con.execute("select customer_id from customer_scores where potential_rank = 1").fetchall()[0][0]
    keys = erased_keys([victim], pseudonym_key(copy / ".pseudonym.key"))  # customer_id, customer_key, ...
    needles = {value for values in keys.values() for value in values}
    erase = tmp_path / "erase.csv"
    erase.write_text(f"customer_id\n{victim}\n")
    exports = tmp_path / "exports"  # the earlier nights' Parquet exports hold the customer too
    for version in list_versions(serving):
        export_release(version, exports)
    export_release(serving, exports)
    reader = Holder(serving, victim)
    try:
        # the night the data runs up to: a fresh source, so the run's message is empty unless publishing left a gap
        assert main(run_args(small_sample, copy, "--as-of", "2026-09-30", "--erase", str(erase), "--export-parquet",
                             str(exports))) == 0
        assert reader.view_again() == reader.first_view  # the reader's view is the one it opened
    finally:
        reader.close()
    assert reader.first_view[1:] == [second, "1"]
    assert "nothing was published" not in capsys.readouterr().err
    run = _run_id(serving)
    assert run not in (first, second)
    with duckdb.connect(str(copy / "warehouse.duckdb"), read_only=True) as con:
        recorded = con.execute("select status, published, message from ops.pipeline_runs where run_id = ?",
                               [run]).fetchall()
    with duckdb.connect(str(serving), read_only=True) as con:
        released = con.execute("select status, published, message from pipeline_runs where run_id = ?",
                               [run]).fetchall()
    assert recorded == released == [("success", True, "")]
    versions = list_versions(serving)
    assert sorted(v.stem.split(".")[-1] for v in versions) == sorted([first, second])
    for db in [serving, *versions]:
        assert _rows_of(db, needles) == {}, db
    assert json.loads((exports / "latest.json").read_text())["run_id"] == run
    files = sorted((exports / "runs").glob("*/*.parquet"))
    assert {f.parent.name for f in files} == {first, second, run}
    with duckdb.connect() as con:
        for f in files:
            text = " ".join(map(str, con.execute("select * from read_parquet(?)", [str(f)]).fetchall()))
            assert not any(needle in text for needle in needles), f


def test_scores_that_drift_from_the_last_publication_are_not_published(two_publications, small_sample, tmp_path, capsys):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    before = _digest(copy / "serving.duckdb")
    source = tmp_path / "tenfold"
    shutil.copytree(small_sample, source)
    duckdb.execute(  # the same customers suddenly spend ten times as much: a unit or currency mistake
        f"copy (select * replace (cast(cast(amount as double) * 10 as varchar) as amount) "
        f"from read_csv('{small_sample}/orders.csv', all_varchar=true)) to '{source}/orders.csv' (header)"
    )
    assert main(run_args(source, copy)) == 1
    err = capsys.readouterr().err
    assert "scores_drift" in err and "clv mean moved" in err
    assert _digest(copy / "serving.duckdb") == before


def _storage_version(path: Path) -> int:
    """The storage format number in a DuckDB file's header (after the checksum and the magic 'DUCK')."""
    header = path.read_bytes()[:20]
    assert header[8:12] == b"DUCK"
    return int.from_bytes(header[12:20], "little")


def test_the_serving_file_is_in_a_format_older_duckdb_clients_read(two_publications, tmp_path):
    from orchestration.settings import PipelineSettings, SettingsError

    work, _, _ = two_publications
    assert _storage_version(work / "serving.duckdb") == 64  # v1.0.0's format: DuckDB 0.10 and every 1.x read it
    assert _storage_version(work / "warehouse.duckdb") > 64  # the warehouse keeps the running DuckDB's own
    with _tiny_warehouse(tmp_path / "warehouse.duckdb") as con:
        publish(con, tmp_path / "latest.duckdb", _record("r1"), storage_version="latest")
        with pytest.raises(ValueError, match="CRM_SERVING_STORAGE_VERSION='v0.0.0' is not a storage format"):
            publish(con, tmp_path / "bad.duckdb", _record("r2"), storage_version="v0.0.0")
    assert _storage_version(tmp_path / "latest.duckdb") > 64
    assert not (tmp_path / "bad.duckdb").exists()
    with pytest.raises(SettingsError, match=r"CRM_SERVING_STORAGE_VERSION\) must be a DuckDB release"):
        PipelineSettings.from_env(serving_storage_version="1.0")


def test_a_reader_sees_the_new_publication_only_once_its_process_holds_no_connection(tmp_path):
    """The README's advice (open, read, close): DuckDB keeps one instance per file and process, so a new
    connection made while another of the same process holds the file still reads the old publication."""
    serving = tmp_path / "serving.duckdb"
    with _tiny_warehouse(tmp_path / "warehouse.duckdb") as con:
        publish(con, serving, _record("r1"))
        held = duckdb.connect(str(serving), read_only=True)
        publish(con, serving, _record("r2"))

    def newest(connection) -> str:
        return connection.execute("select max(run_id) from pipeline_runs where published").fetchall()[0][0]

    fresh = duckdb.connect(str(serving), read_only=True)
    assert newest(held) == newest(fresh) == "r1"  # same process, file still held: the old publication
    fresh.close()
    held.close()
    with duckdb.connect(str(serving), read_only=True) as reopened:
        assert newest(reopened) == "r2"
