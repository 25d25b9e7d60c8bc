"""``make serve``: the Dagster webserver and the daemon on the repository's instance, as production runs them.

``dagster dev`` (``make ui``) is for development: it reloads code and, started without ``DAGSTER_HOME``, may keep
its history in a temporary folder. Here the two long-running processes Dagster deploys are started as they are
(``dagster-webserver`` and ``dagster-daemon run``, each with its own code server for ``workspace.yaml``), on the
home ``$DAGSTER_HOME`` (default: the repository root, whose ``dagster.yaml`` keeps the history in ``.dagster/``).

Before either starts, ``prepare`` parses the dbt manifest if it is stale and opens the instance once, which creates
its storage on a first start: the webserver and the daemon creating the same new SQLite files at once left two
Alembic heads in one of them (``Version table 'alembic_version' has more than one head present``, no code location
in the UI). The systemd units run ``python -m orchestration.serve --prepare`` before each process for the same reason.

Why a launcher and not two ``&`` in the Makefile: a shell starts background commands with SIGINT ignored, and
the daemon makes SIGTERM behave like SIGINT, so a backgrounded daemon ignores both and Ctrl-C left it running.
Here each process gets its own session (the terminal's Ctrl-C reaches only this launcher), and the launcher
sends each one SIGTERM once, on Ctrl-C, on SIGTERM (a container stopping) or when the other one exits, waits for
both, and kills what is still running after a grace period.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestration.settings import PROJECT_ROOT

GRACE_SECONDS = 30  # the webserver and the daemon close their code servers and database connections in a few


def commands(host: str, port: int, workspace: Path) -> dict[str, list[str]]:
    """The two processes, by name: Dagster's own entry points installed beside this Python (the virtualenv's)."""
    bin_dir = Path(sys.executable).parent
    return {
        "dagster-webserver": [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", host,
                              "-p", str(port)],
        "dagster-daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
    }


def prepare() -> str:
    """What must exist before the webserver and the daemon start: the dbt manifest (the code servers define the dbt
    assets from it; only ``dagster dev`` parses while loading) and the instance's storage, created here once.
    Sets ``$DAGSTER_HOME`` (default: the repository root) and returns it."""
    from dagster import DagsterInstance

    from orchestration.dbt_project import ensure_manifest

    ensure_manifest()
    home = os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    Path(home).mkdir(parents=True, exist_ok=True)
    with DagsterInstance.get():
        pass
    return home


def serve(host: str, port: int, workspace: Path) -> int:
    """Start both, wait until Ctrl-C, SIGTERM or one of them exiting; stop both. 0 when stopped on request, 1
    when a process exited by itself (its own output says why)."""
    env = {**os.environ, "DAGSTER_HOME": prepare()}
    print(f"Dagster webserver on http://{host}:{port} and the daemon; home {env['DAGSTER_HOME']}, workspace "
          f"{workspace}. Ctrl-C stops both.", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and SIGTERM like it, even if started with SIGINT ignored
        signal.signal(signum, signal.default_int_handler)
    procs: dict[str, subprocess.Popen] = {}
    status = 0
    try:
        for name, cmd in commands(host, port, workspace).items():
            procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
        while all(proc.poll() is None for proc in procs.values()):
            time.sleep(0.5)
        name, proc = next((n, p) for n, p in procs.items() if p.poll() is not None)
        print(f"{name} exited with status {proc.returncode}: stopping the other one", file=sys.stderr, flush=True)
        status = 1
    except KeyboardInterrupt:
        print("stopping the webserver and the daemon", file=sys.stderr, flush=True)
    finally:
        _stop(procs)
    return status


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to each running process, then wait; kill what is left after ``GRACE_SECONDS`` or a second Ctrl-C."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    try:
        for proc in procs.values():
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        for name, proc in procs.items():
            if proc.poll() is None:
                print(f"{name} did not stop: killing it", file=sys.stderr, flush=True)
                proc.kill()
        for proc in procs.values():
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the webserver listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="port of the webserver (default 3000)")
    parser.add_argument("--workspace", type=Path, default=PROJECT_ROOT / "workspace.yaml",
                        help="Dagster workspace file (default: the repository's workspace.yaml)")
    parser.add_argument("--prepare", action="store_true",
                        help="only parse the dbt manifest if stale and create the instance's storage, then exit "
                        "(a service's ExecStartPre)")
    args = parser.parse_args(argv)
    if args.prepare:
        print(f"dbt manifest ready; Dagster instance ready in {prepare()}")
        return 0
    return serve(args.host, args.port, args.workspace.resolve())


if __name__ == "__main__":
    sys.exit(main())
