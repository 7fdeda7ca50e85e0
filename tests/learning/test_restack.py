"""restack's pieces on a real trained model (tiny SYNTHETIC CLIP, real OCR): the reference it starts from, the
weights it chooses among, and weight 0 being the stack as trained, exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import artifacts
from shared.learning import restack
from shared.learning.meta_model import MetaEnsemble, forest_proba, meta_features, subset_name
from shared.learning.reference import load_reference


def test_the_reference_holds_the_training_rows_and_images(trained_models: Path) -> None:
    manifest = artifacts.load_manifest(trained_models)
    reference = load_reference(trained_models, manifest)
    n = manifest["training"]["train"]["images"] - len(manifest["training"]["skipped"])
    assert set(reference.oof) == set(manifest["members"]) and reference.classes == manifest["classes"]
    assert all(p.shape == (len(reference.y), len(reference.classes)) for p in reference.oof.values())
    assert len(reference.y) <= n and len(reference.images) >= len(reference.y)
    assert set(reference.empty) == {"ocr_nb"}  # the member that reads text
    assert reference.class_share().sum() == 1.0


def test_weight_zero_refits_exactly_the_forest_training_fitted(trained_models: Path) -> None:
    manifest = artifacts.load_manifest(trained_models)
    reference = load_reference(trained_models, manifest)
    members = tuple(sorted(manifest["members"]))
    X = meta_features(reference.oof, members)
    refit = restack._fit(X, reference.y, X[:0], reference.y[:0], 0.0, manifest["training"]["seed"])
    trained = MetaEnsemble.load(trained_models).models[subset_name(members)]
    assert np.array_equal(forest_proba(refit, X), forest_proba(trained, X))


def test_the_weights_tried_run_from_none_to_the_balance() -> None:
    assert restack.traffic_weights(800, 50) == [0.0, 1.0, 4.0, 16.0]
    assert restack.traffic_weights(100, 400) == [0.0, 1.0]
