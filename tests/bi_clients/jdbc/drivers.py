"""The JDBC driver the BI tools use for PostgreSQL and Probe.java, ready to run (the probe cached in ``.venv-bi/jdbc/``).

Metabase, DBeaver and Tableau read databases through JDBC drivers, not through our Python clients: the tests run
Probe.java (what those tools do when they sync a schema) with the real driver jar. pgjdbc comes from Debian's
``libpostgresql-jdbc-java`` package (``make test`` installs it, as it installs PostgreSQL): this machine kind
reaches Debian's and PyPI's package registries, not a Maven repository. DuckDB's own JDBC driver is on Maven
Central only, so it is not run here (the serving file is read by DuckDB 1.1 and 1.5 Python clients instead,
tests/test_bi_clients.py: the same storage engine). Probe.java is compiled once per content and Java version,
by a temporary name and a rename under a file lock (parallel test workers, interrupted runs).

Without Java or the jar the tests fail and say what to install; they do not skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
CACHE = ROOT / ".venv-bi" / "jdbc"
QUERIES_FILE = ROOT / "examples" / "queries.sql"
# driver -> (jar, the Debian package that installs it)
DRIVERS = {"pgjdbc": (Path("/usr/share/java/postgresql.jar"), "libpostgresql-jdbc-java")}


def _tool(name: str) -> str:
    from tests.conftest import require

    found = shutil.which(name)
    require(bool(found), f"A Java JDK (`{name}`)", "install Debian's default-jdk-headless (make postgres)")
    return found


def driver_jar(name: str) -> Path:
    from tests.conftest import require

    jar, package = DRIVERS[name]
    require(jar.is_file(), f"The JDBC driver {name} ({jar})", f"apt-get install {package} (make postgres)")
    return jar


def probe_classes() -> Path:
    """The folder of Probe.class, compiled from Probe.java once per content and JDK."""
    from filelock import FileLock

    javac = _tool("javac")
    version = subprocess.run([javac, "-version"], capture_output=True, text=True).stdout.strip()
    source = HERE / "Probe.java"
    key = hashlib.sha256(source.read_bytes() + version.encode()).hexdigest()[:12]
    classes = CACHE / f"probe-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / ".probe.lock")):
        if (classes / "Probe.class").is_file():
            return classes
        building = CACHE / f".building-{classes.name}"
        shutil.rmtree(building, ignore_errors=True)
        done = subprocess.run([javac, "-encoding", "UTF-8", "-d", str(building), str(source)],
                              capture_output=True, text=True)
        if done.returncode:
            shutil.rmtree(building, ignore_errors=True)
            pytest.fail(f"javac could not compile {source.relative_to(ROOT)}: {done.stderr.strip()[-500:]}",
                        pytrace=False)
        for old in CACHE.glob("probe-*"):
            shutil.rmtree(old)
        building.rename(classes)
        return classes


def probe(jar: str, url: str, user: str = "", password: str = "", queries: Path | None = QUERIES_FILE) -> dict:
    """Probe.java's report (see there) of what driver ``jar`` (a name in DRIVERS) reads at ``url``."""
    java = _tool("java")
    classpath = os.pathsep.join([str(driver_jar(jar)), str(probe_classes())])
    done = subprocess.run([java, "-XX:TieredStopAtLevel=1", "-cp", classpath, "Probe", url, user,
                           password, str(queries) if queries else "-"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
