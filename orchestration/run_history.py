"""The CLI's Dagster instance: the repository's one Dagster home, where every run is recorded for the UI.

One home for the UI, the daemon and the CLI: ``dagster.yaml`` at the repository root configures the instance and
keeps everything it records under ``.dagster/``. Dagster reads that file when ``DAGSTER_HOME`` is the root (``make
ui``, ``make serve``, the services) or, under ``dagster dev``, unset (it then reads ``dagster.yaml`` in the working
directory). Its paths are relative to the root, which is right for processes started there; the CLI runs from any
folder, so it uses ``.dagster/`` as its home with a copy of the root file whose paths are made absolute: the same
storage, whichever folder the CLI is started in. A ``DAGSTER_HOME`` naming another folder (a test, a benchmark, a
set-up of one's own) is used as it is, given a light ``dagster.yaml`` if it has none.

Dagster's SQLite storage opens, commits and closes a connection for every event it records, and a run records
several hundred before its first step starts (one "planned" event per asset and per asset check, about 390 here,
most of them dbt tests) and hundreds more while it runs. Each commit waits for the disk (fsync): on a busy
2-core machine that was 13-29 s before the first step of the sample run and about 20 s of a 100 s run.

``write_without_fsync`` lets SQLite hand those writes to the operating system without waiting for the disk
(``PRAGMA synchronous=OFF``), for the SQLite files under ``$DAGSTER_HOME`` only: nothing is lost when the process
ends or crashes, only an operating-system crash or power cut in the middle of a run can damage the run history
(then delete ``$DAGSTER_HOME``: it holds Dagster's history for the UI, never the warehouse, the serving database
or ``pipeline_runs``). The pipeline's own DuckDB files are not SQLite and keep their guarantees. PostgreSQL run
storage (docs/production.md) is not affected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CONFIG_FILE = "dagster.yaml"
# a home of one's own (tests, benchmarks): no telemetry, run storage in SQLite under that home
LIGHT_CONFIG = "telemetry:\n  enabled: false\n"

_hooked: set[str] = set()


def dagster_home(default: Path, config: Path | None = None) -> Path:
    """The CLI's Dagster home, set as ``$DAGSTER_HOME`` for this process and created if missing.

    ``default`` is the repository's ``.dagster`` folder and ``config`` the instance's ``dagster.yaml`` (default: the
    one beside ``default``). When ``$DAGSTER_HOME`` is unset or names the folder of ``config`` (or ``default``)
    and ``config`` exists, the home is ``default`` with ``instance_config(config)`` written into it; otherwise it
    is ``$DAGSTER_HOME`` (``default`` when unset) with a light ``dagster.yaml`` when it has none."""
    config = Path(config) if config else Path(default).parent / CONFIG_FILE
    named = os.environ.get("DAGSTER_HOME")
    home = Path(named) if named else Path(default)
    if config.exists() and home.resolve() in (config.parent.resolve(), Path(default).resolve()):
        home = Path(default)
        home.mkdir(parents=True, exist_ok=True)
        _write_if_changed(home / CONFIG_FILE, instance_config(config))
    else:
        home.mkdir(parents=True, exist_ok=True)
        if not (home / CONFIG_FILE).exists():
            (home / CONFIG_FILE).write_text(LIGHT_CONFIG)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance_config(config: Path) -> str:
    """``config`` (a ``dagster.yaml``) with every relative ``base_dir`` made absolute against its folder, for a home
    in another folder that must record to the same place."""
    import yaml

    config = Path(config).resolve()

    def absolute(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: (str(config.parent / value) if key == "base_dir" and isinstance(value, str)
                          and not Path(value).is_absolute() else absolute(value)) for key, value in node.items()}
        if isinstance(node, list):
            return [absolute(item) for item in node]
        return node

    values = absolute(yaml.safe_load(config.read_text()) or {})
    return (f"# Written from {config} by orchestration/run_history.py whenever crm-potential starts a run: edit\n"
            f"# that file, not this copy (relative paths made absolute, so the CLI records where the UI reads).\n"
            + yaml.safe_dump(values, sort_keys=False, default_flow_style=False))


def _write_if_changed(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (a run starting at the same moment reads the old or the new
    file, never half of one), and only when it differs."""
    if path.exists() and path.read_text() == text:
        return
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text)
    os.replace(scratch, path)


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
