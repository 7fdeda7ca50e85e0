"""BENCHMARKS.md from bench/results/*.json: machine, raw tables, ratios against the goals.

One module per part of the report, in the order it appears: `header` (machine, settings, plot), `goals` (the
ratios against the goals and how to read them), `serving` (members alone, the gateway, batching slack, idle
threads), `batching`, `ocr`, `training` (feature extraction), `memory` (start-up and RSS), `notes` (what the
measurements changed, how to reproduce). `ratios` and `format` are the figures and the Markdown they share.
Each section computes its figures and table rows here and renders a template of bench/report/templates/ (`markdown`):
the page's prose and layout live in the templates, ACCURACY.md's too (bench/accuracy_report.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.plots import plot_load
from bench.report.batching import batching_section
from bench.report.cache import cache_section
from bench.report.goals import goals_section
from bench.report.header import header_section, plot_section
from bench.report.memory import memory_and_startup_section
from bench.report.notes import changes_section, reproduce_section
from bench.report.ocr import ocr_section
from bench.report.resilience import resilience_section
from bench.report.serving import (
    gateway_section,
    members_section,
    slack_section,
    spin_section,
)
from bench.report.training import features_section


def recorded_times(folder: Path) -> dict[str, str]:
    """When each <name>.json was recorded (UTC)."""
    return {path.stem: json.loads(path.read_text()).get("recorded_utc", "?") for path in sorted(Path(folder).glob("*.json"))}


def load_results(folder: Path) -> dict[str, dict]:
    """The result in every <name>.json of the folder, by name."""
    return {path.stem: json.loads(path.read_text())["result"] for path in sorted(Path(folder).glob("*.json"))}


def write_report(folder: Path, out: Path) -> Path:
    """Render the results in `folder` as Markdown into `out`."""
    r = load_results(folder)
    plot = plot_load(r, out.parent / "bench" / "load.png")
    r["_recorded"] = recorded_times(folder)
    out.write_text(render(r, plot, out))
    return out


def render(r: dict, plot: Path | None, out: Path) -> str:
    """The whole report: every section that has results, in order."""
    parts = [header_section(r), goals_section(r), plot_section(plot, out), members_section(r), gateway_section(r),
             slack_section(r), spin_section(r), cache_section(r), batching_section(r), ocr_section(r), features_section(r),
             memory_and_startup_section(r), _resilience(r, out), changes_section(r), reproduce_section(r)]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def _resilience(r: dict, out: Path) -> str:
    """The Resilience section (bench/resilience.py writes it alone too), with its plot when there is one."""
    plot = out.parent / "bench" / "resilience.png"
    return resilience_section(r, plot if plot.exists() else None, out)
