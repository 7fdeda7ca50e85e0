"""Stacking: out-of-fold meta-features (equal to sklearn's StackingClassifier), subset meta-models, MetaEnsemble."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import StackingClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from shared.learning import meta_model as stacking
from shared.errors import ArtifactError, MembersUnavailable
from shared.learning.learners import build_learner

MEMBERS = ("clip_logreg", "clip_svm", "ocr_nb")
WORDS = ["sale", "price", "photo", "camera", "screen", "menu"]


class RecordingFinalEstimatorDouble(ClassifierMixin, BaseEstimator):
    """Test double for StackingClassifier's final estimator: keeps the meta-features it is fitted on."""

    def fit(self, X, y):
        self.X_ = np.asarray(X)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def precomputed_features(n_per_class: int = 12, n_classes: int = 3, dim: int = 8, seed: int = 0):
    """Random CLIP-like vectors (class-shifted) and OCR-like texts (some empty), as arrays and as one DataFrame."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    clip = (rng.normal(size=(len(y), dim)) + y[:, None] * 0.7).astype(np.float32)
    text = ["" if rng.random() < 0.3 else f"{WORDS[k]} {rng.choice(WORDS)}" for k in y]
    frame = pd.DataFrame(clip, columns=[f"e{i}" for i in range(dim)]).assign(text=text)
    return clip, text, y, frame


def column_pipeline(name: str, frame: pd.DataFrame) -> Pipeline:
    """Our learner behind a ColumnTransformer that selects its feature from the DataFrame."""
    learner = build_learner(name, seed=0)
    if name == "ocr_nb":
        # The text steps go inside the selector (they take a 1-D column); NB stays the final step.
        select = ColumnTransformer([("text", Pipeline(learner.steps[:-1]), "text")])
        return Pipeline([("select", select), learner.steps[-1]])
    embedding = [c for c in frame.columns if c != "text"]
    return Pipeline([("select", ColumnTransformer([("clip", "passthrough", embedding)])), ("learner", learner)])


def test_out_of_fold_meta_features_equal_sklearn_stacking_classifier() -> None:
    clip, text, y, frame = precomputed_features()
    cv = stacking.make_folds(3, seed=7)
    inputs = {"clip_logreg": clip, "clip_svm": clip, "ocr_nb": text}
    ours = {name: stacking.out_of_fold_proba(build_learner(name, seed=0), inputs[name], y, cv) for name in MEMBERS}

    reference = StackingClassifier(
        estimators=[(name, column_pipeline(name, frame)) for name in MEMBERS],
        final_estimator=RecordingFinalEstimatorDouble(), cv=stacking.make_folds(3, seed=7),
        stack_method="predict_proba",
    ).fit(frame, y)

    np.testing.assert_allclose(stacking.meta_features(ours, MEMBERS), reference.final_estimator_.X_, atol=1e-10)


def test_out_of_fold_probabilities_never_come_from_in_sample_fits() -> None:
    # 1-nearest-neighbour is perfect in-sample; on labels unrelated to X it cannot be out-of-fold.
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 4)), np.tile([0, 1, 2], 20)
    in_sample = KNeighborsClassifier(1).fit(X, y).predict_proba(X)
    oof = stacking.out_of_fold_proba(KNeighborsClassifier(1), X, y, stacking.make_folds(5, seed=0))
    assert (in_sample.argmax(1) == y).all()
    assert (oof.argmax(1) == y).mean() < 0.7


def test_subsets_are_the_seven_sorted_names() -> None:
    names = [stacking.subset_name(s) for s in stacking.member_subsets(["ocr_nb", "clip_svm", "clip_logreg"])]
    assert names == ["clip_logreg", "clip_svm", "ocr_nb", "clip_logreg+clip_svm", "clip_logreg+ocr_nb",
                     "clip_svm+ocr_nb", "clip_logreg+clip_svm+ocr_nb"]


@pytest.fixture(scope="module")
def ensemble() -> stacking.MetaEnsemble:
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 20)
    oof = {name: rng.dirichlet(np.ones(3), size=len(y)) for name in MEMBERS}
    return stacking.MetaEnsemble(stacking.fit_meta_models(oof, y, seed=0), ["a", "b", "c"], list(MEMBERS))


def test_fit_meta_models_fits_one_forest_per_subset(ensemble: stacking.MetaEnsemble) -> None:
    assert len(ensemble.models) == 7
    assert ensemble.models["clip_svm+ocr_nb"].n_features_in_ == 6
    assert ensemble.models["clip_logreg+clip_svm+ocr_nb"].n_features_in_ == 9


def test_combine_uses_the_model_for_exactly_the_members_given(ensemble: stacking.MetaEnsemble) -> None:
    svm, ocr = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.1, 0.8])
    combined = ensemble.combine({"ocr_nb": ocr, "clip_svm": svm})
    expected = ensemble.models["clip_svm+ocr_nb"].predict_proba(np.hstack([svm, ocr])[None])[0]
    np.testing.assert_allclose(combined, expected)
    assert combined.shape == (3,) and combined.sum() == pytest.approx(1.0)


def test_combine_with_one_member_uses_its_own_model(ensemble: stacking.MetaEnsemble) -> None:
    p = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(ensemble.combine({"clip_logreg": p}),
                               ensemble.models["clip_logreg"].predict_proba(p[None])[0])


def test_forest_proba_is_the_forests_own_predict_proba(ensemble: stacking.MetaEnsemble) -> None:
    forest = ensemble.models["clip_logreg+clip_svm+ocr_nb"]
    X = np.random.default_rng(5).dirichlet(np.ones(3), size=(40, 3)).reshape(40, 9)
    np.testing.assert_allclose(stacking.forest_proba(forest, X), forest.predict_proba(X), rtol=0, atol=1e-12)


def test_forest_proba_rejects_what_the_forest_would_reject(ensemble: stacking.MetaEnsemble) -> None:
    forest = ensemble.models["clip_svm"]
    with pytest.raises(ValueError, match="finite"):
        stacking.forest_proba(forest, np.array([[0.5, np.nan, 0.5]]))
    with pytest.raises(ValueError, match="takes 3 features"):
        stacking.forest_proba(forest, np.array([[0.5, 0.5]]))


def test_a_subsets_temperature_scales_its_forests_votes(ensemble: stacking.MetaEnsemble) -> None:
    from shared.learning.calibration import apply_temperature

    calibrated = stacking.MetaEnsemble(ensemble.models, ensemble.classes, ensemble.members,
                                       {"clip_svm+ocr_nb": 0.5})
    svm, ocr = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.1, 0.8])
    raw = ensemble.combine({"ocr_nb": ocr, "clip_svm": svm})
    np.testing.assert_allclose(calibrated.combine({"ocr_nb": ocr, "clip_svm": svm}),
                               apply_temperature(raw[None], 0.5)[0])
    # A subset without a temperature answers its forest's votes.
    np.testing.assert_allclose(calibrated.combine({"clip_svm": svm}), ensemble.combine({"clip_svm": svm}))


def test_combine_with_nobody_raises_members_unavailable(ensemble: stacking.MetaEnsemble) -> None:
    with pytest.raises(MembersUnavailable):
        ensemble.combine({})


def test_combine_rejects_unknown_members_and_wrong_widths(ensemble: stacking.MetaEnsemble) -> None:
    with pytest.raises(ArtifactError, match="No meta-model for members 'nobody'"):
        ensemble.combine({"nobody": np.array([1.0, 0, 0])})
    with pytest.raises(ValueError, match="sent 2 probabilities; the model has 3 classes"):
        ensemble.combine({"ocr_nb": np.array([0.5, 0.5])})


def test_meta_ensemble_loads_the_trained_models(trained_models: Path) -> None:
    ensemble = stacking.MetaEnsemble.load(trained_models)
    assert sorted(ensemble.models) == sorted(stacking.subset_name(s) for s in stacking.member_subsets(MEMBERS))
    assert ensemble.combine({"ocr_nb": np.array([0.5, 0.5])}).shape == (2,)


def test_stacking_imports_and_combines_without_torch(trained_models: Path) -> None:
    # The gateway image has no torch: make `import torch` fail, as it would there.
    script = f"""
import sys, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed in the gateway image")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from shared.learning.meta_model import MetaEnsemble
p = MetaEnsemble.load({str(trained_models)!r}).combine({{"clip_svm": np.array([0.9, 0.1])}})
assert "torch" not in sys.modules
print(round(float(p.sum()), 6))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1.0"
