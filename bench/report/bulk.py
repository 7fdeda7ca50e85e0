"""Bulk: classify-batch against the gateway, serial predict and the CPU-bound ideal (bench/bulk.py)."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import write_marked_section
from bench.report.markdown import render

START, END = "<!-- bulk:start -->", "<!-- bulk:end -->"


def bulk_figures(record: dict) -> dict:
    """The ratios the section states, from the raw record: end to end (start-up included) and steady (from the
    first Parquet part to the last, once Ray and the actors are up, as the gateway's rate is measured)."""
    n, cores = record["photos"], record["machine"]["nproc"]
    batch, steady = n / record["batch"]["wall_s"], record["batch"].get("steady_photos_per_s")
    ideal = cores / sum(record["extractor_cpu_s"].values())
    gateway, serial = record["gateway"]["photos_per_s"], record["serial"]["photos_per_s"]
    resume = record["resume"]
    return {
        "batch_per_s": batch, "steady_per_s": steady, "gateway_per_s": gateway, "serial_per_s": serial,
        "ideal_per_s": ideal, "vs_gateway": steady / gateway if steady else None,
        "vs_ideal": steady / ideal if steady else None, "vs_gateway_end_to_end": batch / gateway,
        "vs_ideal_end_to_end": batch / ideal, "vs_serial": batch / serial,
        "startup_s": record["batch"]["wall_s"] - n / steady if steady else None,
        "resume_ratio": (resume["killed"]["wall_s"] + resume["resumed"]["wall_s"]) / record["batch"]["wall_s"],
        "two_nodes_ratio": record["two_nodes"]["wall_s"] / record["batch"]["wall_s"],
        "costs": " + ".join(f"{kind} {seconds:.3f}" for kind, seconds in record["extractor_cpu_s"].items()),
    }


def bulk_section(record: dict, before: dict | None = None, before_label: str = "") -> str:
    """The Bulk section, markers included; `before`: an earlier record to compare with (a performance change)."""
    return render("benchmarks/bulk.md.j2", start=START, end=END, r=record, m=record["machine"],
                  f=bulk_figures(record), b=bulk_figures(before) if before else None, before_label=before_label)


def write_section(record: dict, markdown: Path, before: dict | None = None, before_label: str = "") -> Path:
    """Replace the marked Bulk section of `markdown` (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, bulk_section(record, before, before_label))
