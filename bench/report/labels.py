"""BENCHMARKS.md "The loop's cost" from bench/results/labels.json (bench/labels.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.report.format import write_marked_section
from bench.report.markdown import render

START, END = "<!-- labels:start -->", "<!-- labels:end -->"
LABEL_P99_GOAL_MS, NOISE = 50.0, 0.05


def labels_figures(record: dict) -> dict:
    """Per round, labelling ÷ alone for the gateway's p50 and throughput (median over rounds); label and read
    latencies pooled over the loaded rounds."""
    rounds = record["rounds"]
    p50 = [r["labelling"]["p50_ms"] / r["alone"]["p50_ms"] for r in rounds]
    rps = [r["labelling"]["throughput_rps"] / r["alone"]["throughput_rps"] for r in rounds]
    labels = [ms for r in rounds for ms in r["label_ms"]]
    reads = [ms for r in rounds for ms in r["read_ms"]]
    return {"p50_ratio": float(np.median(p50)), "p50_ratios": p50, "rps_ratio": float(np.median(rps)),
            "rps_ratios": rps, "labels": len(labels), "label_errors": sum(len(r["label_errors"]) for r in rounds),
            "label_p50_ms": float(np.percentile(labels, 50)) if labels else None,
            "label_p99_ms": float(np.percentile(labels, 99)) if labels else None,
            "read_p50_ms": float(np.percentile(reads, 50)) if reads else None,
            "read_p99_ms": float(np.percentile(reads, 99)) if reads else None,
            "failed": sum(r[p]["errors"] for r in rounds for p in ("alone", "labelling")),
            "alone_p50_ms": float(np.median([r["alone"]["p50_ms"] for r in rounds])),
            "alone_rps": float(np.median([r["alone"]["throughput_rps"] for r in rounds]))}


def labels_section(record: dict) -> str:
    return render("benchmarks/labels.md.j2", start=START, end=END, r=record, f=labels_figures(record),
                  goal_ms=LABEL_P99_GOAL_MS, noise=NOISE)


def write_section(record: dict, markdown: Path) -> Path:
    """Replace the marked section of `markdown` (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, labels_section(record))
