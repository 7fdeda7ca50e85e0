"""Stacking: out-of-fold meta-features, one RandomForest per member subset, `MetaEnsemble.combine`."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from shared import artifacts
from shared.errors import ArtifactError, MembersUnavailable
from shared.learning.calibration import apply_temperature

STACK = "stack"  # the stack's own row among the members' probabilities, in reports and scores


def subset_name(members: Iterable[str]) -> str:
    """'clip_logreg+ocr_nb': sorted member names joined by '+'."""
    return "+".join(sorted(members))


def member_subsets(members: Iterable[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of the members, each sorted (7 for three members)."""
    names = sorted(members)
    return [combo for size in range(1, len(names) + 1) for combo in combinations(names, size)]


def meta_path(subset: str) -> str:
    return f"meta/{subset}.skops"


def make_folds(folds: int, seed: int) -> StratifiedKFold:
    """The stratified K-fold splitter shared by out-of-fold predictions and any comparison with sklearn."""
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def out_of_fold_proba(learner: Any, X: Any, y: np.ndarray, cv: StratifiedKFold) -> np.ndarray:
    """(n, K) class probabilities where each row comes from a model that never saw that row."""
    return cross_val_predict(clone(learner), X, y, cv=cv, method="predict_proba")


def meta_features(probas: Mapping[str, np.ndarray], members: Iterable[str]) -> np.ndarray:
    """Members' probabilities side by side, in sorted member order: (n, K * len(members)).

    Unlike sklearn's StackingClassifier we keep both columns in the binary case: the forest is not
    hurt by the collinear column, and every subset model then reads the same per-member layout.
    """
    return np.hstack([np.asarray(probas[name], dtype=np.float64) for name in sorted(members)])


def build_meta_model(seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1)


def fit_meta_models(oof: Mapping[str, np.ndarray], y: np.ndarray, seed: int = 0) -> dict[str, RandomForestClassifier]:
    """One RandomForest per non-empty subset of members, fitted on out-of-fold probabilities."""
    return {subset_name(s): build_meta_model(seed).fit(meta_features(oof, s), y) for s in member_subsets(oof)}


def forest_proba(forest: RandomForestClassifier, X: np.ndarray) -> np.ndarray:
    """`forest.predict_proba(X)`, the same sum over trees, in the calling thread.

    The forest's own method hands its trees to joblib even with n_jobs=1; for the one row the gateway
    combines per request that dispatch costs several times the trees themselves (BENCHMARKS.md).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != forest.n_features_in_:
        raise ValueError(f"the meta-model takes {forest.n_features_in_} features per row; got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("member probabilities must be finite numbers")
    total = np.zeros((X.shape[0], forest.n_classes_))
    for tree in forest.estimators_:
        total += tree.predict_proba(X, check_input=False)
    return total / len(forest.estimators_)


class MetaEnsemble:
    """The fitted meta-models; combines whichever members answered. Imports without torch."""

    def __init__(self, models: Mapping[str, RandomForestClassifier], classes: list[str], members: list[str],
                 temperatures: Mapping[str, float] | None = None):
        self.models = dict(models)
        self.classes = list(classes)
        self.members = sorted(members)
        # {subset: T} from `train --calibration-data`; a subset without one answers its forest's votes.
        self.temperatures = dict(temperatures or {})

    @classmethod
    def load(cls, models_dir: Path, manifest: dict | None = None) -> "MetaEnsemble":
        """Load every meta-model listed in the (verified) manifest."""
        manifest = manifest or artifacts.load_manifest(models_dir)
        subsets = [subset_name(s) for s in member_subsets(manifest["members"])]
        models = {name: artifacts.load_object(models_dir, meta_path(name), manifest) for name in subsets}
        temperatures = (manifest.get("calibration") or {}).get("temperatures")
        return cls(models, manifest["classes"], manifest["members"], temperatures)

    def predict_proba(self, probas: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, K) stacked probabilities from {member: (n, K)} using the model for exactly those members."""
        if not probas:
            raise MembersUnavailable("No member answered; the stack needs at least one member's probabilities.")
        name = subset_name(probas)
        model = self.models.get(name)
        if model is None:
            raise ArtifactError(f"No meta-model for members {name!r}; known: {', '.join(sorted(self.models))}")
        X = meta_features({k: np.atleast_2d(self._checked(k, v)) for k, v in probas.items()}, probas)
        out = np.zeros((X.shape[0], len(self.classes)))
        out[:, model.classes_.astype(int)] = forest_proba(model, X)
        return apply_temperature(out, self.temperatures.get(name, 1.0))

    def combine(self, probas: Mapping[str, np.ndarray]) -> np.ndarray:
        """(K,) stacked probabilities for one image from {member: (K,) proba}."""
        return self.predict_proba({name: np.reshape(p, (1, -1)) for name, p in probas.items()})[0]

    def _checked(self, member: str, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape[-1] != len(self.classes):
            raise ValueError(f"{member} sent {proba.shape[-1]} probabilities; the model has {len(self.classes)} classes")
        return proba
