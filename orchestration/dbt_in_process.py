"""dbt run inside the pipeline's own process, on a project parsed once per process.

dagster-dbt runs every ``dbt`` command as a subprocess, which costs each of the pipeline's three dbt steps
a Python start-up and an import of dbt-core and the adapter (about 1.7 s on 2 cores), and the run's first
step a full parse of the project (3-4 s): dbt keys its saved parse on the command's vars and the
warehouse path, which change every night and for every warehouse. The SQL dbt renders reads the vars
when it compiles, not when it parses (no var decides a config, a ref or a selection here), so one parse
serves every command, whatever its vars: this module loads it once per process, from the saved parse
``crm-potential manifest`` made (no vars), and hands it to dbt's programmatic entry point
(``dbtRunner(manifest=...)``, as dbt documents for reusing a parse).

``InProcessDbt`` stands in for the subprocess ``DbtCliInvocation`` would start: dbt runs on a thread and
its events, turned into the JSON lines ``dbt --log-format json`` prints, feed dagster-dbt's own event
stream, so every dbt result still becomes the same Dagster output or asset check, live, and errors are
reported the same way. The one thing a parse fixes that depends on the warehouse is its catalog name (the
file's stem, ``warehouse`` for the parse's default path): each command points the parse at its own
warehouse's name (``point_at_database``) before it runs. dbt-duckdb keeps the warehouse open after a command; it is closed when the
command ends, so the pipeline's own connections (and other processes) can open the file again.

The hook is ``DbtCliInvocation.run``, a private method of dagster-dbt (pinned in ``uv.lock``);
``tests/test_dbt_in_process.py`` checks the hook, that a command's results equal a subprocess's, and that
the warehouse is released.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import threading
from pathlib import Path
from typing import Iterator, Sequence

_PARSE_LOCK = threading.Lock()
_parsed: dict[tuple, object] = {}
# the dagster-dbt environment variables a subprocess would get, as the flags dbt reads them from
_ENV_FLAGS = {"DBT_TARGET_PATH": "--target-path", "DBT_LOG_PATH": "--log-path", "DBT_PROFILES_DIR": "--profiles-dir",
              "DBT_PROJECT_DIR": "--project-dir", "DBT_INDIRECT_SELECTION": "--indirect-selection"}
_DONE = object()


def _manifest_key(manifest_path: Path) -> tuple:
    stat = manifest_path.stat()
    return (str(manifest_path), stat.st_mtime_ns, stat.st_size)


def parsed_project(project_dir: Path, profiles_dir: Path, prepared_target: Path, parse_dir: Path,
                   profile_target: str | None = None):
    """The project's parsed ``Manifest`` object, once per process, prepared manifest and profile target: loaded
    from the saved parse in ``prepared_target`` (copied to ``parse_dir``, so concurrent processes never write the
    same file); dbt parses in full only if that saved parse no longer matches the files. Another profile target
    than the default (``spark``) is parsed in full once: a parse holds its adapter's relation names."""
    from dbt.cli.main import dbtRunner

    key = (*_manifest_key(prepared_target / "manifest.json"), profile_target)
    with _PARSE_LOCK:
        if key not in _parsed:
            saved = prepared_target / "partial_parse.msgpack"
            parse_dir.mkdir(parents=True, exist_ok=True)
            if saved.exists() and profile_target is None:
                shutil.copy2(saved, parse_dir / "partial_parse.msgpack")
            target = [] if profile_target is None else ["--target", profile_target]
            result = dbtRunner().invoke(["parse", "--quiet", "--log-level", "none", "--no-write-json",
                                         "--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir),
                                         "--target-path", str(parse_dir), "--log-path", str(parse_dir), *target])
            if not result.success or result.result is None:
                raise RuntimeError(f"dbt parse failed in process: {result.exception}")
            for stale in [k for k in _parsed if k[-1] == profile_target]:
                del _parsed[stale]
            _parsed[key] = result.result
        return _parsed[key]


