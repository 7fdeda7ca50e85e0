"""The loop's report sections from saved records (bench/loop.py -> ACCURACY.md, bench/labels.py -> BENCHMARKS.md):
goals judged from the figures, sections replaced between their markers. Only the report code runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import history_db, labels, loop


def scores(f1: float, ece: float = 0.05) -> dict:
    return {"macro_f1": f1, "ece": ece, "accuracy": f1}


def loop_payload(restacked_f1: float) -> dict:
    queue = {f"{fraction}:{how}:{what}": scores(0.6) for fraction in ("0.25", "0.5") for how in ("queue", "random")
             for what in ("calibrate", "restack")} | {"repeats": 3, "pool": 50, "held": 50}
    task = {"title": "(b) Packages", "val": 100, "train": 864, "classes": 31, "review_queue": queue,
            "halves": {"as_trained": scores(0.63), "calibrated": scores(0.63, 0.08), "restacked": scores(restacked_f1),
                       "calibrated_ece_by_chance_p90": {"ece": 0.13},
                       "members": {"ocr_nb": scores(0.61), "clip_svm": scores(0.2)}, "repeats": 3},
            "false_alarms": {source: {"windows": 200, "flagged_share": share, "flagged_by_test": {"ocr_nb": share}}
                             for source, share in (("training", 1.0), ("traffic", 0.02))},
            "shifts": {"screenshots": {"training": {"answers": 40, "windows": 0.8, "shifted_photos": 200,
                                                    "flagged_by": ["ocr_nb"]},
                                       "traffic": {"answers": None, "shifted_photos": 200}}}}
    return {"tasks": {"b_packages": task}, "weights": "clip SYNTHETIC, ocr real",
            "drift": {"window": 50, "alpha": 0.01, "every": 10}}


def test_the_loop_section_judges_restacking_against_the_best_member(tmp_path: Path) -> None:
    met, missed = loop.loop_section(loop_payload(0.65)), loop.loop_section(loop_payload(0.55))
    assert met.startswith(loop.START) and met.endswith(loop.END)
    assert "best member (ocr_nb, 0.610): **met**" in met and "**not met**" in missed
    assert "| answers until flagged, shift to screenshots (200 photos) | 40 (0.8 windows; ocr_nb) | not flagged | ≤ 2" \
        in met
    assert "| 100.0% (ocr_nb 100%) | 2.0% (ocr_nb 2%) | ≤ 5% |" in met
    assert "SYNTHETIC" in met
    page = tmp_path / "ACCURACY.md"
    page.write_text("# Accuracy\n\n## What the real OCR reads\n")
    loop.write_section(loop_payload(0.65), page)
    loop.write_section(loop_payload(0.55), page)
    text = page.read_text()
    assert text.count(loop.START) == 1 and "**not met**" in text
    assert text.index(loop.START) < text.index("## What the real OCR reads")


def test_the_cost_section_states_ratios_per_round_and_the_label_latency(tmp_path: Path) -> None:
    def phase(p50: float, rps: float) -> dict:
        return {"p50_ms": p50, "throughput_rps": rps, "errors": 0}

    rounds = [{"alone": phase(1000, 3.0), "labelling": phase(1010, 2.97), "label_ms": [5.0] * 99 + [60.0],
               "read_ms": [20.0, 30.0], "label_errors": []},
              {"alone": phase(1100, 2.8), "labelling": phase(1100, 2.8), "label_ms": [6.0] * 100, "read_ms": [25.0],
               "label_errors": []}]
    record = {"rounds": rounds, "concurrency": 4, "duration_s": 50, "labels_per_s": 2.0, "reads_every": 30,
              "machine": {"nproc": 2}}
    f = labels.labels_figures(record)
    assert f["p50_ratio"] == (1.01 + 1.0) / 2 and f["labels"] == 200 and f["label_errors"] == 0
    text = labels.labels_section(record)
    assert "| gateway p50, labelling ÷ alone | 1.005 (1.01, 1.00)" in text and "| met |" in text
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\n## What the measurements changed\n")
    labels.write_section(record, page)
    assert page.read_text().count(labels.START) == 1


def test_the_history_backends_section_states_ratios_per_round_and_every_answer_recorded(tmp_path: Path) -> None:
    def phase(p50: float, rps: float, answers: int, records: int) -> dict:
        return {"p50_ms": p50, "throughput_rps": rps, "errors": 0, "answers": answers, "records": records}

    rounds = [{"sqlite": phase(1000, 3.0, 100, 100), "postgresql": phase(1020, 2.94, 98, 98)},
              {"postgresql": phase(1100, 2.8, 90, 89), "sqlite": phase(1100, 2.8, 90, 90)}]
    record = {"rounds": rounds, "concurrency": 4, "duration_s": 45, "postgresql": "15.18", "machine": {"nproc": 2}}
    f = history_db.history_db_figures(record)
    assert f["p50_ratio"] == pytest.approx((1.02 + 1.0) / 2) and (f["answers"], f["records"]) == (378, 377)
    text = history_db.history_db_section(record)
    assert "| gateway p50, PostgreSQL ÷ SQLite | 1.010 (1.02, 1.00)" in text
    assert "| answers recorded | 377 of 378 | all | not met |" in text
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n")
    history_db.write_section(record, page)
    history_db.write_section(record, page)
    assert page.read_text().count(history_db.START) == 1


def test_the_versions_section_judges_the_switch_and_the_shadow(tmp_path: Path) -> None:
    from bench.report import versions

    def phase(p50: float, rps: float, answered: int = 0) -> dict:
        return {"p50_ms": p50, "throughput_rps": rps, "errors": 0, "n": 100,
                "shadow": {"answered": answered, "failed": 0, "dropped": 0}}

    record = {"concurrency": 4, "duration_s": 40, "versions": ["aaa", "bbb"], "machine": {"nproc": 2},
              "memory": {"one_mb": {"ocr_nb": 900.0, "stacking": 200.0}, "two_mb": {"ocr_nb": 912.0, "stacking": 203.0},
                         "load_s": 4.2},
              "switch": {"answers": 300, "statuses": {"200": 300}, "degraded": 0, "mixed": 0,
                         "by_version": {"aaa": 200, "bbb": 100}, "old_version_after_switch": 0,
                         "switches": [{"version": "bbb", "seconds": 1.2, "at": 0}, {"version": "aaa", "seconds": 0.9,
                                                                                    "at": 10}]},
              "shadow": [{"alone": phase(1000, 3.0), "shadow100": phase(1900, 1.6, 60), "shadow10": phase(1020, 2.9, 9)},
                         {"alone": phase(1100, 2.8), "shadow100": phase(2000, 1.5, 55), "shadow10": phase(1100, 2.8, 8)}]}
    f = versions.versions_figures(record)
    assert f["cost_mb"] == {"ocr_nb": 12.0, "stacking": 3.0} and f["failed"] == 0
    assert list(f["shadow"]) == [100, 10] and f["shadow"][100]["copies"]["answered"] == 115
    text = versions.versions_section(record)
    assert text.startswith(versions.START) and text.endswith(versions.END)
    assert "| ocr_nb | 900 MB | 912 MB | +12 MB |" in text
    assert "| failed answers | 0 of 300 | 0 | met |" in text
    assert "| 100% | 1.859" in text and "not met" in text  # the shadow at 100% on 2 busy cores
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n")
    versions.write_section(record, page)
    versions.write_section(record, page)
    assert page.read_text().count(versions.START) == 1
