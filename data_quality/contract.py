"""The source data contract (``docs/data-contract.md``) as code, read from its one declaration.

Each entity's contract (its columns and their types, which are required, and the rules a row must keep,
each with the reason the quarantine shows) is declared once, as the var ``contract`` in
``dbt_project/dbt_project.yml``. dbt generates the ``*_checked`` and ``quarantine_*`` models and the
contract tests from it (``dbt_project/macros/contract.sql``); this module reads the same declaration for
Python: the ingest assets, the sample-data generator, the checks and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import yaml

DECLARATION = Path(__file__).resolve().parents[1] / "dbt_project" / "dbt_project.yml"

TYPES = ("text", "lower", "upper", "email", "phone", "country", "timestamp", "date", "number", "integer", "bool")
ROW_CHECKS = ("present", "parses", "finite", "min", "in_range", "accepted", "not_future", "not_before_earliest")
CHECKS = ROW_CHECKS + ("known_customer", "not_before_customer_created", "no_conflicting_duplicates", "not_outlier")


@dataclass(frozen=True)
class Rule:
    """One contract rule: ``check`` (see CHECKS) on ``column``, quarantining with ``reason``."""
    check: str
    reason: str
    column: str | None = None
    params: Mapping = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Entity:
    name: str
    key: str
    required: bool
    required_columns: tuple[str, ...]
    optional_columns: tuple[str, ...]
    types: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    rules: tuple[Rule, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required_columns + self.optional_columns

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every reason a row of this entity can be quarantined for, in rule order."""
        return tuple(rule.reason for rule in self.rules)

    def rule(self, check: str, column: str | None = None) -> Rule:
        """The rule of kind ``check`` (on ``column``); KeyError when the contract has none."""
        for rule in self.rules:
            if rule.check == check and (column is None or rule.column == column):
                return rule
        raise KeyError(f"{self.name}: no {check} rule" + (f" on {column}" if column else ""))


class ContractError(ValueError):
    """The declaration itself is malformed; the message names the entity and what to fix."""


def _entity(name: str, spec: dict) -> Entity:
    columns = spec["columns"]
    for column, props in columns.items():
        if props.get("type") not in TYPES:
            raise ContractError(f"contract {name}.{column}: type {props.get('type')!r} is not one of {', '.join(TYPES)}")
    rules = []
    for raw in spec["rules"]:
        raw = dict(raw)
        check, reason, column = raw.pop("check"), raw.pop("reason"), raw.pop("column", None)
        if check not in CHECKS:
            raise ContractError(f"contract {name}: unknown check {check!r} (one of {', '.join(CHECKS)})")
        if column is not None and column not in columns:
            raise ContractError(f"contract {name}: rule {check!r} names {column!r}, which is not a column")
        rules.append(Rule(check=check, reason=reason, column=column, params=MappingProxyType(raw)))
    return Entity(
        name=name,
        key=spec["key"],
        required=bool(spec["required"]),
        required_columns=tuple(c for c, p in columns.items() if p.get("required")),
        optional_columns=tuple(c for c, p in columns.items() if not p.get("required")),
        types=MappingProxyType({c: p["type"] for c, p in columns.items()}),
        rules=tuple(rules),
    )


def load(path: Path = DECLARATION) -> dict[str, Entity]:
    """Every entity of the declaration in ``path`` (dbt_project.yml's ``vars.contract``)."""
    declared = yaml.safe_load(Path(path).read_text())["vars"]["contract"]
    return {name: _entity(name, spec) for name, spec in declared.items()}


ENTITIES: dict[str, Entity] = load()
CUSTOMERS = ENTITIES["customers"]
ORDERS = ENTITIES["orders"]
INTERACTIONS = ENTITIES["interactions"]
CAMPAIGNS = ENTITIES["campaigns"]

ORDER_STATUSES = tuple(ORDERS.rule("accepted", "status").params["values"])
