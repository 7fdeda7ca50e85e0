"""The Bulk section of BENCHMARKS.md from a saved bench/bulk.py record: its ratios, the comparison with an earlier
record, and a record too small for a steady rate. No Ray, no model: only the report code runs."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from bench.report import bulk

RECORD = Path(__file__).parents[2] / "bench" / "baselines" / "bulk-batch32-1a.json"


def test_the_ratios_are_the_records_figures_divided() -> None:
    record = json.loads(RECORD.read_text())
    f = bulk.bulk_figures(record)
    steady, gateway = record["batch"]["steady_photos_per_s"], record["gateway"]["photos_per_s"]
    ideal = record["machine"]["nproc"] / sum(record["extractor_cpu_s"].values())
    assert f["vs_gateway"] == steady / gateway and f["vs_ideal"] == steady / ideal
    resume = record["resume"]
    assert f["resume_ratio"] == (resume["killed"]["wall_s"] + resume["resumed"]["wall_s"]) / record["batch"]["wall_s"]
    text = bulk.bulk_section(record)
    assert text.startswith(bulk.START) and text.endswith(bulk.END)
    assert f"| {steady / gateway:.2f} | ≥ 1.3 |" in text and f"| {f['resume_ratio']:.2f} | ≤ 1.1 |" in text
    assert "CLIP SYNTHETIC" in text and "Before" not in text


def test_an_earlier_record_is_compared_and_a_small_run_has_no_steady_rate(tmp_path: Path) -> None:
    record = json.loads(RECORD.read_text())
    small = copy.deepcopy(record)
    del small["batch"]["steady_photos_per_s"]
    text = bulk.bulk_section(small, before=record, before_label="batch 32")
    assert "Before (batch 32): steady ÷ gateway" in text
    assert "| classify-batch photos/s, steady ÷ the gateway's" in text and "not measured" in text
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\n## What the measurements changed\n")
    bulk.write_section(record, page)
    bulk.write_section(record, page)  # replaced between its markers, not added twice
    assert page.read_text().count(bulk.START) == 1
