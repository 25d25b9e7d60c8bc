"""Exact ranks and percentiles over every customer, in SQL that a distributed engine runs in parallel.

A window over every row (``rank() over (order by clv)``) has no partition: Spark sorts it in one task, so at
a hundred million customers one core ranks them all. Here the rows are cut into buckets by value, in the
ranking's order (cut points taken from a sample; ``bucket_sql`` finds a row's bucket with a binary search in a
``case``), each bucket is ranked on its own (``partition by bucket``), and a small table of the buckets' sizes
gives each bucket's offset. The result is the same as the one-window result, exactly, whatever the cut points:
ties share a value and so a bucket. With one bucket (``Warehouse.rank_buckets`` on DuckDB, whose windows run
in parallel already) the cut points are not sampled and the SQL is the plain window with a constant bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from orchestration.sql_quoting import quote_literal

SAMPLE_PER_BUCKET = 200  # sampled rows per bucket for the cut points
Key = tuple[str, bool]  # (column, descending)


def sample_rows(warehouse, source: str, columns: Sequence[str], buckets: int) -> pd.DataFrame | None:
    """Rows of ``source`` (a query with ``customer_id``) to take cut points from, drawn by the engine by md5 of
    the id; none when there is one bucket."""
    if buckets <= 1:
        return None
    return warehouse.frame(f"select {', '.join(columns)} from ({source}) s order by md5(customer_id) "
                           f"limit {buckets * SAMPLE_PER_BUCKET}")


def cut_points(sample: pd.DataFrame | None, keys: Sequence[Key], buckets: int) -> list[tuple]:
    """At most ``buckets - 1`` distinct cut points from ``sample``'s rows in the order of ``keys``, evenly
    spaced among them; none without a sample."""
    if sample is None or buckets <= 1:
        return []
    names = [name for name, _ in keys]
    rows = sample[names].dropna().sort_values(names, ascending=[not desc for _, desc in keys], kind="stable")
    points: list[tuple] = []
    for i in range(1, buckets if len(rows) else 1):
        point = tuple(_plain(v) for v in rows.iloc[len(rows) * i // buckets])
        if not points or point != points[-1]:
            points.append(point)
    return points


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # a decimal literal would be a DECIMAL on DuckDB: the text cast is exact
        return f"cast('{value!r}' as double)"
    return quote_literal(value)


def _before(keys: Sequence[Key], point: tuple) -> str:
    """SQL: the row comes strictly before ``point`` in the order of ``keys``."""
    (name, desc), *rest = keys
    value = _literal(point[0])
    first = f"{name} {'>' if desc else '<'} {value}"
    if not rest:
        return first
    return f"({first} or ({name} = {value} and {_before(rest, point[1:])}))"


def bucket_sql(keys: Sequence[Key], points: Sequence[tuple]) -> str:
    """SQL for a row's bucket: how many of ``points`` (sorted in the order of ``keys``) it does not come before,
    so the bucket never decreases along the order; ``0`` without points. The keys must not be null."""
    def search(lo: int, hi: int) -> str:
        if lo == hi:
            return str(lo)
        mid = (lo + hi) // 2
        return f"case when {_before(keys, points[mid])} then {search(lo, mid)} else {search(mid + 1, hi)} end"
    return search(0, len(points))


def _start(sizes: str, partition: str = "") -> str:
    """Each bucket's offset: the rows of the buckets before it (``sizes``: a query with ``bucket`` and ``n``)."""
    over = f"partition by {partition} " if partition else ""
    return (f"select {partition + ', ' if partition else ''}bucket, "
            f"cast(sum(n) over ({over}order by bucket rows between unbounded preceding and current row) - n as bigint)"
            f" as earlier, cast(sum(n) over ({over.strip()}) as bigint) as total from ({sizes}) sized")


def percentile_query(source: str, column: str, descending: bool, points: Sequence[tuple]) -> str:
    """``pct_value`` and ``pct`` for every non-null value of ``column`` in ``source``: pandas'
    ``rank(method="average", pct=True)``, the values before it plus the mean position among its ties, over the
    count of non-null values. Join it to the rows on the value."""
    order = "desc" if descending else "asc"
    return f"""
with d as (select {column} as pct_value, count(*) as n from ({source}) s where {column} is not null group by {column}),
b as (select pct_value, n, {bucket_sql([("pct_value", descending)], points)} as bucket from d),
o as ({_start("select bucket, sum(n) as n from b group by bucket")})
select b.pct_value,
       (cast(o.earlier + sum(b.n) over (partition by b.bucket order by b.pct_value {order}
                                       rows between unbounded preceding and current row) - b.n as double)
        + (cast(b.n as double) + 1) / 2) / o.total as pct
from b join o on o.bucket = b.bucket"""


def rank_query(source: str, keys: Sequence[Key], group: str, points: Sequence[tuple]) -> str:
    """``customer_id``, ``row_rank`` (1 = first in the order of ``keys``, which must end in a unique column) and
    ``group_pct`` (the row's position within the rows sharing ``group``, ordered by rank, over their number)
    for every row of ``source``."""
    order = ", ".join(f"p.{name} {'desc' if desc else 'asc'}" for name, desc in keys)
    return f"""
with p as (select customer_id, {group} as grp, {', '.join(name for name, _ in keys)},
                  {bucket_sql(keys, points)} as bucket from ({source}) s),
o as ({_start("select bucket, count(*) as n from p group by bucket")}),
ranked as (select p.customer_id, p.grp, p.bucket,
                  o.earlier + row_number() over (partition by p.bucket order by {order}) as row_rank
           from p join o on o.bucket = p.bucket),
g as ({_start("select grp, bucket, count(*) as n from ranked group by grp, bucket", "grp")})
select r.customer_id, r.row_rank,
       cast(g.earlier + row_number() over (partition by r.grp, r.bucket order by r.row_rank) as double) / g.total
       as group_pct
from ranked r join g on g.grp = r.grp and g.bucket = r.bucket"""
