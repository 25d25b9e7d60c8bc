"""Blocks of customers that every engine forms the same way: the first hex digits of ``md5(customer_id)``.

A step whose result for a customer depends on the customers around it (the value intervals' simulation is
seeded per block; scoring hands a customer's category rows to the same call as the customer) works on whole
blocks: DuckDB cuts its batches between blocks, Spark groups by the block (``Warehouse.write_mapped(group=)``).
md5 and substr are portable SQL, so the blocks do not depend on the engine or on how it partitions the rows.
"""

from __future__ import annotations

BLOCK_ROWS = 20_000  # customers per block, at most (about: md5's first digits split them evenly)


def block_key(column: str, customers: int, rows: int = BLOCK_ROWS) -> str:
    """SQL for the block of ``column`` (a customer id): as many hex digits as keep a block of ``customers``
    near ``rows`` (at least one digit)."""
    digits = 1
    while customers / 16 ** digits > rows:
        digits += 1
    return f"substr(md5({column}), 1, {digits})"
