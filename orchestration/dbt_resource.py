"""The dbt CLI resource the pipeline runs its dbt steps with.

dagster-dbt's ``DbtCliResource.cli`` does three things this pipeline does not need on every ``dbt`` command:

- it runs ``dbt --version`` in a subprocess to learn which engine it drives; ``DbtCli`` reads the version
  from the installed dbt-core package instead;
- it builds a dbt adapter in this process (importing dbt-core, loading the profile and every macro) that
  serves only the optional row-count and column-metadata fetching (``.fetch_row_counts()``,
  ``.fetch_column_metadata()``); ``DbtCli`` builds none, and without one dagster-dbt also streams each
  result to Dagster as dbt reports it;
- it starts dbt as a subprocess, which then parses the project again; with ``in_process`` (the default)
  ``DbtCli`` runs the command on a thread of this process on a parse made once per process
  (``orchestration/dbt_in_process.py``): about 1.7 s per command and a 3-4 s parse per run less on 2 cores.
  ``CRM_DBT_SUBPROCESS=1`` goes back to dagster-dbt's subprocess (to compare, or to rule this out).

All three are private hooks of dagster-dbt, whose version ``uv.lock`` pins; ``tests/test_definitions.py`` and
``tests/test_dbt_in_process.py`` check that they still exist and that a run gets its dbt results through them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Sequence

import dagster_dbt.core.resource as dagster_dbt_resource
from dagster_dbt import DbtCliResource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation
from packaging import version

SUBPROCESS_ENV = "CRM_DBT_SUBPROCESS"


def in_process_default() -> bool:
    return os.environ.get(SUBPROCESS_ENV, "").strip().lower() not in ("1", "true", "yes")


class InProcessInvocation(DbtCliInvocation):
    """``DbtCliInvocation`` whose "process" is an ``InProcessDbt``: everything after the start is dagster-dbt's."""

    @classmethod
    def run(cls, args, env, manifest, dagster_dbt_translator, project_dir, target_path, raise_on_error,
            context, adapter, cli_version, dbt_project=None) -> DbtCliInvocation:
        from orchestration.dbt_in_process import InProcessDbt, parsed_project
        from orchestration.dbt_project import dbt_project as project

        profile_target = args[list(args).index("--target") + 1] if "--target" in args else None
        parse_dir = Path(target_path).parent / ("parse" if profile_target is None else f"parse-{profile_target}")
        parsed = parsed_project(Path(project_dir), Path(project.profiles_dir), project.manifest_path.parent, parse_dir,
                                profile_target)
        return cls(process=InProcessDbt(args, env, parsed), manifest=manifest, project=dbt_project,
                   dagster_dbt_translator=dagster_dbt_translator, project_dir=project_dir, target_path=target_path,
                   raise_on_error=raise_on_error, context=context, adapter=adapter, cli_version=cli_version)


@contextmanager
def _invocation_class(cls: type):
    saved = dagster_dbt_resource.DbtCliInvocation
    dagster_dbt_resource.DbtCliInvocation = cls
    try:
        yield
    finally:
        dagster_dbt_resource.DbtCliInvocation = saved


class DbtCli(DbtCliResource):
    """``DbtCliResource`` without the per-command ``dbt --version`` subprocess and in-process adapter, running
    dbt in this process unless ``in_process`` is off."""

    in_process: bool | None = None  # None: in this process unless CRM_DBT_SUBPROCESS is set when a command starts

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:  # type: ignore[override]
        return None

    def runs_in_process(self) -> bool:
        """Does a command started now run in this process (``in_process``, else ``CRM_DBT_SUBPROCESS`` unset)?"""
        return self.in_process if self.in_process is not None else in_process_default()

    def cli(self, args: Sequence[str], **kwargs) -> DbtCliInvocation:  # type: ignore[override]
        if not self.runs_in_process():
            return super().cli(args, **kwargs)
        with _invocation_class(InProcessInvocation):
            return super().cli(args, **kwargs)
