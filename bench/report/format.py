"""Markdown helpers the sections share: numbers, tables, verdicts, a load level by concurrency."""
from __future__ import annotations

import re
from pathlib import Path
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


def write_marked_section(markdown: Path, start: str, end: str, section: str,
                         anchor: str = "\n## What the measurements changed") -> Path:
    """Replace the part of `markdown` between the markers with `section` (which carries them), else put it in
    front of the `anchor` heading, else at the end; the rest of the file stays as it is."""
    text = markdown.read_text() if markdown.exists() else ""
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif anchor in text:
        head, tail = text.split(anchor, 1)
        text = head.rstrip() + "\n\n" + section + "\n\n" + anchor.lstrip("\n") + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    markdown.write_text(text)
    return markdown
