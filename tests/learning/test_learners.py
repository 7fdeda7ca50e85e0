"""Learners: the three pipelines, NB on empty OCR text, and FittedLearner loaded from trained artifacts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared import artifacts, members
from shared.config import Settings
from shared.errors import ArtifactError
from shared.learning.learners import FittedLearner, align_proba, build_learner, predict_aligned


def test_every_learner_has_predict_proba_on_its_feature() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    inputs = {"clip": rng.normal(size=(30, 8)).astype(np.float32), "ocr": [f"word{k} text" for k in y]}
    for name in members.member_names():
        kind = members.member(name).extractor
        proba = build_learner(name).fit(inputs[kind], y).predict_proba(inputs[kind][:4])
        assert proba.shape == (4, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_unknown_learner_names_the_choices() -> None:
    with pytest.raises(ValueError, match="Unknown member 'knn'; expected one of ocr_nb, clip_svm, clip_logreg"):
        build_learner("knn")


def test_ocr_nb_gives_an_image_without_text_the_class_priors() -> None:
    texts = ["скидка цена", "sale price"] * 6 + ["", "menu screen", ""] * 4
    y = np.array([0] * 12 + [1] * 12)
    y[[12, 14, 15, 17]] = 2  # three classes with priors 12/24, 8/24, 4/24
    proba = build_learner("ocr_nb").fit(texts, y).predict_proba([""])[0]
    np.testing.assert_allclose(proba, np.bincount(y) / len(y), atol=1e-9)


def test_ocr_nb_fits_when_no_image_has_any_text() -> None:
    # Synthetic OCR often reads nothing at all: an empty vocabulary must not fail.
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    proba = build_learner("ocr_nb").fit([""] * 8, y).predict_proba(["", "noise"])
    np.testing.assert_allclose(proba, [[3 / 8, 5 / 8]] * 2, atol=1e-9)


def test_ocr_nb_tolerates_ocr_noise() -> None:
    texts = ["discount price", "big sale today", "price tag", "screen menu", "settings menu", "home screen"] * 2
    y = np.array([0, 0, 0, 1, 1, 1] * 2)
    model = build_learner("ocr_nb").fit(texts, y)
    assert model.predict(["pr1ce d1scount", "scr33n menv"]).tolist() == [0, 1]


def test_align_proba_places_columns_by_class_id() -> None:
    out = align_proba(np.array([[0.3, 0.7]]), np.array([0, 2]), 3)
    np.testing.assert_allclose(out, [[0.3, 0.0, 0.7]])


def test_predict_aligned_gives_a_class_unseen_in_fit_zero() -> None:
    texts, y = ["sale price", "menu screen"] * 4, np.array([0, 2] * 4)  # class 1 never seen in fit
    proba = predict_aligned(build_learner("ocr_nb").fit(texts, y), ["sale", "menu"], 3)
    assert proba.shape == (2, 3) and np.all(proba[:, 1] == 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    folder = Path(Settings.from_env().datasets_dir) / "screenshots"
    return [Image.open(next((folder / sub).glob("*.jpg"))).convert("RGB") for sub in ("camera", "screenshots")]


@pytest.mark.parametrize("name", ["clip_svm", "ocr_nb"])
def test_member_predicts_probabilities_for_images(name: str, trained_models: Path, tiny_weights: Path,
                                                  trained_settings: Settings, images: list[Image.Image]) -> None:
    member = FittedLearner.load(trained_models, tiny_weights, name, trained_settings)
    proba = member.predict_proba(images)
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(member.predict_features(member.featurize(images)), proba)
    assert member.classes == ["camera", "screenshots"]
    # Only the member's own extractor is behind its answers: real OCR, tiny SYNTHETIC CLIP.
    assert member.weights == ({"ocr": "real"} if name == "ocr_nb" else {"clip": "synthetic"})
    assert member.synthetic is (name != "ocr_nb")
    assert member.kind == members.member(name).extractor and member.batchable is (name == "clip_svm")


def test_member_loads_ocr_as_recorded_not_as_configured(trained_models: Path, tiny_weights: Path,
                                                          trained_settings: Settings) -> None:
    # Other OCR settings at serving than at training: the reader still downscales as it did in training.
    changed = trained_settings.replace(ocr_max_side=trained_settings.ocr_max_side * 2)
    ocr = FittedLearner.load(trained_models, tiny_weights, "ocr_nb", changed)
    assert ocr.extractor.config == ocr.feature_config and ocr.extractor.max_side == trained_settings.ocr_max_side


def test_member_metadata_names_classes_features_hashes_and_weights(trained_models: Path, tiny_weights: Path,
                                                                  trained_settings: Settings) -> None:
    meta = FittedLearner.load(trained_models, tiny_weights, "clip_logreg", trained_settings).metadata()
    manifest = json.loads((trained_models / "manifest.json").read_text())
    assert meta["classes"] == ["camera", "screenshots"]
    assert meta["feature"]["kind"] == "clip" and meta["feature"]["synthetic"] is True
    assert meta["artifacts"] == {"learners/clip_logreg.skops": manifest["files"]["learners/clip_logreg.skops"]}
    assert meta["weights"] == {"clip": "synthetic"} and meta["synthetic"] is True
    assert meta["part_labels"] == {"clip": "CLIP"}  # as the page names the part, from the extractor registry
    ocr = FittedLearner.load(trained_models, tiny_weights, "ocr_nb", trained_settings).metadata()
    assert ocr["weights"] == {"ocr": "real"} and ocr["synthetic"] is False  # CLIP's synthetic part is not behind it
    assert len(meta["model_version"]) == 12


def test_member_refuses_weights_other_than_those_trained_with(trained_models: Path, tiny_weights: Path,
                                                              trained_settings: Settings, tmp_path: Path) -> None:
    models = shutil.copytree(trained_models, tmp_path / "models")
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["features"]["clip"]["weights_sha256"] = "0" * 64  # as if trained with other CLIP weights
    artifacts.write_manifest(models, manifest)
    with pytest.raises(ArtifactError, match="weights_sha256 is '[0-9a-f]+' there, the model was trained with '0000"):
        FittedLearner.load(models, tiny_weights, "clip_svm", trained_settings)


def test_member_refuses_a_tampered_pipeline(trained_models: Path, tiny_weights: Path,
                                            trained_settings: Settings, tmp_path: Path) -> None:
    models = shutil.copytree(trained_models, tmp_path / "models")
    path = models / "learners" / "ocr_nb.skops"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"ocr_nb\.skops has sha256"):
        FittedLearner.load(models, tiny_weights, "ocr_nb", trained_settings)


def test_member_load_rejects_unknown_names(trained_models: Path, tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="Unknown member 'stacking'"):
        FittedLearner.load(trained_models, tiny_weights, "stacking", Settings())
