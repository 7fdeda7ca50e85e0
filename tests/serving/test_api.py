"""The shared HTTP contract: config overrides, the prediction body."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.serving import api
from shared.config import Settings


def test_config_overrides_settings_by_upper_case_field_name():
    settings = api.settings_from_config({"SETTINGS": Settings(deadline_s=3.0), "MODELS_DIR": Path("/m"),
                                         "SERVICE_NAME": "ocr_nb", "TESTING": True})
    assert settings.models_dir == Path("/m") and settings.service_name == "ocr_nb"
    assert settings.deadline_s == 3.0  # kept from the given base


def test_prediction_body_keeps_the_seed_fields_and_names_every_class():
    body = api.prediction_body([0.2, 0.7, 0.1], ["a", "b", "c"], model="clip_svm", model_version="v1",
                               weights={"clip": "synthetic"})
    assert body["class_id"] == [1] and body["proba"] == pytest.approx(0.7)
    assert body["label"] == "b" and body["probas"] == pytest.approx({"a": 0.2, "b": 0.7, "c": 0.1})
    assert body["model"] == "clip_svm" and body["model_version"] == "v1"
    assert body["weights"] == {"clip": "synthetic"} and body["synthetic_weights"] is True


def test_synthetic_flag_is_absent_with_real_weights():
    body = api.prediction_body([1.0], ["only"], model="ocr_nb", model_version="v", weights={"ocr": "real"})
    assert body["weights"] == {"ocr": "real"} and "synthetic_weights" not in body


def test_one_synthetic_part_marks_the_answer_synthetic():
    body = api.prediction_body([1.0], ["only"], model="stacking", model_version="v",
                               weights={"ocr": "real", "clip": "synthetic"})
    assert body["weights"] == {"ocr": "real", "clip": "synthetic"} and body["synthetic_weights"] is True
