"""A throw-away PostgreSQL server for the tests: a new cluster in a temporary folder, on a loopback port,
started and stopped by the test session (Debian's ``postgresql`` package; ``make test`` installs it).

initdb and postgres refuse to run as root, so under root the cluster belongs to the ``postgres`` user that
the package creates, and the server runs as that user. Password authentication (scram) is on for TCP, as on
a real server: the tests connect as ``crm`` with a password, so a wrong password really fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER, PASSWORD, DATABASE = "crm", "crm-test-password", "crm"


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} was not found: install Debian's postgresql package "
                           "(`make test` does it: apt-get install postgresql)")
    return found


def server_binaries_found() -> bool:
    try:
        _bin("initdb"), _bin("pg_ctl")
    except RuntimeError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` makes and starts the cluster, ``stop()`` stops it and removes the folder."""

    def __init__(self):
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="crm-pg-"))
        self.data = self.folder / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, cwd=self.folder)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> "PostgresServer":
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "-E", "UTF8",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync")
        pwfile.unlink()
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c full_page_writes=off -c synchronous_commit=off", "start")
        self._run(_bin("createdb"), "-h", str(self.folder), "-p", str(self.port), "-U", USER, DATABASE)
        return self

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, *, password: bool = False, query: str = "") -> str:
        """``postgresql://crm@127.0.0.1:<port>/crm`` (with the password only when asked: the tests pass it
        through the environment as a user would)."""
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{DATABASE}" + (f"?{query}" if query else "")

    def connect(self):
        """A psycopg connection (autocommit) as ``crm``: an independent client, as a BI tool's would be."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=DATABASE,
                               autocommit=True)
