"""Parquet export of a release: every table round-trips with its descriptions, runs are swapped in whole behind
a ``latest`` pointer (a failed or killed export leaves the previous run the latest), old runs are pruned, and
erased customers leave every kept export."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_quality.pii import pseudonym_key
from orchestration.parquet_export import RELEASE_TABLES, ExportError, export_release, scrub_exports
from orchestration.publication import erased_keys, list_versions

# DuckDB type of a published column -> what a Parquet reader (pyarrow, like pandas and Evidence) gets
ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64(),
               "DATE": pa.date32(), "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us")}


def _tiny_release(path: Path, run_id: str, customers: int = 5, tables=RELEASE_TABLES) -> Path:
    """A release with the published tables' names, a few rows each."""
    with duckdb.connect(str(path)) as con:
        for name in tables:
            if name == "pipeline_runs":
                con.execute(f"create table pipeline_runs as select '{run_id}' as run_id, date '2026-01-31' as "
                            "as_of_date, true as published, timestamp '2026-02-01 02:00:00' as finished_at")
            else:
                con.execute(f"create table {name} as select 'c' || range as customer_id, '{run_id}' as run_id "
                            f"from range({customers})")
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _visible_runs(export: Path) -> list[str]:
    return sorted(p.name for p in (export / "runs").iterdir())


def _latest(export: Path) -> tuple[str, str]:
    """(the run the symlink points at, the run latest.json names)."""
    return os.readlink(export / "latest"), json.loads((export / "latest.json").read_text())["run_id"]


@pytest.mark.slow
def test_every_published_table_round_trips_with_its_descriptions(two_publications, tmp_path):
    work, _, second = two_publications
    serving, export = work / "serving.duckdb", tmp_path / "exports"
    previous = os.umask(0o077)  # the pipeline's umask around warehouse connections: the export is for BI users
    try:
        folder = export_release(serving, export, run_id=second, as_of_date="2026-09-30")
    finally:
        os.umask(previous)
    assert folder == export / "runs" / second and _latest(export) == (f"runs/{second}", second)
    assert (export / "latest" / "manifest.json").read_bytes() == (folder / "manifest.json").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["run_id"], manifest["as_of_date"], manifest["format_version"]) == (second, "2026-09-30", 1)
    assert [t["name"] for t in manifest["tables"]] == list(RELEASE_TABLES)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{t}.parquet" for t in RELEASE_TABLES]
                                                               + ["manifest.json"])
    for path in [export, export / "runs", folder]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    for path in [*folder.iterdir(), export / "latest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path

    described = 0
    with duckdb.connect() as con:
        con.execute("attach ? as release (read_only)", [str(serving)])
        for entry in manifest["tables"]:
            name, path = entry["name"], str(folder / entry["file"])
            release = con.execute("select column_name, data_type, comment from duckdb_columns() where database_name "
                                  "= 'release' and table_name = ? order by column_index", [name]).fetchall()
            rows = con.execute(f'select count(*) from release.main."{name}"').fetchone()[0]
            assert rows > 0 and entry["rows"] == rows, name
            assert [(c["name"], c["type"], c["description"]) for c in entry["columns"]] == release, name
            assert entry["description"] == con.execute("select comment from duckdb_tables() where database_name = "
                                                       "'release' and table_name = ?", [name]).fetchone()[0]
            assert entry["description"], f"{name} has no table description"
            described += sum(1 for c in entry["columns"] if c["description"])
            # read back by DuckDB: same columns in the same order, same types, the very same rows
            assert [(c, t) for c, t, *_ in con.execute("describe select * from read_parquet(?)", [path]).fetchall()
                    ] == [(c, t) for c, t, _ in release], name
            published = f'release.main."{name}"'
            for a, b in ((published, "read_parquet($p)"), ("read_parquet($p)", published)):
                assert con.execute(f"select count(*) from (select * from {a} except all select * from {b})",
                                   {"p": path}).fetchone()[0] == 0, name
            # and by pyarrow
            table = pq.read_table(path)
            assert table.num_rows == rows, name
            assert [(f.name, f.type) for f in table.schema] == [(c, ARROW_TYPES[t]) for c, t, _ in release], name
            assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert described == sum(len(t["columns"]) for t in manifest["tables"])  # every published column is documented


def test_a_second_export_moves_latest_and_older_runs_are_pruned(tmp_path):
    export = tmp_path / "exports"
    releases = [_tiny_release(tmp_path / f"r{i}.duckdb", f"r{i}", customers=i + 1) for i in range(1, 5)]
    first = export_release(releases[0], export, keep=2)  # run id and as-of date from the release's pipeline_runs
    before = _digests(first)
    reader = open(first / "customer_scores.parquet", "rb")  # a BI tool that opened the first run's file
    try:
        export_release(releases[1], export, keep=2)
        assert _latest(export) == ("runs/r2", "r2")
        assert pq.read_table(export / "latest" / "customer_scores.parquet").num_rows == 3
        assert _digests(first) == before  # the first run's folder is intact: its readers keep it
        export_release(releases[2], export, keep=2)
        export_release(releases[3], export, keep=2)
        assert _visible_runs(export) == ["r3", "r4"] and _latest(export) == ("runs/r4", "r4")
        assert pq.read_table(reader).num_rows == 2  # pruned, but the open file still reads whole
    finally:
        reader.close()
    again = export_release(releases[3], export, keep=2)  # the same run exported again replaces its folder
    assert again == export / "runs" / "r4" and _visible_runs(export) == ["r3", "r4"]
    assert sorted(p.name for p in export.iterdir()) == ["latest", "latest.json", "runs"]  # no temporary left


# Exports run_id r2 of argv[1] into argv[2] and dies (SIGKILL, nothing cleaned up) right after the third file
# is on disk: the moment of a power cut or an OOM kill in the middle of an export.
KILLED_EXPORT = r"""
import os, signal, sys
from pathlib import Path
from orchestration.parquet_export import export_release
fsync, synced = os.fsync, []
def fsync_then_die(fd):
    fsync(fd)
    synced.append(fd)
    if len(synced) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync_then_die
export_release(Path(sys.argv[1]), Path(sys.argv[2]), run_id="r2", as_of_date="2026-02-28")
"""


def test_a_failed_or_killed_export_leaves_the_previous_run_the_latest(tmp_path):
    export = tmp_path / "exports"
    export_release(_tiny_release(tmp_path / "r1.duckdb", "r1"), export)
    complete = _digests(export / "runs" / "r1")

    incomplete = _tiny_release(tmp_path / "incomplete.duckdb", "r2", tables=[t for t in RELEASE_TABLES if t != "pipeline_runs"])
    with pytest.raises(ExportError, match=f"the release {incomplete} has no table pipeline_runs: publish a "
                                          "complete release"):
        export_release(incomplete, export, run_id="r2", as_of_date="2026-02-28")  # fails after six files
    assert _latest(export) == ("runs/r1", "r1") and _visible_runs(export) == ["r1"]  # nothing half is left

    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(tmp_path / "r1.duckdb"), str(export)],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert _latest(export) == ("runs/r1", "r1") and _digests(export / "runs" / "r1") == complete
    assert _visible_runs(export) == [".r2.tmp", "r1"]  # the half run is under a hidden name only
    assert len(list((export / "runs" / ".r2.tmp").glob("*.parquet"))) == 3

    export_release(_tiny_release(tmp_path / "r3.duckdb", "r3"), export)
    assert _visible_runs(export) == ["r1", "r3"] and _latest(export) == ("runs/r3", "r3")  # the stale one is gone


