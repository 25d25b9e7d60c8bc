"""The nights as Dagster partitions: one daily partition per as-of date.

Every asset of the graph is partitioned by it (``definitions.py``), so the Dagster UI shows which nights ran and
which failed, and a backfill of a date range runs those nights, each back-dated to its date (the partition key
is the run's as-of date: ``PipelineSettings.setup_for_execution``). A night's partition is the date its data
runs up to: the 02:00 schedule runs yesterday's. ``crm-potential run --as-of D`` runs partition D; a run without
an as-of date takes the data's own latest order date and is not tied to a partition.

The first partition is ``partitions_start`` (``CRM_PARTITIONS_START``); the last is today in the run's time zone.
"""

from __future__ import annotations

from datetime import date

import dagster as dg


def nightly_partitions(start: str, timezone: str) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today is a partition too (a run --as-of today); the schedule picks yesterday's
    return dg.DailyPartitionsDefinition(start_date=start, timezone=timezone, end_offset=1)


def _from_settings() -> dg.DailyPartitionsDefinition:
    from orchestration.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    return nightly_partitions(settings.partitions_start, settings.timezone)


NIGHTLY_PARTITIONS = _from_settings()


def partition_of(as_of: date | str | None, partitions: dg.DailyPartitionsDefinition = NIGHTLY_PARTITIONS) -> str | None:
    """The partition key of a run as of ``as_of``: the date itself when it is one of the nights, else None (a date
    before the first partition, or a run whose as-of date the data decides)."""
    if not as_of:
        return None
    key = as_of if isinstance(as_of, str) else as_of.isoformat()
    return key if partitions.has_partition_key(key) else None


def partition_keys(first: date, last: date, partitions: dg.DailyPartitionsDefinition = NIGHTLY_PARTITIONS) -> list[str]:
    """The nights from ``first`` to ``last`` (inclusive) in date order, as partition keys."""
    window = dg.PartitionKeyRange(first.isoformat(), last.isoformat())
    return list(partitions.get_partition_keys_in_range(window))


def newest_source_order(settings) -> date | None:
    """A quick look at the source before a run: the newest plausible order date (between ``earliest_date`` and
    today). Only a guess of the night the run will be as of (the run itself decides, from the rows that keep the
    contract); None when the source cannot be read this way (the run then reports why)."""
    try:
        if settings.source_database is not None:
            return _newest_in_database(settings)
        return _newest_in_files(settings)
    except Exception:
        return None


def _plausible(found, settings) -> date | None:
    if found is None:
        return None
    found = found if isinstance(found, date) else date.fromisoformat(str(found)[:10])
    return found if date.fromisoformat(settings.earliest_date) <= found <= settings.today() else None


def _newest_in_files(settings) -> date | None:
    from pathlib import Path

    import duckdb

    from orchestration.csv_records import read_header
    from orchestration.source_files import find_files, normalise_column
    from orchestration.sql_quoting import quote_ident, quote_literal

    newest = None
    with duckdb.connect() as con:
        for path in find_files(Path(settings.source_dir), "orders"):
            parquet = path.suffix.lower() == ".parquet"
            names = ([r[0] for r in con.execute(f"describe select * from read_parquet({quote_literal(path)})").fetchall()]
                     if parquet else read_header(path))
            column = next((n for n in names if normalise_column(n) == "ordered_at"), None)
            if column is None:
                continue
            reader = (f"read_parquet({quote_literal(path)})" if parquet else
                      f"read_csv({quote_literal(path)}, header = true, all_varchar = true, ignore_errors = true)")
            found = con.execute(
                f"select max(d) from (select cast(try_cast(trim(cast({quote_ident(column)} as varchar)) as timestamp) "
                f"as date) as d from {reader}) where d between cast(? as date) and cast(? as date)",
                [settings.earliest_date, settings.today()]).fetchall()[0][0]
            newest = max(filter(None, (newest, found)), default=None)
    return _plausible(newest, settings)


def _newest_in_database(settings) -> date | None:
    from orchestration.postgres_url import ident, rows

    source = settings.source_database
    pg = source.url.connect("source")
    try:  # ISO timestamps sort as text; the text form works whatever type the column has
        found = rows(pg, f"select max(cast(ordered_at as text)) from {ident(source.url.schema)}.orders "
                         f"where cast(ordered_at as text) <= '{settings.today().isoformat()}~'")[0][0]
    finally:
        pg.close()
    return _plausible(found, settings)


def night_of_run(settings) -> tuple[str, dict[str, str]]:
    """The partition a run is filed under, and the tags that say where its as-of date comes from.

    A run with an as-of date that is one of the nights is that night. Otherwise the run is filed under the night
    the source seems to run up to (``newest_source_order``; today when that cannot be seen) and tagged
    ``AS_OF_FROM_TAG``: the partition does not set its as-of date."""
    from orchestration.settings import AS_OF_FROM_TAG

    key = partition_of(settings.as_of_date)
    if key:
        return key, {}
    guess = None if settings.as_of_date else newest_source_order(settings)
    key = partition_of(guess) or partition_of(settings.today()) or NIGHTLY_PARTITIONS.get_last_partition_key()
    return key, {AS_OF_FROM_TAG: "settings" if settings.as_of_date else "data"}
