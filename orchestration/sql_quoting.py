"""Quoting for the few SQL texts that cannot take a parameter (``comment on``, table names, ``read_csv``
paths inside a larger statement): every literal and identifier built from input goes through these two."""

from __future__ import annotations


def quote_literal(value: object) -> str:
    """A SQL string literal: ``O'Brien`` -> ``'O''Brien'``."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_ident(*parts: object) -> str:
    """A quoted, dotted SQL identifier: ``("catalog", "schema", "table")`` -> ``"catalog"."schema"."table"``."""
    return ".".join('"' + str(p).replace('"', '""') + '"' for p in parts)
