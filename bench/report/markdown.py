"""The Jinja2 environment the reports render with: the page's shape in templates/, the figures from Python."""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from bench.report.format import num, table, verdict

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> jinja2.Environment:
    """Markdown, not HTML: no escaping; a missing figure is an error, never an empty cell. A line holding only
    a block tag ({% if %}, {% for %}) leaves nothing in the page, not even its line break."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(num=num, fmt=format)
    env.globals.update(table=table, verdict=verdict)
    return env


def render(template: str, **figures: Any) -> str:
    """One template under templates/ filled with `figures`; the line break ending its last line is not part of
    the text, so that the sections join as the Python that built them did."""
    return environment().get_template(template).render(**figures).removesuffix("\n")
