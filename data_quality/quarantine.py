"""What the quarantine holds: counts per entity and rule, and a sentence people can act on."""

from __future__ import annotations

import duckdb

from data_quality.contract import ENTITIES


def quarantine_counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    """{entity: {rule: rows}} from the quarantine schema (empty when it does not exist yet)."""
    counts: dict[str, dict[str, int]] = {}
    tables = {r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'quarantine'").fetchall()}
    for entity in ENTITIES:
        if f"quarantine_{entity}" in tables:
            rows = con.execute(
                f"select rule, count(*) from quarantine.quarantine_{entity} group by rule order by 2 desc, 1"
            ).fetchall()
            counts[entity] = {rule: int(n) for rule, n in rows}
    return counts


def raw_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = {r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'raw'").fetchall()}
    return {e: int(con.execute(f"select count(*) from raw.{e}").fetchall()[0][0]) for e in ENTITIES if e in tables}


def describe(counts: dict[str, dict[str, int]], raw: dict[str, int], threshold: float) -> list[str]:
    """One line per entity with quarantined rows, e.g.
    ``orders: 41 of 9,936 rows (0.41%, limit 1.00%) break the contract: 30 x negative amount; ...``."""
    lines = []
    for entity, rules in counts.items():
        total = sum(rules.values())
        if not total:
            continue
        n = raw.get(entity, 0)
        share = total / n if n else 0.0
        detail = "; ".join(f"{k} x {rule}" for rule, k in rules.items())
        over = " OVER THE LIMIT" if share > threshold else ""
        lines.append(
            f"{entity}: {total:,} of {n:,} rows ({share:.2%}, limit {threshold:.2%}{over}) break the contract: "
            f"{detail} (rows in quarantine.quarantine_{entity})"
        )
    return lines
