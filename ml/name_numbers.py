"""Settings written as ``name=number`` lists (``"value=0.45,retention=0.25"``): parse and format."""

from __future__ import annotations


def parse_name_numbers(text: str, what: str, example: str) -> dict[str, float]:
    """``"a=1,b=0.5"`` -> ``{"a": 1.0, "b": 0.5}`` in the given order; a clear error names ``what`` and
    shows ``example`` when an item is not ``name=number``."""
    values: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, number = item.partition("=")
        try:
            values[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not name=number (e.g. {example})") from None
    return values


def format_name_numbers(values: dict[str, float]) -> str:
    """The inverse of ``parse_name_numbers`` (used for the settings' defaults)."""
    return ",".join(f"{name}={number:g}" for name, number in values.items())
