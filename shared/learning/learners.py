"""The base learners as sklearn Pipelines (builders named in the member table), and `FittedLearner` for serving."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from shared import artifacts, members
from shared.config import Settings
from shared.errors import ArtifactError
from shared.features.registry import Extractor, load_extractor, part_label
from shared.weights import part_kind

# Folds of the SVC's own Platt calibration; training guarantees every class has this many per fold.
CALIBRATION_FOLDS = 3
# 2**16 hashed n-gram columns: NB keeps two dense (K, n_features) arrays, so this bounds artifact size.
TEXT_FEATURES = 2**16
# NB's additive smoothing per column. Over 2**16 columns alpha=0.1 adds ~6.5k pseudo-counts to each class, ~30x the
# TF-IDF mass of a class's own texts (~200 on grocery: rows are L2-normalised), drowning what the text says; 0.003
# adds about as much as the texts hold. Chosen by 5-fold CV on grocery train/Packages (macro-F1 0.713 at 0.1,
# 0.741 at 0.03, 0.745 at 0.01, 0.753 at 0.003 and at 0.001; ACCURACY.md).
TEXT_NB_ALPHA = 0.003


def build_learner(name: str, seed: int = 0) -> Pipeline:
    """A fresh, unfitted Pipeline for the named member (its builder in the member table); all have predict_proba."""
    return members.member(name).build_learner(seed)


def svm_on_embeddings(seed: int = 0) -> Pipeline:
    """clip_svm: scaled CLIP embeddings -> RBF SVC with sigmoid-calibrated probabilities."""
    # SVC(probability=True) is deprecated since scikit-learn 1.9; this is its documented replacement:
    # Platt (sigmoid) scaling fitted on internal CV, then one SVC refit on all the data.
    svc = SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    calibrated = CalibratedClassifierCV(svc, method="sigmoid", cv=CALIBRATION_FOLDS, ensemble=False)
    return Pipeline([("scale", StandardScaler()), ("svc", calibrated)])


def logreg_on_embeddings(seed: int = 0) -> Pipeline:
    """clip_logreg: scaled CLIP embeddings -> logistic regression."""
    logreg = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    return Pipeline([("scale", StandardScaler()), ("logreg", logreg)])


def naive_bayes_on_text(seed: int = 0) -> Pipeline:
    """ocr_nb: OCR text -> hashed char n-grams -> TF-IDF -> multinomial naive Bayes (seed unused: deterministic)."""
    # Hashing never has an empty vocabulary (synthetic OCR often reads nothing), and char n-grams
    # within word boundaries survive OCR's dropped and swapped letters. An empty text becomes an
    # all-zero row, for which MultinomialNB answers exactly the class priors.
    # 1-4-grams with sublinear TF: measured on real EasyOCR text of grocery Packages (train 5-fold CV macro-F1
    # 0.713 against 0.697 for 1-3-grams at alpha 0.1; word n-grams, confidence filters and ComplementNB did not pay;
    # ACCURACY.md).
    vectoriser = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 4), alternate_sign=False,
                                   n_features=TEXT_FEATURES, norm=None)
    tfidf = TfidfTransformer(sublinear_tf=True)
    return Pipeline([("ngrams", vectoriser), ("tfidf", tfidf), ("nb", MultinomialNB(alpha=TEXT_NB_ALPHA))])


def learner_path(name: str) -> str:
    """Where a member's fitted pipeline lives in the models folder."""
    return f"learners/{name}.skops"


def load_pipelines(models_dir: Path, manifest: dict) -> dict[str, Pipeline]:
    """Every member's fitted pipeline, verified against the manifest."""
    return {name: artifacts.load_object(models_dir, learner_path(name), manifest) for name in manifest["members"]}


def predict_aligned(pipeline: Pipeline, X: Any, n_classes: int) -> np.ndarray:
    """(n, K) probabilities of a fitted pipeline, columns at their class ids (manifest class order)."""
    return align_proba(pipeline.predict_proba(X), pipeline.classes_, n_classes)


class FittedLearner:
    """One base learner ready to serve: load once, then featurize + predict many times."""

    def __init__(self, name: str, pipeline: Pipeline, extractor: Extractor, manifest: dict, models_dir: Path):
        self.name = name
        self.pipeline = pipeline
        self.extractor = extractor
        self.manifest = manifest
        self.models_dir = Path(models_dir)
        self.kind: str = extractor.kind
        self.batchable: bool = extractor.batchable
        self.classes: list[str] = list(manifest["classes"])
        self.feature_config: dict = manifest["features"][self.kind]
        # Only this member's own extractor is behind its answers: ocr_nb on real OCR is real, whatever CLIP is.
        self.weights: dict[str, str] = {self.kind: part_kind(self.feature_config)}
        self.synthetic: bool = "synthetic" in self.weights.values()
        self.model_version: str = manifest["model_version"]

    @classmethod
    def load(cls, models_dir: Path, weights_dir: Path, name: str, settings: Settings,
             extractors: dict[str, Extractor] | None = None) -> "FittedLearner":
        """Verify the artifacts, load the pipeline, and its extractor as recorded at training (weights must match).

        `extractors`: loaded extractors by `extractor_key`; one recorded alike is shared rather than loaded again
        (a second model version costs its learner, not a second CLIP)."""
        kind = members.member(name).extractor
        manifest = artifacts.load_manifest(models_dir)
        if name not in manifest["members"]:
            raise ArtifactError(f"{models_dir} has no trained {name}; it has {', '.join(manifest['members'])}")
        pipeline = artifacts.load_object(models_dir, learner_path(name), manifest)
        recorded = manifest["features"][kind]
        key = extractor_key(kind, recorded)
        extractor = (extractors or {}).get(key) or load_extractor(kind, weights_dir, settings, recorded=recorded)
        if extractors is not None:
            extractors[key] = extractor
        return cls(name, pipeline, extractor, manifest, models_dir)

    def featurize(self, images: Sequence[Image.Image]) -> Any:
        """The expensive part, batchable when the extractor is: e.g. CLIP embeddings (n, d) or OCR texts (n,)."""
        return self.extractor.extract(list(images))

    def predict_features(self, features: Any) -> np.ndarray:
        """(n, K) probabilities in manifest class order from featurize()'s output."""
        return predict_aligned(self.pipeline, features, len(self.classes))

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, K) probabilities for decoded RGB images."""
        return self.predict_features(self.featurize(images))

    def metadata(self) -> dict:
        """What /v2/models/<name> reports: classes, feature config, artifact hashes, {part: real|synthetic}, and how
        the page names that part ({part: label}, from the extractor registry)."""
        files = self.manifest["files"]
        return {
            "name": self.name,
            "model_version": self.model_version,
            "classes": self.classes,
            "feature": self.feature_config,
            "artifacts": {rel: files[rel] for rel in (learner_path(self.name),)},
            "trained_at": self.manifest.get("created_at"),
            "weights": dict(self.weights),
            "part_labels": {kind: part_label(kind) for kind in self.weights},
            "synthetic": self.synthetic,
        }


def extractor_key(kind: str, recorded: dict) -> str:
    """Two versions whose manifests record the same extractor config (weights' hashes included) share it."""
    import json

    return f"{kind}:{json.dumps(recorded, sort_keys=True)}"


def align_proba(proba: np.ndarray, fitted_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Place the columns of predict_proba at their class ids (a class unseen in fit gets 0)."""
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    out[:, np.asarray(fitted_classes, dtype=int)] = proba
    return out
