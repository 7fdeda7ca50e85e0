"""Replicas: one ocr_nb replica against two (and three) on the single-node Swarm stack (bench/replicas.py)."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import num, write_marked_section
from bench.report.markdown import render

START, END = "<!-- replicas:start -->", "<!-- replicas:end -->"


def replicas_section(record: dict) -> str:
    """The Replicas section, markers included: one row per replica count, and what the rows say."""
    m, rows, st = record["machine"], record["rows"], record["settings"]
    base = rows[0]["complete_per_s"] if rows and rows[0]["complete_per_s"] else None
    body = [[row["replicas"], num(row["answers_per_s"], 2), num(row["complete_per_s"], 2),
             num(row["complete_per_s"] / base, 2) if base else "–", num(row["p50_ms"], 0), num(row["p99_ms"], 0),
             row["degraded"], row["failed"],
             ", ".join(str(n) for _, n in sorted(row["ocr_answers_per_replica"].items())) or "–",
             num(row["load_average_after"], 1)] for row in rows]
    return render("benchmarks/replicas.md.j2", start=START, end=END, m=m, st=st, rows=body,
                  gains=[(row["replicas"], row["complete_per_s"] / base) for row in rows[1:]] if base else [])


def write_section(record: dict, markdown: Path) -> Path:
    """Replace the marked Replicas section of `markdown` (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, replicas_section(record))
