"""The fixed prose at the end: what the measurements changed, and how to reproduce them."""
from __future__ import annotations

from bench.report.markdown import render


def changes_section(r: dict) -> str:
    """What the measurements changed in the code (fixed prose)."""
    return render("benchmarks/changes.md.j2")


def reproduce_section(r: dict) -> str:
    """How to rerun the bench (fixed prose)."""
    return render("benchmarks/reproduce.md.j2")
