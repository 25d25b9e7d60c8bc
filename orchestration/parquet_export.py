"""Parquet export of a published release, for tools that read files rather than databases (Power BI, Excel,
Evidence, notebooks): every table of the serving file as ``<table>.parquet`` plus ``manifest.json`` (run id,
as-of date, row counts, table and column descriptions), one folder per run::

    <export_dir>/runs/<run_id>/customer_scores.parquet ... manifest.json
    <export_dir>/latest -> runs/<run_id>          (symlink, swapped atomically)
    <export_dir>/latest.json                      ({"run_id": ..., "path": "runs/<run_id>", ...})

Readers never see a half-written run: a run is written into ``runs/.<run_id>.tmp``, every file fsynced, and
renamed to ``runs/<run_id>`` when complete; only then is ``latest`` moved, by creating a new symlink under a
temporary name and ``os.replace``-ing it over the old one (atomic on POSIX). ``latest.json`` says the same
for tools that do not follow symlinks (a Windows share served without symlink support, a Power BI gateway
reading a file path): written as a temporary file and renamed over the old one, so it is always whole. A
killed export leaves ``latest`` on the previous complete run; its temporary folder is removed by the next
export (or scrub). A reader of an older folder keeps it until it is pruned (the newest ``keep`` runs are kept,
never the one ``latest`` names); on POSIX even a pruned file stays readable to whoever has it open.

The folder belongs to one pipeline (its runs are one at a time, ``orchestration/run_lock.py``): an export
removes the temporary entries it finds there. The files are for BI users, while the pipeline writes under an
owner-only umask (``orchestration/file_modes.py``): so modes are set explicitly, files 0644, folders 0755.

Erasure: the kept runs are copies of earlier releases, so ``scrub_exports`` removes erased customers from
them the way ``publication.scrub_version`` does from kept serving files: a new file renamed over the old name,
never a file a reader holds modified in place.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from orchestration.publication import RELEASE_TABLES, _erased_match, sync_folder
from orchestration.sql_quoting import quote_ident as _ident
from orchestration.sql_quoting import quote_literal as _quoted  # DuckDB's COPY takes no parameter for its path

FORMAT_VERSION = 1
RUNS = "runs"
LATEST = "latest"
LATEST_JSON = "latest.json"
MANIFEST = "manifest.json"
FILE_MODE = 0o644
DIR_MODE = 0o755
# Snappy: the codec every Parquet reader implements (zstd is about 30 % smaller on the sample, but not every
# BI tool's reader has it); Parquet format version 1 pages, the ones older readers understand.
DEFAULT_COMPRESSION = "snappy"
COMPRESSIONS = ("snappy", "zstd", "gzip", "uncompressed")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NO_SYMLINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class ExportError(Exception):
    """The export could not be written; the message says which folder or table and what to do."""


def export_release(release: Path, export_dir: Path, *, run_id: str | None = None, as_of_date: str | None = None,
                   keep: int = 3, compression: str = DEFAULT_COMPRESSION) -> Path:
    """Export the serving file ``release`` into ``export_dir/runs/<run_id>`` and point ``latest`` at it.

    ``run_id`` and ``as_of_date`` default to the release's last published run (``pipeline_runs``). Returns
    the run's folder. Raises before ``latest`` moves when anything fails (the previous run stays the latest)."""
    release, export_dir = Path(release), Path(export_dir).absolute()
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the run latest points at), got {keep}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    runs = _prepare(export_dir)
    with duckdb.connect() as con:
        try:
            con.execute("attach ? as release (read_only)", [str(release)])
        except duckdb.Error as exc:
            raise ExportError(f"the release {release} cannot be opened for the Parquet export "
                              f"({type(exc).__name__}): check that the serving file exists") from exc
        run_id, as_of_date = _identity(con, release, run_id, as_of_date)
        tmp = runs / f".{run_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _make_dir(tmp)
        try:
            tables = [_write_table(con, release, name, tmp, compression) for name in _table_names(con)]
            created_at = _now()
            _write_atomically(tmp / MANIFEST, {
                "format_version": FORMAT_VERSION, "run_id": run_id, "as_of_date": as_of_date,
                "created_at": created_at, "release": release.name, "compression": compression, "tables": tables})
            sync_folder(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    final = _move_into_place(tmp, runs / run_id)
    _point_latest(export_dir, run_id, as_of_date, created_at)
    _prune(export_dir, keep)
    return final


def scrub_exports(export_dir: Path, erased: dict[str, list[str]]) -> int:
    """Remove erased customers from every exported run; returns the rows removed.

    ``erased`` is column -> values, as ``publication.erased_keys`` gives (``customer_id``, ``customer_key``,
    ``profile_key``). A file holding such a row is rewritten without it under a temporary name and renamed
    over its own (a reader with the old file open keeps its view); its manifest's row count follows. Left-over
    temporary folders of killed exports are removed first: they may hold the customers too."""
    export_dir = Path(export_dir).absolute()
    runs = export_dir / RUNS
    if not any(erased.values()) or not runs.is_dir():
        return 0
    _remove_stale(export_dir)
    with duckdb.connect() as con:
        return sum(_scrub_folder(con, folder, erased) for folder in _run_folders(runs))


def latest_run(export_dir: Path) -> str | None:
    """The run ``latest.json`` names (None when there is none yet)."""
    try:
        return json.loads((Path(export_dir) / LATEST_JSON).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prepare(export_dir: Path) -> Path:
    """Create the folders (0755), check they take files, refuse a ``latest`` that is not our link, and remove
    what a killed export left. Returns ``runs/``."""
    runs = export_dir / RUNS
    try:
        _make_dir(export_dir)
        _make_dir(runs)
        for folder in (export_dir, runs):
            fd, probe = tempfile.mkstemp(prefix=".latest.probe.", suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"the Parquet export folder {export_dir} cannot be written ({exc.strerror or exc}): give "
                          "the pipeline's account write access to it, or export to another folder") from exc
    latest = export_dir / LATEST
    if latest.exists() and not latest.is_symlink():
        raise ExportError(f"{latest} is not the symlink the Parquet export keeps there: move it away and export again")
    _remove_stale(export_dir)
    return runs


def _make_dir(folder: Path) -> None:
    """Create ``folder`` and any missing parent with mode 0755 (whatever the umask); existing ones keep theirs."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        os.chmod(path, DIR_MODE)


def _remove_stale(export_dir: Path) -> None:
    """Remove what a killed export or scrub left: ``runs/.*.tmp`` folders, temporary files in the run folders,
    temporary links and files of ``latest``."""
    runs = export_dir / RUNS
    for path in [*runs.glob(".*.tmp"), *runs.glob("*/.*.tmp"), *export_dir.glob(".latest.*.tmp")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _identity(con: duckdb.DuckDBPyConnection, release: Path, run_id: str | None,
              as_of_date: str | None) -> tuple[str, str]:
    """The run id and as-of date the export is filed under (the release's last published run by default)."""
    if run_id is None or as_of_date is None:
        try:
            row = con.execute("select run_id, as_of_date from release.main.pipeline_runs where published "
                              "order by finished_at desc limit 1").fetchone()
        except duckdb.CatalogException:
            row = None
        if row is None:
            raise ExportError(f"the release {release} records no published run: pass the run id and as-of date")
        run_id = run_id if run_id is not None else row[0]
        as_of_date = as_of_date if as_of_date is not None else row[1]
    run_id, as_of_date = str(run_id), str(as_of_date)
    if not _SAFE_NAME.fullmatch(run_id) or run_id.endswith(".tmp"):
        raise ValueError(f"run id {run_id!r} cannot name a folder: use letters, digits, '_', '-' and '.'")
    return run_id, as_of_date


def _table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The release's tables: ``RELEASE_TABLES`` in their order (a missing one fails when its turn comes),
    then any other table of the release by name."""
    present = {t for (t,) in con.execute("select table_name from duckdb_tables() "
                                         "where database_name = 'release' and schema_name = 'main'").fetchall()}
    return [*RELEASE_TABLES, *sorted(present - set(RELEASE_TABLES))]


def _write_table(con: duckdb.DuckDBPyConnection, release: Path, name: str, folder: Path, compression: str) -> dict:
    """Write one table as ``<name>.parquet`` (column order kept), check its row count, return its manifest entry."""
    columns = con.execute("select column_name, data_type, comment from duckdb_columns() where database_name = "
                          "'release' and schema_name = 'main' and table_name = ? order by column_index",
                          [name]).fetchall()
    if not columns:
        raise ExportError(f"the release {release} has no table {name}: publish a complete release with this "
                          "version of the pipeline, then export again")
    description = con.execute("select comment from duckdb_tables() where database_name = 'release' "
                              "and schema_name = 'main' and table_name = ?", [name]).fetchone()[0]
    path = folder / f"{name}.parquet"
    con.execute(f"copy (select * from {_ident('release', 'main', name)}) to {_quoted(path)} "
                f"(format parquet, compression {compression}, parquet_version v1)")
    rows = con.execute(f"select count(*) from {_ident('release', 'main', name)}").fetchone()[0]
    written = con.execute("select coalesce(sum(num_rows), 0) from parquet_file_metadata(?)", [str(path)]).fetchone()[0]
    if written != rows:
        raise ExportError(f"{path} holds {written} rows where the release's {name} has {rows}: export again")
    _finish_file(path)
    return {"name": name, "file": path.name, "rows": rows, "description": description,
            "columns": [{"name": c, "type": t, "description": d} for c, t, d in columns]}


def _move_into_place(tmp: Path, final: Path) -> Path:
    """Rename the complete folder to its name. A folder of the same run (exported again) is moved aside first
    and removed after: the name is missing for that instant only, never half-written."""
    aside = final.with_name(f".{final.name}.old.tmp")
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(final, aside)
    os.chmod(tmp, DIR_MODE)
    os.rename(tmp, final)
    sync_folder(final.parent)
    shutil.rmtree(aside, ignore_errors=True)
    return final


def _point_latest(export_dir: Path, run_id: str, as_of_date: str, created_at: str) -> None:
    """Swap ``latest`` (a relative symlink, so the folder can be mounted anywhere) and ``latest.json`` to the run.
    On a file system without symlinks only ``latest.json`` is written."""
    target = Path(RUNS) / run_id
    tmp_link = export_dir / ".latest.link.tmp"
    tmp_link.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp_link, target_is_directory=True)
    except OSError as exc:
        if exc.errno not in _NO_SYMLINKS:
            raise
    else:
        os.replace(tmp_link, export_dir / LATEST)
    _write_atomically(export_dir / LATEST_JSON, {"run_id": run_id, "path": target.as_posix(),
                                                 "as_of_date": as_of_date, "created_at": created_at,
                                                 "format_version": FORMAT_VERSION})
    sync_folder(export_dir)


def _run_folders(runs: Path) -> list[Path]:
    """Complete run folders (with a manifest), newest first."""
    folders = [p for p in runs.iterdir() if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
               and (p / MANIFEST).is_file()]
    return sorted(folders, key=_created_at, reverse=True)


def _created_at(folder: Path) -> str:
    try:
        return str(json.loads((folder / MANIFEST).read_text())["created_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return _now(datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc))


def _prune(export_dir: Path, keep: int) -> None:
    """Remove run folders beyond the newest ``keep``; the run ``latest`` or ``latest.json`` names always stays.
    Housekeeping only: a folder that cannot be removed now stays (still scrubbed) and the next export retries."""
    pointed = {latest_run(export_dir)}
    link = export_dir / LATEST
    if link.is_symlink():
        pointed.add(Path(os.readlink(link)).name)
    folders = _run_folders(export_dir / RUNS)
    for folder in folders[keep:]:
        if folder.name not in pointed:
            shutil.rmtree(folder, ignore_errors=True)


def _scrub_folder(con: duckdb.DuckDBPyConnection, folder: Path, erased: dict[str, list[str]]) -> int:
    """Rewrite the folder's Parquet files that hold erased customers; update its manifest's row counts."""
    manifest = json.loads((folder / MANIFEST).read_text())
    compression = manifest.get("compression", DEFAULT_COMPRESSION)
    compression = compression if compression in COMPRESSIONS else DEFAULT_COMPRESSION
    removed_here = 0
    for path in sorted(folder.glob("*.parquet")):
        columns = {c for (c, *_) in con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()}
        match, values = _erased_match(columns, erased)
        if not match:
            continue
        removed = con.execute(f"select count(*) from read_parquet(?) where {match}", [str(path), *values]).fetchone()[0]
        if not removed:
            continue
        tmp = folder / f".{path.name}.scrub.tmp"
        con.execute(f"copy (select * from read_parquet(?) where not ({match})) to {_quoted(tmp)} "
                    f"(format parquet, compression {compression}, parquet_version v1)", [str(path), *values])
        _finish_file(tmp)
        os.replace(tmp, path)
        for table in manifest.get("tables", []):
            if table.get("file") == path.name:
                table["rows"] -= removed
        removed_here += removed
    if removed_here:
        manifest["scrubbed_at"] = _now()
        _write_atomically(folder / MANIFEST, manifest)
        sync_folder(folder)
    return removed_here


def _write_atomically(path: Path, data: dict) -> None:
    """Write JSON as a temporary file (fsynced, 0644) renamed over ``path``: a reader sees the old or the new."""
    tmp = path.with_name(f".{path.name}.tmp")  # a killed write's leftover is removed by the next export
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


def _finish_file(path: Path) -> None:
    """Make a written file readable by BI users (0644) and durable (fsync)."""
    os.chmod(path, FILE_MODE)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _now(moment: datetime | None = None) -> str:
    """UTC, to the microsecond (run folders are ordered by it): ``2026-11-29T12:00:00.000000Z``."""
    return (moment or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
