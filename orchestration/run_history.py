"""The CLI's Dagster instance: ``$DAGSTER_HOME`` (default ``./.dagster``), where every run is recorded for the UI.

Dagster's SQLite storage opens, commits and closes a connection for every event it records, and a run records
several hundred before its first step starts (one "planned" event per asset and per asset check, about 390 here,
most of them dbt tests) and hundreds more while it runs. Each commit waits for the disk (fsync): on a busy
2-core machine that was 13-29 s before the first step of the sample run and about 20 s of a 100 s run.

``write_without_fsync`` lets SQLite hand those writes to the operating system without waiting for the disk
(``PRAGMA synchronous=OFF``), for the SQLite files under ``$DAGSTER_HOME`` only: nothing is lost when the process
ends or crashes, only an operating-system crash or power cut in the middle of a run can damage the run history
(then delete ``$DAGSTER_HOME``: it holds Dagster's history for the UI, never the warehouse, the serving database
or ``pipeline_runs``). The pipeline's own DuckDB files are not SQLite and keep their guarantees.
"""

from __future__ import annotations

import os
from pathlib import Path

_hooked: set[str] = set()


def dagster_home(default: Path) -> Path:
    """``$DAGSTER_HOME`` (set to ``default`` when unset), created with a light ``dagster.yaml`` if missing."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(default)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # keep the local instance light: no telemetry, run storage in sqlite under DAGSTER_HOME
        config.write_text("telemetry:\n  enabled: false\n")
    return home


def write_without_fsync(home: Path) -> None:
    """From now on, every SQLite connection this process opens to a file under ``home`` skips the fsync of
    each commit (see the module docstring). Idempotent."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    root = str(Path(home).resolve())
    if root in _hooked:
        return
    _hooked.add(root)

    @event.listens_for(Engine, "connect")
    def _no_fsync(dbapi_connection, _record) -> None:
        if not type(dbapi_connection).__module__.startswith("sqlite3"):
            return
        files = [row[2] for row in dbapi_connection.execute("pragma database_list").fetchall()]
        if any(f and str(Path(f).resolve()).startswith(root + os.sep) for f in files):
            dbapi_connection.execute("pragma synchronous=OFF")
