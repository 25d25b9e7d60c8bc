"""The dbt CLI resource the pipeline runs its dbt steps with.

dagster-dbt's ``DbtCliResource.cli`` does two things before every ``dbt`` command that this pipeline never
uses: it runs ``dbt --version`` in a subprocess to learn which engine it drives, and it builds a dbt adapter
in this process (importing dbt-core, loading the profile and every macro of the project) that serves only
the optional row-count and column-metadata fetching (``.fetch_row_counts()``, ``.fetch_column_metadata()``).
Together about 5 s per run on 2 cores, a third of what the sample's whole dbt work costs. ``DbtCli`` reads
the version from the installed dbt-core package instead (the ``dbt`` it runs is that package's executable,
``dbt_project.dbt_executable``) and builds no adapter; without one, dagster-dbt also streams each result to
Dagster as dbt reports it, rather than after the process ends.

Both are private hooks of dagster-dbt, whose version ``uv.lock`` pins; ``tests/test_definitions.py`` checks
that they still exist and that a run gets its dbt results through this class.
"""

from __future__ import annotations

from functools import cached_property
from importlib.metadata import version as installed_version
from typing import Sequence

from dagster_dbt import DbtCliResource
from packaging import version


class DbtCli(DbtCliResource):
    """``DbtCliResource`` without the per-command ``dbt --version`` subprocess and in-process adapter."""

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:  # type: ignore[override]
        return None