def test_an_export_folder_that_cannot_be_written_is_named_in_one_line(tmp_path):
    release = _tiny_release(tmp_path / "r1.duckdb", "r1")
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError) as failed:
        export_release(release, blocker / "exports")
    message = str(failed.value)
    assert message.startswith(f"the Parquet export folder {blocker / 'exports'} cannot be written (")
    assert message.endswith("give the pipeline's account write access to it, or export to another folder")
    assert "\n" not in message
    taken = tmp_path / "taken"
    (taken / "latest").mkdir(parents=True)  # someone's own folder where the export keeps its link
    with pytest.raises(ExportError, match="latest is not the symlink the Parquet export keeps there: move it away"):
        export_release(release, taken)
    assert not (taken / "runs" / "r1").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_export_folder_is_named(tmp_path):
    export = tmp_path / "exports"
    export.mkdir(mode=0o555)
    with pytest.raises(ExportError, match=f"the Parquet export folder {export} cannot be written"):
        export_release(_tiny_release(tmp_path / "r1.duckdb", "r1"), export)


@pytest.mark.slow
def test_scrub_removes_an_erased_customer_from_every_kept_export(two_publications, tmp_path):
    work, first, second = two_publications
    serving, export = work / "serving.duckdb", tmp_path / "exports"
    (kept,) = [v for v in list_versions(serving) if v.stem.endswith(f".{first}")]
    export_release(kept, export, run_id=first, as_of_date="2026-08-31")
    export_release(serving, export, run_id=second, as_of_date="2026-09-30")
    with duckdb.connect(str(serving), read_only=True) as con:
        victim = con.execute("select customer_id from customer_scores where potential_rank = 1").fetchone()[0]
    assert (work / ".pseudonym.key").exists()  # the runs' key: pseudonym_key would otherwise create one
    erased = erased_keys([victim], pseudonym_key(work / ".pseudonym.key"))
    files = sorted((export / "runs").glob("*/*.parquet"))

    def holding(path: Path) -> int:
        with duckdb.connect() as con:
            names = {c for (c, *_) in con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()}
            columns = [c for c in erased if c in names]
            if not columns:
                return 0
            where = " or ".join(f'"{c}" in (select unnest(?))' for c in columns)
            return con.execute(f"select count(*) from read_parquet(?) where {where}",
                               [str(path), *(erased[c] for c in columns)]).fetchone()[0]

    found = {p.relative_to(export).as_posix(): holding(p) for p in files if holding(p)}
    assert found == {**{f"runs/{run}/{table}.parquet": 1 for run in (first, second)
                        for table in ("customer_scores", "customer_profile")},  # customer_id and _key; profile_key
                     # the score history: one night in the first release, both nights in the second
                     f"runs/{first}/customer_scores_history.parquet": 1,
                     f"runs/{second}/customer_scores_history.parquet": 2}
    scores = export / "runs" / second / "customer_scores.parquet"
    rows = pq.read_metadata(scores).num_rows
    reader = open(scores, "rb")
    try:
        assert scrub_exports(export, erased) == 7  # rows: 1 + 1 + 1 in the first release, 1 + 1 + 2 in the second
        assert pq.read_table(reader).num_rows == rows  # a reader's open file keeps its view
    finally:
        reader.close()
    assert pq.read_metadata(scores).num_rows == rows - 1
    assert [p for p in files if holding(p)] == []
    for run in (first, second):
        manifest = json.loads((export / "runs" / run / "manifest.json").read_text())
        assert {t["name"]: t["rows"] for t in manifest["tables"]} == {
            t["name"]: pq.read_metadata(export / "runs" / run / t["file"]).num_rows for t in manifest["tables"]}
    inodes = {p: p.stat().st_ino for p in files}
    assert scrub_exports(export, erased) == 0 and {p: p.stat().st_ino for p in files} == inodes  # left alone
    assert sorted(p.name for p in (export / "runs" / second).iterdir() if p.name.startswith(".")) == []
