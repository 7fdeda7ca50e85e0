"""Training: the manifest it writes, the feature cache on a second run, tiny datasets."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from shared import artifacts
from shared.config import Settings
from shared.learning.data import Dataset, load_dataset, write_csv
from shared.errors import DatasetError
from shared.learning.training import choose_folds, feature_splits, member_kinds, split_dataset, train
from shared.members import member, member_names


def test_trained_models_folder_has_every_artifact_hashed(trained_models: Path) -> None:
    manifest = artifacts.load_manifest(trained_models)
    files = set(manifest["files"])
    assert {f"learners/{n}.skops" for n in ("clip_svm", "clip_logreg", "ocr_nb")} <= files
    assert len([f for f in files if f.startswith("meta/")]) == 7
    assert {"report/report.md", "report/metrics.json", "report/confusion.png", "report/roc.png",
            "report/embedding_map.png"} <= files
    assert manifest["classes"] == ["camera", "screenshots"]
    assert manifest["synthetic_weights"] is True and manifest["weights"] == {"ocr": "real", "clip": "synthetic"}
    assert manifest["features"]["clip"]["model"] == "ViT-Tiny-Synthetic"
    assert manifest["training"]["folds"] == 3
    assert manifest["training"]["train"]["images"] == 48 and manifest["training"]["test"]["images"] == 12
    assert set(manifest["metrics"]) == {"clip_svm", "clip_logreg", "ocr_nb", "stack"}
    assert manifest["learner_features"] == {name: member(name).extractor for name in member_names()}
    assert set(manifest["features"]) == set(member_kinds()) == {"clip", "ocr"}


def test_training_report_says_synthetic(trained_models: Path) -> None:
    report = (trained_models / "report" / "report.md").read_text()
    assert report.startswith("# Training report\n\n> **SYNTHETIC WEIGHTS: CLIP.**")
    assert "The OCR weights are real." in report and "NOT CLIP's accuracy" in report and "EasyOCR's" not in report
    assert "- **OCR**: EasyOCR en — real weights" in report
    assert ("- **CLIP**: ViT-Tiny-Synthetic / synthetic — SYNTHETIC (randomly initialised; not CLIP's accuracy)"
            in report)


def test_second_train_recomputes_no_features_skips_unreadable_and_reduces_folds(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not an image")
    records = load_dataset(trained_models.parent / "screenshots30.csv").records
    csv = write_csv([*records, (broken, "camera")], tmp_path / "with_broken.csv")
    with caplog.at_level(logging.INFO, logger="shared.learning.training"):
        manifest = train(csv, tmp_path / "models", tiny_weights, trained_settings, folds=50, seed=1)
    stats = manifest["training"]["feature_stats"]
    assert stats["clip"]["misses"] == 0 and stats["ocr"]["misses"] == 0
    assert [s["path"] for s in manifest["training"]["skipped"]] == [str(broken)]
    assert manifest["training"]["folds"] < 50
    assert "reducing folds from 50" in caplog.text
    assert "[weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)]" in caplog.text
    assert str(broken) in (tmp_path / "models" / "report" / "report.md").read_text()


def test_feature_splits_are_the_sides_train_fitted_and_scored(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings) -> None:
    manifest = artifacts.load_manifest(trained_models)
    fit, held_out = feature_splits(trained_models.parent / "screenshots30.csv", tiny_weights, trained_settings, seed=0)
    assert (len(fit.y), len(held_out.y)) == (48, 12) == (manifest["training"]["train"]["images"],
                                                         manifest["training"]["test"]["images"])
    assert fit.member_input("clip_svm").shape[0] == 48 and len(fit.member_input("ocr_nb")) == 48
    assert set(held_out.dataset.paths).isdisjoint(fit.dataset.paths)


def test_calibration_data_fits_a_temperature_per_meta_model_that_serving_loads(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings, tmp_path: Path) -> None:
    from shared.learning.meta_model import MetaEnsemble

    trained_on = {p.resolve() for p in load_dataset(trained_models.parent / "screenshots30.csv").paths}
    root = Path(trained_settings.datasets_dir) / "screenshots"
    batch = [(p, label) for label in ("camera", "screenshots")
             for p in [q for q in sorted((root / label).glob("*.jpg")) if q.resolve() not in trained_on][:10]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    calibration_csv = write_csv([*batch, (broken, "camera")], tmp_path / "calibration.csv")
    manifest = train(trained_models.parent / "screenshots30.csv", tmp_path / "models", tiny_weights,
                     trained_settings, folds=3, seed=0, calibration_data=calibration_csv)
    calibration = manifest["calibration"]
    assert calibration["method"] == "temperature" and calibration["data"]["images"] == 20  # the broken one left out
    assert len(calibration["temperatures"]) == 7
    assert all(0.05 <= t <= 20 for t in calibration["temperatures"].values())
    assert MetaEnsemble.load(tmp_path / "models").temperatures == calibration["temperatures"]
    report = (tmp_path / "models" / "report" / "report.md").read_text()
    assert "calibrated (temperature) on 20 images" in report

    # The gateway loads and applies them, and says so in its metadata (no trainer's paths).
    from shared.gateway.runtime import GatewayRuntime

    gateway = GatewayRuntime(trained_settings.replace(models_dir=tmp_path / "models"))
    gateway.start(background=False)
    assert gateway.stack.ensemble.temperatures == calibration["temperatures"]
    assert gateway.metadata()["calibration"] == {"method": "temperature", "temperatures": calibration["temperatures"],
                                                 "images": 20, "at_bound": calibration["at_bound"]}


    stray = write_csv([(batch[0][0], "camera"), (batch[-1][0], "receipts")], tmp_path / "stray.csv")
    with pytest.raises(DatasetError, match="Calibration set .* has classes not in the training data: receipts"):
        train(trained_models.parent / "screenshots30.csv", tmp_path / "m2", tiny_weights, trained_settings,
              folds=3, seed=0, calibration_data=stray)
    # Photos the models learnt from would fit a temperature that does not hold on new ones.
    with pytest.raises(DatasetError, match="shares 60 image"):
        train(trained_models.parent / "screenshots30.csv", tmp_path / "m3", tiny_weights, trained_settings,
              folds=3, seed=0, calibration_data=trained_models.parent / "screenshots30.csv")


def test_uncalibrated_models_say_so(trained_models: Path) -> None:
    from shared.learning.meta_model import MetaEnsemble

    assert artifacts.load_manifest(trained_models)["calibration"] is None
    assert MetaEnsemble.load(trained_models).temperatures == {}
    assert "uncalibrated (`train --calibration-data`" in (trained_models / "report" / "report.md").read_text()


def dataset_of(counts: dict[str, int]) -> Dataset:
    records = [(Path(f"{label}{i}.png"), label) for label, n in counts.items() for i in range(n)]
    return Dataset(records, sorted(counts))


def test_choose_folds_reduces_to_the_smallest_class(caplog: pytest.LogCaptureFixture) -> None:
    y = np.array([0] * 20 + [1] * 6)
    with caplog.at_level(logging.WARNING):
        assert choose_folds(y, 10, ["a", "b"]) == 6
    assert "reducing folds from 10 to 6" in caplog.text
    assert choose_folds(y, 5, ["a", "b"]) == 5


def test_choose_folds_leaves_every_training_fold_enough_for_the_svm_calibration(caplog) -> None:
    # 4 a class (what MIN_PER_CLASS allows) in 3 folds left 2 a training fold: CalibratedClassifierCV(cv=3) failed
    # with scikit-learn's traceback. 4 folds leave 3.
    with caplog.at_level(logging.WARNING):
        assert choose_folds(np.array([0] * 4 + [1] * 9), 3, ["a", "b"]) == 4
    assert "raising folds from 3 to 4" in caplog.text
    assert choose_folds(np.array([0] * 5 + [1] * 9), 3, ["a", "b"]) == 3  # 5 in 3 folds leave 3


def test_choose_folds_refuses_classes_too_small_to_fit() -> None:
    with pytest.raises(DatasetError, match="at least 4 readable training images; too few in b: 2"):
        choose_folds(np.array([0] * 10 + [1] * 2), 5, ["a", "b"])


def test_split_is_stratified_and_keeps_class_ids() -> None:
    train_set, test_set = split_dataset(dataset_of({"a": 20, "b": 10}), None, 0.2, seed=0)
    assert test_set.counts() == {"a": 4, "b": 2}
    assert train_set.classes == test_set.classes == ["a", "b"]


def test_split_errors_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="test_size must be between 0 and 1"):
        split_dataset(dataset_of({"a": 5, "b": 5}), None, 1.5, seed=0)
    with pytest.raises(DatasetError, match="Cannot split"):
        split_dataset(dataset_of({"a": 5, "b": 1}), None, 0.2, seed=0)


def test_given_test_set_with_unknown_classes_is_refused(tmp_path: Path) -> None:
    from tests.conftest import image_bytes

    for label in ("a", "z"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.png").write_bytes(image_bytes())
    with pytest.raises(DatasetError, match="classes not in the training data: z"):
        split_dataset(dataset_of({"a": 5, "b": 5}), tmp_path, 0.2, seed=0)
