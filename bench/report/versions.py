"""BENCHMARKS.md "Model versions" from bench/results/versions.json (bench/versions.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.report.format import write_marked_section
from bench.report.markdown import render

START, END = "<!-- versions:start -->", "<!-- versions:end -->"
SHADOW_GOAL = 0.05  # shadow at 100%: the live p50 at most 5% slower


def versions_figures(record: dict) -> dict:
    """Memory per service (one version, two, the difference), the switch's counts and times, and per shadow share
    the live p50 and throughput ÷ the load alone in the same round (median over rounds)."""
    memory = record["memory"]
    cost = {name: memory["two_mb"][name] - memory["one_mb"][name] for name in memory["one_mb"]}
    shares = sorted({k for r in record["shadow"] for k in r if k != "alone"}, key=lambda k: -int(k[6:]))
    shadow = {}
    for share in shares:
        p50 = [r[share]["p50_ms"] / r["alone"]["p50_ms"] for r in record["shadow"]]
        rps = [r[share]["throughput_rps"] / r["alone"]["throughput_rps"] for r in record["shadow"]]
        copies = {k: sum(r[share]["shadow"].get(k, 0) for r in record["shadow"]) for k in ("answered", "failed",
                                                                                            "dropped")}
        errors = sum(r[share]["errors"] for r in record["shadow"])
        shadow[int(share[6:])] = {"p50_ratio": float(np.median(p50)), "p50_ratios": p50,
                                  "rps_ratio": float(np.median(rps)), "rps_ratios": rps, "copies": copies,
                                  "answers": sum(r[share]["n"] for r in record["shadow"]), "errors": errors}
    switch = record["switch"]
    return {"cost_mb": cost, "one_mb": memory["one_mb"], "two_mb": memory["two_mb"], "load_s": memory["load_s"],
            "switch": switch, "failed": sum(v for k, v in switch["statuses"].items() if k != "200"),
            "shadow": shadow, "alone_errors": sum(r["alone"]["errors"] for r in record["shadow"])}


def versions_section(record: dict) -> str:
    return render("benchmarks/versions.md.j2", start=START, end=END, r=record, f=versions_figures(record),
                  goal=SHADOW_GOAL)


def write_section(record: dict, markdown: Path) -> Path:
    """Replace the marked section of `markdown` (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, versions_section(record))
