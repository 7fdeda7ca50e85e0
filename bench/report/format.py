"""Markdown helpers the sections share: numbers, tables, verdicts, a load level by concurrency."""
from __future__ import annotations

from typing import Any, Iterable


def num(value: Any, digits: int = 1) -> str:
    """A number with thousands separators and `digits` decimals; – for none."""
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float | None, goal: float, at_most: bool) -> str:
    """Whether a figure meets its goal, in words."""
    if value is None:
        return "not measured"
    return "met" if (value <= goal if at_most else value >= goal) else "**not met**"


def level(levels: list[dict], concurrency: int) -> dict | None:
    """The row of a load run at this concurrency, if measured."""
    return next((row for row in levels if row["concurrency"] == concurrency), None)
