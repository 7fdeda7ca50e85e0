"""Evaluation: metrics (binary and multi-class), ECE, the report with its plots, evaluate_models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.learning import evaluation
from shared.learning.report import Embedding, plot_note, write_report
from shared.config import Settings
from shared.learning.data import load_dataset, write_csv


def test_perfect_multiclass_predictions() -> None:
    y = np.array([0, 1, 2, 2])
    m = evaluation.compute_metrics(y, np.eye(3)[y])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["roc_auc"] == 1.0
    assert m["log_loss"] < 1e-6 and m["ece"] == pytest.approx(0.0)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_macro_f1_averages_over_the_classes_the_scored_set_has() -> None:
    # 4 trained classes, 2 of them absent here: perfect answers score 1.0, not 2/4.
    y = np.array([0, 0, 1, 1])
    assert evaluation.compute_metrics(y, np.eye(4)[y])["macro_f1"] == 1.0
    # An answer naming an absent class still costs the present class its recall: F1 (1 + 2/3) / 2.
    wrong = np.eye(4)[[0, 0, 1, 3]]
    assert evaluation.compute_metrics(y, wrong)["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_binary_roc_auc_scores_the_positive_column() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.65, 0.35], [0.2, 0.8]])
    assert evaluation.compute_metrics(y, proba)["roc_auc"] == pytest.approx(0.75)


def test_roc_auc_is_none_with_one_class_and_handles_absent_classes() -> None:
    assert evaluation.roc_auc(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]])) is None
    y = np.array([0, 0, 1, 1])  # class 2 never occurs in this set
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    assert evaluation.roc_auc(y, proba) == pytest.approx(1.0)


def test_expected_calibration_error_by_hand() -> None:
    # Two bins: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, 2 right).
    y = np.array([0, 1, 0, 0])
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert evaluation.expected_calibration_error(y, proba) == pytest.approx(expected)



def test_ece_by_chance_shrinks_with_more_images_and_is_zero_for_certain_answers() -> None:
    rng = np.random.default_rng(0)
    few, many = (evaluation.ece_by_chance(rng.dirichlet(np.ones(5), size=n), draws=200) for n in (100, 20_000))
    assert few["median"] > 0.02 and many["median"] < 0.01  # a calibrated model's ECE on 100 images is not ~0
    assert few["median"] <= few["p90"]
    assert evaluation.ece_by_chance(np.eye(3)[[0, 1, 2, 1]]) == {"median": 0.0, "p90": 0.0}

def test_report_says_synthetic_at_the_top_and_lists_skipped_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    probas = {name: rng.dirichlet(np.ones(3), size=30) for name in ("clip_svm", "ocr_nb", "stack")}
    results = evaluation.evaluate_probas(y, probas, ["a", "b", "c"])
    context = {"title": "Test", "synthetic": True, "data": {"source": "x.csv", "images": 31, "per_class": {}},
               "features": {"clip": {"model": "ViT-B-32", "pretrained": "synthetic", "synthetic": True},
                            "ocr": {"kind": "ocr", "langs": ["en"], "synthetic": False}},
               "skipped": [{"path": "broken.jpg", "reason": "truncated"}]}
    written = write_report(tmp_path, results, context, y, probas, Embedding(rng.normal(size=(30, 16)), y, "CLIP"))
    assert sorted(p.name for p in written) == ["confusion.png", "embedding_map.png", "metrics.json", "report.md",
                                                "roc.png"]
    report = (tmp_path / "report.md").read_text()
    assert report.splitlines()[2].startswith("> **SYNTHETIC WEIGHTS: CLIP.**")
    assert "NOT CLIP's accuracy" in report and "EasyOCR's" not in report and "The OCR weights are real." in report
    assert "`broken.jpg`: truncated" in report
    assert "| stack |" in report
    chance = json.loads((tmp_path / "metrics.json").read_text())["ece_by_chance"]["stack"]
    assert f"ECE is noisy on 30 images: a perfectly calibrated model with the stack's confidences would show " \
           f"{chance['median']:.4f} by chance" in report
    assert "- **CLIP**: ViT-B-32 / synthetic — SYNTHETIC (randomly initialised; not CLIP's accuracy)" in report
    assert "- **OCR**: EasyOCR en — real weights" in report
    for png in ("confusion.png", "roc.png", "embedding_map.png"):
        with Image.open(tmp_path / png) as img:
            assert img.format == "PNG" and img.width > 300
    assert json.loads((tmp_path / "metrics.json").read_text())["summary"]["stack"]["accuracy"] >= 0


def test_plot_note_names_only_the_synthetic_parts() -> None:
    assert plot_note({"ocr": "real", "clip": "synthetic"}) == \
        "SYNTHETIC CLIP weights (random init): not CLIP's accuracy"
    assert plot_note({"ocr": "synthetic", "clip": "synthetic"}) == \
        "SYNTHETIC OCR and CLIP weights (random init): not EasyOCR's or CLIP's accuracy"
    assert plot_note({"ocr": "real", "clip": "real"}) == ""


def test_real_weights_report_has_no_synthetic_banner(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    results = evaluation.evaluate_probas(y, {"stack": np.eye(2)[y]}, ["a", "b"])
    context = {"title": "T", "synthetic": False, "data": {"source": None, "images": 4, "per_class": {}},
               "features": {"clip": {"model": "ViT-B-32", "pretrained": "openai", "synthetic": False}}, "skipped": []}
    write_report(tmp_path, results, context, y, {"stack": np.eye(2)[y]}, None)
    report = (tmp_path / "report.md").read_text()
    assert "SYNTHETIC" not in report and "None: every image could be read." in report
    assert not (tmp_path / "embedding_map.png").exists()


def test_evaluate_models_scores_members_and_stack_and_skips_unreadable(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings, tmp_path: Path) -> None:
    records = load_dataset(trained_models.parent / "screenshots30.csv").records[::5]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    csv = write_csv([*records, (broken, "camera")], tmp_path / "eval.csv")
    results = evaluation.evaluate_models(trained_models, csv, tiny_weights, trained_settings, out=tmp_path / "out")
    assert set(results["summary"]) == {"clip_logreg", "clip_svm", "ocr_nb", "stack"}
    assert results["n"] == len(records)
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.splitlines()[2].startswith("> **SYNTHETIC WEIGHTS: CLIP.**")
    context = json.loads((tmp_path / "out" / "metrics.json").read_text())["context"]
    assert context["weights"] == {"ocr": "real", "clip": "synthetic"} and context["synthetic"] is True
    assert "broken.jpg" in report
    assert "the stack's probabilities are its forests' votes, uncalibrated" in report


def test_evaluate_models_scores_a_set_of_one_class(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings, tmp_path: Path) -> None:
    # A batch from one shelf: nothing to learn from, but something to score.
    records = [r for r in load_dataset(trained_models.parent / "screenshots30.csv").records if r[1] == "camera"][:4]
    results = evaluation.evaluate_models(trained_models, write_csv(records, tmp_path / "one.csv"), tiny_weights,
                                         trained_settings, out=tmp_path / "out")
    assert results["n"] == 4 and results["summary"]["stack"]["roc_auc"] is None
    assert (tmp_path / "out" / "report.md").exists()
