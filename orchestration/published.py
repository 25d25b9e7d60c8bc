"""The publication as its readers see it, on either engine: the run report, the CLI's summary and its failure
messages read it here, never an engine's files or catalog directly.

* DuckDB: the serving file (``settings.serving_file``), its tables by their bare names; an earlier publication
  is a kept file in ``.serving-versions/`` (``orchestration/publication.py``).
* Spark: the views ``serving.<table>`` over the current release; an earlier publication is another release's
  partition of ``serving_releases.<table>`` (``orchestration/publication_spark.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
import pyarrow as pa

from orchestration.warehouse import DuckDBWarehouse, Warehouse

if TYPE_CHECKING:
    from orchestration.settings import PipelineSettings


@dataclass
class PublishedTables:
    """One publication's tables: ``schema`` holds them (None: the serving file's own tables); ``release``: an
    earlier Spark release, read from its partitions of ``schema``'s tables."""

    warehouse: Warehouse
    schema: str | None = None
    release: str | None = None
    _names: set[str] | None = field(default=None, repr=False)

    def relation(self, table: str) -> str:
        """``table`` as a query's ``from`` names it."""
        if table not in self.names():
            raise KeyError(f"the publication has no table {table}")
        if self.release is not None:
            from orchestration.publication_spark import quote_literal

            return f"(select * from {self.schema}.{table} where release = {quote_literal(self.release)}) {table}"
        return f"{self.schema}.{table}" if self.schema else table

    def names(self) -> set[str]:
        if self._names is None:
            self._names = set(self.warehouse.tables(self.schema or "main", views=True))
        return self._names

    def has(self, table: str) -> bool:
        return table in self.names()

    def columns(self, table: str) -> list[str]:
        names = self.warehouse.arrow(f"select * from {self.relation(table)} limit 0").column_names
        return [c for c in names if self.release is None or c != "release"]

    def frame(self, table: str, columns: list[str] | None = None, where: str = "", params=(),
              inputs: dict[str, pa.Table] | None = None) -> pd.DataFrame:
        select = ", ".join(columns) if columns else "*"
        return self.warehouse.frame(f"select {select} from {self.relation(table)}" + (f" where {where}" if where else ""),
                                    params, inputs)

    def published_run_id(self) -> str | None:
        """The run whose tables these are (the newest published run in its run log)."""
        if not self.has("pipeline_runs"):
            return None
        return self.warehouse.scalar(f"select run_id from {self.relation('pipeline_runs')} where published "
                                     "order by finished_at desc limit 1")

    def recorded(self, run_id: str) -> bool:
        """Whether its run log has ``run_id`` (a night that published or added to the history)."""
        return self.has("pipeline_runs") and bool(self.warehouse.scalar(
            f"select count(*) from {self.relation('pipeline_runs')} where run_id = ?", [run_id]))

    def as_of(self) -> str | None:
        """The as-of date (YYYY-MM-DD) of its latest tables."""
        if not self.has("customer_scores"):
            return None
        found = self.warehouse.scalar(f"select max(as_of_date) from {self.relation('customer_scores')}")
        return found.isoformat() if found else None


@contextmanager
def published_file(path: Path | str) -> Iterator[PublishedTables | None]:
    """A DuckDB serving file (or a kept one), read-only; None when it is missing or cannot be opened."""
    try:
        con = duckdb.connect(str(path), read_only=True) if Path(path).exists() else None
    except duckdb.Error:
        con = None
    try:
        yield None if con is None else PublishedTables(DuckDBWarehouse(con))
    finally:
        if con is not None:
            con.close()


@contextmanager
def open_published(settings: "PipelineSettings") -> Iterator[PublishedTables | None]:
    """The current publication of ``settings``' engine; None before the first."""
    if settings.engine != "spark":
        with published_file(settings.serving_file) as published:
            yield published
        return
    from orchestration.publication_spark import SERVING, current_release

    with settings.open_warehouse() as warehouse:
        yield PublishedTables(warehouse, SERVING) if current_release(warehouse) else None


@contextmanager
def open_previous(settings: "PipelineSettings", run_id: str) -> Iterator[PublishedTables | None]:
    """The newest kept publication of another run than ``run_id`` (what the report compares with), if any."""
    if settings.engine != "spark":
        from orchestration.publication import list_versions

        kept = [v for v in list_versions(settings.serving_file) if not v.stem.endswith(f".{run_id}")]
        with published_file(kept[0]) if kept else nullcontext() as published:
            yield published
        return
    from orchestration.publication_spark import RELEASES, releases

    with settings.open_warehouse() as warehouse:
        earlier = [release for release, _, _ in releases(warehouse) if release != run_id]
        yield PublishedTables(warehouse, RELEASES, release=earlier[0]) if earlier else None


def published_run_id(settings: "PipelineSettings") -> str | None:
    """The run whose publication readers see now (None when there is none or it cannot be read). The CLI compares
    it with a failed run's id: equal means the run did publish, so it must not say that nothing was."""
    try:
        with open_published(settings) as published:
            return published.published_run_id() if published else None
    except Exception:  # an unreadable publication is "none" here; the run's own failure is what gets reported
        return None
