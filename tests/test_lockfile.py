"""The virtualenv the tests run in holds exactly what ``uv.lock`` pins, and ``uv.lock`` is current.

``make run`` and ``make test`` install from ``uv.lock`` (``uv sync --locked``), so a fresh clone gets
the versions the project was tested with instead of whatever the ranges in ``pyproject.toml`` resolve to
that day. These tests hold both halves of that promise:

* the running interpreter's distributions (``importlib.metadata``) match the lock: every locked package
  that applies here (runtime + the ``dev`` extra, markers evaluated for this interpreter and platform)
  is installed at exactly its locked version, and nothing the lock names is installed at another one;
* ``uv lock --check`` passes: the lock was refreshed (``make lock``) after the last change to the
  dependencies in ``pyproject.toml``.

Which locked packages apply to this interpreter is decided by uv itself (``uv export``, which walks the
lock's dependency graph from the project with the ``dev`` extra), and their markers are evaluated with
``packaging``, so a package locked only for Windows or for Python 3.12+ is not expected here.

uv is the one the Makefile installs (``.venv-tools/bin/uv``, pinned there); a uv on ``PATH`` is used only
when that one is missing, and the tests skip only when there is no uv at all.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "uv.lock"
PROJECT = "crm-potential"


def _uv() -> str:
    """The uv the Makefile installs, else one on PATH; skip when there is none."""
    pinned = ROOT / ".venv-tools" / "bin" / "uv"
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    found = shutil.which("uv")
    if found:
        return found
    pytest.skip("uv is not installed: `make venv` (or `make test`) installs it into .venv-tools/")


def _run_uv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run uv in the project root, never downloading an interpreter."""
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [_uv(), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def locked_versions() -> dict[str, set[str]]:
    """Every package in uv.lock (any platform, any Python) -> the versions it is locked at."""
    data = tomllib.loads(LOCK.read_text())
    versions: dict[str, set[str]] = {}
    for package in data["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return versions


def expected_here() -> dict[str, str]:
    """Locked package -> version, for the runtime + dev set whose markers hold on this interpreter."""
    result = _run_uv(
        "export", "--frozen", "--extra", "dev", "--format", "requirements.txt",
        "--no-hashes", "--no-header", "--no-annotate", "--no-emit-project",
    )
    assert result.returncode == 0, f"uv export failed:\n{result.stderr}"
    expected: dict[str, str] = {}
    for line in result.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        (spec,) = requirement.specifier  # uv exports every registry package as name==version
        assert spec.operator == "==", f"unexpected requirement in uv export: {line!r}"
        name = canonicalize_name(requirement.name)
        assert name not in expected, f"{name} is locked at two versions for this interpreter"
        expected[name] = spec.version
    return expected


def site_packages() -> list[str]:
    """The running venv's install folders (not sys.path, which holds the checkout and its egg-info)."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def installed_versions() -> dict[str, str]:
    """Distributions installed in the venv running the tests -> installed version."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=site_packages())
    }


def test_lock_covers_the_supported_pythons_with_hashes():
    data = tomllib.loads(LOCK.read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert data["requires-python"].replace(" ", "") == project["requires-python"].replace(" ", "")
    unhashed = [
        f"{package['name']}=={package['version']}"
        for package in data["package"]
        if "registry" in package.get("source", {})
        and not all(artifact.get("hash") for artifact in
                    package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else []))
    ]
    assert not unhashed, f"locked without hashes: {unhashed}"


def test_installed_versions_are_exactly_the_locked_ones():
    expected = expected_here()
    installed = installed_versions()
    locked = locked_versions()
    assert {"dagster", "dbt-core", "pytest", "lifetimes"} <= expected.keys(), (
        "uv export should list the runtime and the dev extra"
    )

    missing = sorted(f"{name}=={version}" for name, version in expected.items() if name not in installed)
    wrong = []
    for name, version in sorted(installed.items()):
        # a package locked for this interpreter must have its version here; one the lock names only
        # for other platforms or Pythons must at least have one of its locked versions
        allowed = {expected[name]} if name in expected else locked.get(name)
        if allowed is not None and version not in allowed:
            wrong.append(f"{name}: installed {version}, locked {' or '.join(sorted(allowed))}")
    assert not missing and not wrong, (
        f"{sys.prefix} does not match uv.lock (run `make venv`, which syncs it):\n"
        f"  missing: {missing}\n  other version than locked: {wrong}"
    )


def test_project_is_installed_editable_from_this_checkout():
    dists = [d for d in importlib.metadata.distributions(path=site_packages())
             if canonicalize_name(d.metadata["Name"]) == PROJECT]
    assert len(dists) == 1, f"{PROJECT} is installed {len(dists)} times in {sys.prefix}"
    direct_url = json.loads(dists[0].read_text("direct_url.json") or "{}")
    assert direct_url.get("dir_info", {}).get("editable"), f"{PROJECT} is not an editable install"
    assert Path(unquote(urlparse(direct_url["url"]).path)).resolve() == ROOT


def test_uv_finds_the_running_environment_in_sync():
    """uv's own verdict on the running venv: nothing to install, upgrade or downgrade (--inexact: a
    tool installed by hand beside the locked set is not an error here)."""
    result = _run_uv(
        "sync", "--frozen", "--extra", "dev", "--inexact", "--check",
        env={"UV_PROJECT_ENVIRONMENT": sys.prefix},
    )
    assert result.returncode == 0, (
        f"uv would change {sys.prefix} to match uv.lock (run `make venv`):\n{result.stderr}"
    )


def test_lock_is_up_to_date_with_pyproject():
    result = _run_uv("lock", "--check")
    assert result.returncode == 0, (
        "uv.lock does not match pyproject.toml: run `make lock` and commit uv.lock\n" + result.stderr
    )
