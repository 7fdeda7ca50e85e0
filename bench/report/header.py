"""The opening of BENCHMARKS.md: what was measured, on which machine, with which settings; the plot."""
from __future__ import annotations

from pathlib import Path

from bench.report.markdown import render


def header_section(r: dict) -> str:
    """Title, what the weights are, the machine and the settings as shipped."""
    m = r.get("machine", {})
    recorded = [f"{name} {when[11:16]}" for name, when in r.get("_recorded", {}).items() if name != "machine"]
    return render("benchmarks/header.md.j2", m=m, s=m.get("settings", {}), recorded=recorded)


def plot_section(plot: Path | None, out: Path) -> str:
    """The load plot, linked relative to the report; empty without one."""
    return render("benchmarks/plot.md.j2", plot=plot.relative_to(out.parent) if plot else None)