def _nodes(manifest):
    for group in (manifest.nodes, manifest.sources, getattr(manifest, "unit_tests", {})):
        yield from group.values()


def point_at_database(manifest, database: str) -> None:
    """Make every node and source of ``manifest`` live in the catalog ``database`` (in place): a parse records
    the catalog of the profile it was made with, and dbt-duckdb names the catalog after the file."""
    parsed = next((n.database for n in _nodes(manifest) if getattr(n, "database", None)), None)
    if parsed is None or parsed == database:
        return
    old, new = f'"{parsed}".', f'"{database}".'
    for node in _nodes(manifest):
        if getattr(node, "database", None) == parsed:
            node.database = database
        relation = getattr(node, "relation_name", None)
        if relation and relation.startswith(old):
            node.relation_name = new + relation[len(old):]


def database_of(dbt_args: Sequence[str]) -> str | None:
    """The catalog dbt-duckdb will open for a command: the stem of its ``warehouse_path`` var."""
    from dbt.adapters.duckdb.credentials import DuckDBCredentials

    if "--vars" not in dbt_args or "--target" in dbt_args:  # another target than the default duckdb one
        return None
    path = json.loads(dbt_args[list(dbt_args).index("--vars") + 1]).get("warehouse_path")
    return DuckDBCredentials.path_derived_database_name(path) if path else None


class _Lines:
    """The subprocess's ``stdout`` as dagster-dbt reads it: an iterable of JSON lines (bytes) that can be closed."""

    def __init__(self, lines: "queue.SimpleQueue"):
        self._lines = lines
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while not self.closed:
            line = self._lines.get()
            if line is _DONE:
                self.closed = True
                return
            yield line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class InProcessDbt:
    """What ``DbtCliInvocation`` needs of a ``subprocess.Popen`` (``args``, ``stdout``, ``wait``, ``returncode``,
    ``send_signal``), for one dbt command run on a thread of this process."""

    def __init__(self, args: Sequence[str], env: dict[str, str], manifest):
        self.args = list(args)
        self.returncode: int | None = None
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self.stdout = _Lines(self._lines)
        dbt_args = list(args[1:])  # args[0] is the dbt executable
        for name, flag in _ENV_FLAGS.items():
            if env.get(name) and flag not in dbt_args:
                dbt_args += [flag, env[name]]
        self._dbt_args = dbt_args + ["--log-level", "none"]
        self._manifest = manifest
        self._thread = threading.Thread(target=self._invoke, name="dbt", daemon=True)
        self._thread.start()

    def _event(self, msg) -> None:
        from dbt_common.events.functions import msg_to_json

        if msg.info.level != "debug":  # what dbt prints at its default log level
            self._lines.put(msg_to_json(msg).encode())

    def _invoke(self) -> None:
        from dbt.cli.main import dbtRunner

        try:
            database = database_of(self._dbt_args)
            if database:
                point_at_database(self._manifest, database)
            result = dbtRunner(manifest=self._manifest, callbacks=[self._event]).invoke(self._dbt_args)
            self.returncode = 0 if result.success else (1 if result.exception is None else 2)
            if result.exception is not None:
                self._lines.put(f"dbt failed: {result.exception}".encode())
        except BaseException as exc:  # noqa: BLE001 - reported through the invocation like a crashed subprocess
            self.returncode = 2
            self._lines.put(f"dbt failed: {exc!r}".encode())
        finally:
            release_warehouse()
            self._lines.put(_DONE)

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        return self.returncode if self.returncode is not None else -1

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig) -> None:
        """An interrupted run: the command finishes its current statement on its thread (dbt has no
        in-process cancel); the run itself stops when Dagster's step does."""


def release_warehouse() -> None:
    """Close the DuckDB database dbt-duckdb keeps open between commands."""
    with contextlib.suppress(ImportError):
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager

        with DuckDBConnectionManager._LOCK:
            env = DuckDBConnectionManager._ENV
            DuckDBConnectionManager._ENV = None
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
