"""The dbt project as Dagster sees it, and its manifest: prepared before the definitions load, never by them.

dagster-dbt's convention (``DbtProject.prepare_if_dev()``): the manifest is built ahead of time (a deployment runs
``dagster-dbt project prepare-and-package --file orchestration/dbt_project.py``; here ``crm-potential manifest``
and ``crm-potential run`` do it) and only ``dagster dev`` (``make ui``) prepares it while loading the code. The
preparer below keeps that contract with two differences from dagster-dbt's default: it parses only when the
manifest is missing or older than a model, macro or test file (a parse costs 5-10 s), and it runs the dbt
installed beside this Python, so ``make ui`` works without an activated virtualenv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject, DbtProjectPreparer
from dagster_shared.record import replace

from orchestration.settings import PROJECT_ROOT

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
MANIFEST_HINT = "run `crm-potential manifest` (or `make manifest`) to parse the dbt project"


class FreshManifestPreparer(DbtProjectPreparer):
    """``prepare_if_dev`` parses under ``dagster dev`` when the manifest is stale; ``prepare`` (what
    ``dagster-dbt project prepare-and-package`` calls) always parses."""

    def prepare_if_dev(self, project: DbtProject) -> None:
        if self.using_dagster_dev():
            ensure_manifest()

    def prepare(self, project: DbtProject) -> None:
        ensure_manifest(force=True)


# prepared where the definitions load (orchestration/assets/dbt.py calls prepare_if_dev), never on import here
dbt_project = replace(DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR),
                      preparer=FreshManifestPreparer())


def dbt_executable() -> str:
    """The dbt installed beside this Python (the virtualenv's), else whatever is on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def _newest_source_mtime() -> float:
    paths = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        paths.extend(p for p in (DBT_PROJECT_DIR / folder).rglob("*") if p.is_file())
    return max(p.stat().st_mtime for p in paths)


def manifest_is_stale() -> bool:
    """True when the manifest is missing or older than any model, macro or test file (or the project files)."""
    manifest = dbt_project.manifest_path
    return not manifest.exists() or manifest.stat().st_mtime < _newest_source_mtime()


def ensure_manifest(force: bool = False) -> Path:
    """Run ``dbt parse`` when the manifest is stale (or ``force``). Two processes preparing at once (a run and
    ``make ui``) parse once: the second waits for the first and finds the manifest fresh."""
    from dagster._utils import run_with_concurrent_update_guard

    manifest = dbt_project.manifest_path
    if force or manifest_is_stale():
        manifest.parent.mkdir(parents=True, exist_ok=True)
        run_with_concurrent_update_guard(manifest, _parse, guard_timeout_seconds=300)
    return manifest


def _parse() -> None:
    cmd = [dbt_executable(), "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
           "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(dbt_project.target_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=DBT_PROJECT_DIR)
    if proc.returncode != 0 or not dbt_project.manifest_path.exists():
        raise RuntimeError(f"dbt parse failed:\n{proc.stdout}\n{proc.stderr}")


def require_manifest() -> Path:
    """The manifest the dbt assets are defined from; a clear error when nobody prepared it."""
    manifest = dbt_project.manifest_path
    if not manifest.exists():
        raise FileNotFoundError(f"no dbt manifest at {manifest}: {MANIFEST_HINT} before loading the definitions "
                                "(`crm-potential run` and `make ui` prepare it themselves)")
    return manifest


def step_target_path(warehouse_path: str | Path, step_name: str) -> Path:
    """Where a dbt step writes its artifacts (compiled SQL, ``run_results.json``, ``dbt.log``, the saved
    parse): ``dbt_target/<step>`` beside the warehouse, one fixed folder per step and warehouse. Reused
    night after night (dbt's partial parse stays warm, nothing piles up, the last run's results are always
    at the same place), and never shared by two warehouses: runs on two warehouses at once (a test suite
    in parallel, the UI and a CLI run) cannot overwrite each other's artifacts."""
    return Path(warehouse_path).resolve().parent / "dbt_target" / step_name


def warm_partial_parse(warehouse_path: str | Path, step_name: str) -> None:
    """Give a step the newest parse any dbt step of this warehouse made. dbt checks a saved parse against
    the vars, profile and files and parses again if anything differs, so this is always safe; within one
    run the steps after the first (same vars) skip a full parse (about 3.5 s each on 2 cores). The contract
    step is given the vars the later steps will most likely use for that reason
    (``PipelineSettings.provisional_windows``)."""
    import shutil

    target = step_target_path(warehouse_path, step_name)
    parses = sorted(target.parent.glob("*/partial_parse.msgpack"), key=lambda p: p.stat().st_mtime)
    if parses and parses[-1].parent != target:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(parses[-1], target / "partial_parse.msgpack")


def layer_seconds(warehouse_path: str | Path, step_name: str) -> dict[str, float]:
    """Seconds dbt spent per layer (``staging``, ``marts``, ..., and ``tests``) in the step's last invocation."""
    import json

    results_path = step_target_path(warehouse_path, step_name) / "run_results.json"
    if not results_path.exists():
        return {}
    nodes = json.loads(dbt_project.manifest_path.read_text())["nodes"]
    layers: dict[str, float] = {}
    for result in json.loads(results_path.read_text())["results"]:
        unique_id = result["unique_id"]
        fqn = nodes.get(unique_id, {}).get("fqn", [])
        layer = "tests" if unique_id.startswith("test.") else (fqn[1] if len(fqn) > 2 else "other")
        layers[layer] = layers.get(layer, 0.0) + float(result.get("execution_time") or 0.0)
    return {k: round(v, 3) for k, v in layers.items()}


def run_vars(warehouse_path: str | Path, step_name: str = "dbt_models") -> dict:
    """The vars a dbt step of the last run on this warehouse was given (its ``run_results.json``)."""
    import json

    results_path = step_target_path(warehouse_path, step_name) / "run_results.json"
    return json.loads(results_path.read_text())["args"]["vars"]
