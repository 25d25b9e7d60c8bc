"""What the quarantine holds: counts per entity and rule, and sentences people can act on.

The sentences name rules, files, row numbers and counts, never a value from a row (values may be
e-mails, phones or names; the rows themselves are in the quarantine tables for whoever may read them).
"""

from __future__ import annotations

from pathlib import Path

from data_quality.contract import ENTITIES


def quarantine_counts(warehouse) -> dict[str, dict[str, int]]:
    """{entity: {rule: rows}} from the quarantine schema of the warehouse (``orchestration/warehouse.py``; empty
    when it does not exist yet)."""
    counts: dict[str, dict[str, int]] = {}
    tables = set(warehouse.tables("quarantine"))
    for entity in ENTITIES:
        if f"quarantine_{entity}" in tables:
            rows = warehouse.rows(
                f"select rule, count(*) from quarantine.quarantine_{entity} group by rule order by 2 desc, 1")
            counts[entity] = {rule: int(n) for rule, n in rows}
    return counts


def raw_counts(warehouse) -> dict[str, int]:
    """Rows per entity in the source: the rows loaded into ``raw`` plus the lines the ingest could not read as
    records (``raw.<entity>_rejects``, when there is one), in the warehouse of the run's engine."""
    tables = set(warehouse.tables("raw"))
    counts = {}
    for entity in ENTITIES:
        if entity not in tables:
            continue
        n = int(warehouse.scalar(f"select count(*) from raw.{entity}"))
        if f"{entity}_rejects" in tables:
            n += int(warehouse.scalar(f"select count(*) from raw.{entity}_rejects"))
        counts[entity] = n
    return counts


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


def rows_of_rule(warehouse, entity: str, rule: str) -> list[tuple[str, int]]:
    """(source file, row number) of every row of ``entity`` that broke ``rule`` (from the contract step's
    ``staging.stg_<entity>_checked``, in the warehouse: ``orchestration/warehouse.py``), in file order."""
    return [(str(f), int(r)) for f, r in warehouse.rows(
        f"select _source_file, _source_row from staging.stg_{entity}_checked where reject_reason = ? "
        "order by _source_file, _source_row", [rule])]


def name_rows(rows: list[tuple[str, int]], limit: int = 10) -> str:
    """``orders.csv rows 12, 57 to 60; orders_2.csv row 4 (and 30 more rows)``: where the rows are (data
    rows, counted from 1 after the header), never what they hold. At most ``limit`` runs of consecutive rows.
    Numbers carry thousands separators, and runs read "to", so that no row number looks like a phone number
    to the PII scrub of stored messages (data_quality/pii.py)."""
    runs: list[tuple[str, int, int]] = []  # (file name, first row, last row)
    for file, row in rows:
        name = Path(file).name
        if runs and runs[-1][0] == name and runs[-1][2] == row - 1:
            runs[-1] = (name, runs[-1][1], row)
        else:
            runs.append((name, row, row))
    shown = runs[:limit]
    hidden = sum(last - first + 1 for _, first, last in runs[limit:])
    by_file: dict[str, list[str]] = {}
    for name, first, last in shown:
        by_file.setdefault(name, []).append(f"{first:,}" if first == last else f"{first:,} to {last:,}")
    text = "; ".join(f"{name} row{'s' if len(parts) > 1 or ' to ' in parts[0] else ''} {', '.join(parts)}"
                     for name, parts in by_file.items())
    return text + (f" (and {hidden:,} more rows)" if hidden else "")
