"""BENCHMARKS.md "The history on PostgreSQL" from bench/results/history_db.json (bench/history_db.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.report.format import write_marked_section
from bench.report.markdown import render

START, END = "<!-- history-db:start -->", "<!-- history-db:end -->"
NOISE = 0.05


def history_db_figures(record: dict) -> dict:
    """Per round, PostgreSQL ÷ SQLite for the gateway's p50 and throughput (median over rounds); every answer a
    record."""
    rounds = record["rounds"]
    p50 = [r["postgresql"]["p50_ms"] / r["sqlite"]["p50_ms"] for r in rounds]
    rps = [r["postgresql"]["throughput_rps"] / r["sqlite"]["throughput_rps"] for r in rounds]
    phases = [r[b] for r in rounds for b in ("sqlite", "postgresql")]
    return {"p50_ratio": float(np.median(p50)), "p50_ratios": p50, "rps_ratio": float(np.median(rps)),
            "rps_ratios": rps, "failed": sum(p["errors"] for p in phases),
            "answers": sum(p["answers"] for p in phases), "records": sum(p["records"] for p in phases),
            "sqlite_p50_ms": float(np.median([r["sqlite"]["p50_ms"] for r in rounds])),
            "postgresql_p50_ms": float(np.median([r["postgresql"]["p50_ms"] for r in rounds])),
            "sqlite_rps": float(np.median([r["sqlite"]["throughput_rps"] for r in rounds])),
            "postgresql_rps": float(np.median([r["postgresql"]["throughput_rps"] for r in rounds]))}


def history_db_section(record: dict) -> str:
    return render("benchmarks/history_db.md.j2", start=START, end=END, r=record, f=history_db_figures(record),
                  noise=NOISE)


def write_section(record: dict, markdown: Path) -> Path:
    """Replace the marked section of `markdown` (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, history_db_section(record))
