"""The reports rendered from their templates match, byte for byte, the Markdown the string-building code rendered.

tests/bench/fixtures/ holds results as the benches save them (bench/results/*.json after BENCHMARKS.md's figures;
the committed accuracy results); tests/bench/golden/ holds what the code before the templates rendered from them.
No model, no measurement: only the report code runs.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import accuracy_report, report
from bench.report import replicas, resilience

HERE = Path(__file__).parent
FIXTURES, GOLDEN = HERE / "fixtures", HERE / "golden"
BASELINE = HERE.parents[1] / "bench" / "baselines" / "resilience-dd503e4.json"


def _golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def _results() -> dict:
    """The fixture results as `python -m bench.run --report-only` loads them."""
    r = report.load_results(FIXTURES / "results")
    r["_recorded"] = report.recorded_times(FIXTURES / "results")
    return r


def test_benchmarks_from_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    assert report.render(_results(), tmp_path / "bench" / "load.png", out) == _golden("BENCHMARKS.md")


def test_benchmarks_without_results(tmp_path: Path) -> None:
    assert report.render({}, None, tmp_path / "BENCHMARKS.md") == _golden("BENCHMARKS-empty.md")


def test_resilience_section_of_an_older_record() -> None:
    """The committed baseline: one admission limit for every service, no run before it, no notes."""
    record = json.loads(BASELINE.read_text())
    assert resilience.resilience_section({"resilience": record}) == _golden("resilience-baseline.md")


def test_resilience_section_as_its_bench_writes_it(tmp_path: Path) -> None:
    """The record as bench/resilience.py saves it (recorded_utc beside the result), with its plot linked."""
    record = json.loads((FIXTURES / "results" / "resilience.json").read_text())
    section = resilience.resilience_section({"resilience": record}, tmp_path / "bench" / "resilience.png",
                                            tmp_path / "BENCHMARKS.md")
    assert section == _golden("resilience.md")


@pytest.mark.parametrize(("rows", "golden"), [(slice(None), "replicas.md"), (slice(1), "replicas-one.md")])
def test_replicas_section(rows: slice, golden: str) -> None:
    record = json.loads((FIXTURES / "replicas.json").read_text())
    record["rows"] = record["rows"][rows]
    assert replicas.replicas_section(record) == _golden(golden)


def test_replicas_written_between_markers(tmp_path: Path) -> None:
    """Written twice into a page: the second run replaces the first, the rest of the page stays."""
    record = json.loads((FIXTURES / "replicas.json").read_text())
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\n## What the measurements changed\n\n- x\n")
    replicas.write_section(record, page)
    once = page.read_text()
    replicas.write_section(record, page)
    assert page.read_text() == once
    assert once == "# Benchmarks\n\n" + _golden("replicas.md") + "\n\n## What the measurements changed\n\n- x\n"


def _accuracy() -> dict:
    return json.loads((FIXTURES / "accuracy" / "accuracy.json").read_text())


def test_accuracy_with_the_ocr_results() -> None:
    text = accuracy_report.render_report(_accuracy(), FIXTURES / "accuracy" / "ocr_sizes.json",
                                         FIXTURES / "accuracy" / "craft_int8.json")
    assert text + "\n" == _golden("ACCURACY.md")


def test_accuracy_without_the_ocr_results(tmp_path: Path) -> None:
    text = accuracy_report.render_report(_accuracy(), tmp_path / "absent.json", tmp_path / "absent.json")
    assert text + "\n" == _golden("ACCURACY-no-ocr-files.md")


def test_accuracy_from_a_lean_payload() -> None:
    """No detect side, no detector, no text variants: the sentences and the section that need them drop out."""
    payload = copy.deepcopy(_accuracy())
    for key in ("ocr_detect_side", "ocr_detector", "text_variants"):
        payload.pop(key)
    text = accuracy_report.render_report(payload, FIXTURES / "accuracy" / "ocr_sizes.json",
                                         FIXTURES / "accuracy" / "craft_int8.json")
    assert text + "\n" == _golden("ACCURACY-bare.md")
