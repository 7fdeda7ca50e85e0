"""predict_files: the stack's and every member's probabilities per file, unreadable files as errors; its text form."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import Settings
from shared.learning.data import load_dataset
from shared.learning.predict import format_prediction, predict_files


def test_predict_files_gives_stack_and_member_probabilities(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings, tmp_path: Path) -> None:
    paths = [p for p, _ in load_dataset(trained_models.parent / "screenshots30.csv").records[:2]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    results = predict_files(trained_models, tiny_weights, [*paths, broken], trained_settings)
    first = results[0]
    assert first["label"] in ("camera", "screenshots") and first["class_id"] in (0, 1)
    assert sum(first["probas"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(first["members"]) == {"clip_svm", "clip_logreg", "ocr_nb"}
    assert first["weights"] == {"ocr": "real", "clip": "synthetic"} and first["synthetic_weights"] is True
    assert "error" in results[2] and "not a supported image" in results[2]["error"]
    assert format_prediction(first).startswith(f"{paths[0]}: {first['label']} (")
    assert "[synthetic clip weights]" in format_prediction(first)
    rows = format_prediction(first).splitlines()[1:]  # the stack's probabilities, then each member's
    assert [row.split()[0] for row in rows] == ["stack", "clip_logreg", "clip_svm", "ocr_nb"]
    assert all(f"{label} " in row for row in rows for label in first["probas"])
    assert format_prediction(results[2]).startswith(f"{broken}: ERROR")
    json.dumps(results)  # the CLI's --json output
