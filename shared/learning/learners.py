"""The three base learners as sklearn Pipelines, and `Member`: extractor + fitted pipeline for serving."""
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

from shared import artifacts
from shared.config import MEMBERS, Settings
from shared.errors import ArtifactError

LEARNER_FEATURE: dict[str, str] = {"clip_svm": "clip", "clip_logreg": "clip", "ocr_nb": "ocr"}
# Folds of the SVC's own Platt calibration; training guarantees every class has this many per fold.
CALIBRATION_FOLDS = 3
# 2**16 hashed n-gram columns: NB keeps two dense (K, n_features) arrays, so this bounds artifact size.
TEXT_FEATURES = 2**16


def build_learner(name: str, seed: int = 0) -> Pipeline:
    """A fresh, unfitted Pipeline for the named member; every one has predict_proba."""
    builders = {"clip_svm": _clip_svm, "clip_logreg": _clip_logreg, "ocr_nb": _ocr_nb}
    if name not in builders:
        raise ValueError(f"Unknown learner {name!r}; expected one of {', '.join(sorted(builders))}")
    return builders[name](seed)


def _clip_svm(seed: int) -> Pipeline:
    # SVC(probability=True) is deprecated since scikit-learn 1.9; this is its documented replacement:
    # Platt (sigmoid) scaling fitted on internal CV, then one SVC refit on all the data.
    svc = SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    calibrated = CalibratedClassifierCV(svc, method="sigmoid", cv=CALIBRATION_FOLDS, ensemble=False)
    return Pipeline([("scale", StandardScaler()), ("svc", calibrated)])


def _clip_logreg(seed: int) -> Pipeline:
    logreg = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    return Pipeline([("scale", StandardScaler()), ("logreg", logreg)])


def _ocr_nb(seed: int) -> Pipeline:
    # Hashing never has an empty vocabulary (synthetic OCR often reads nothing), and char n-grams
    # within word boundaries survive OCR's dropped and swapped letters. An empty text becomes an
    # all-zero row, for which MultinomialNB answers exactly the class priors.
    vectoriser = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), alternate_sign=False,
                                   n_features=TEXT_FEATURES, norm=None)
    return Pipeline([("ngrams", vectoriser), ("tfidf", TfidfTransformer()), ("nb", MultinomialNB(alpha=0.1))])


def feature_input(name: str, clip: np.ndarray | None, text: Sequence[str] | None) -> Any:
    """The input a learner's pipeline takes: the CLIP matrix or the list of OCR texts."""
    return clip if LEARNER_FEATURE[name] == "clip" else list(text or [])


def learner_path(name: str) -> str:
    return f"learners/{name}.skops"


def load_pipelines(models_dir: Path, manifest: dict) -> dict[str, Pipeline]:
    """Every member's fitted pipeline, verified against the manifest."""
    return {name: artifacts.load_object(models_dir, learner_path(name), manifest) for name in manifest["members"]}


def settings_for_features(settings: Settings, feature_config: dict) -> Settings:
    """Settings that make the extractor reproduce the recorded feature config (OCR langs, max side)."""
    if feature_config.get("kind") == "ocr":
        return settings.replace(ocr_langs=",".join(feature_config["langs"]), ocr_max_side=int(feature_config["max_side"]))
    return settings


def check_feature_config(recorded: dict, actual: dict, weights_dir: Path) -> None:
    """Refuse to serve a model with other weights or another extractor than it was trained with."""
    for key in ("kind", "model", "pretrained", "weights_sha256", "langs", "max_side", "dim"):
        if key in recorded and recorded.get(key) != actual.get(key):
            raise ArtifactError(
                f"The {recorded.get('kind')} weights in {weights_dir} do not match the trained model: "
                f"{key} is {actual.get(key)!r} there, the model was trained with {recorded.get(key)!r}. "
                "Use the weights it was trained with, or retrain."
            )


def load_extractor(kind: str, weights_dir: Path, settings: Settings) -> Any:
    """ClipEmbedder or OcrReader loaded from the weights folder (imports torch)."""
    if kind == "clip":
        from shared.features.clip import ClipEmbedder

        return ClipEmbedder.load(weights_dir, settings)
    from shared.features.ocr import OcrReader

    return OcrReader.load(weights_dir, settings)


def expected_feature_config(kind: str, weights_dir: Path, settings: Settings) -> dict:
    """The config an extractor would report, read from weights.json without loading any model."""
    if kind == "clip":
        from shared.features.clip import ClipEmbedder

        return ClipEmbedder.config_for(weights_dir)
    from shared.features.ocr import OcrReader

    return OcrReader.config_for(weights_dir, settings)


class Member:
    """One base learner ready to serve: load once, then featurize + predict many times."""

    def __init__(self, name: str, pipeline: Pipeline, extractor: Any, manifest: dict, models_dir: Path):
        self.name = name
        self.pipeline = pipeline
        self.extractor = extractor
        self.manifest = manifest
        self.models_dir = Path(models_dir)
        self.kind = LEARNER_FEATURE[name]
        self.classes: list[str] = list(manifest["classes"])
        self.feature_config: dict = manifest["features"][self.kind]
        self.synthetic: bool = bool(self.feature_config.get("synthetic") or manifest.get("synthetic_weights"))
        self.model_version: str = manifest["model_version"]

    @classmethod
    def load(cls, models_dir: Path, weights_dir: Path, name: str, settings: Settings) -> "Member":
        """Verify the artifacts, check the weights match training, load the pipeline and its extractor."""
        if name not in MEMBERS:
            raise ValueError(f"Unknown member {name!r}; expected one of {', '.join(MEMBERS)}")
        manifest = artifacts.load_manifest(models_dir)
        if name not in manifest["members"]:
            raise ArtifactError(f"{models_dir} has no trained {name}; it has {', '.join(manifest['members'])}")
        kind = LEARNER_FEATURE[name]
        recorded = manifest["features"][kind]
        settings = settings_for_features(settings, recorded)
        check_feature_config(recorded, expected_feature_config(kind, weights_dir, settings), weights_dir)
        pipeline = artifacts.load_object(models_dir, learner_path(name), manifest)
        extractor = load_extractor(kind, weights_dir, settings)
        check_feature_config(recorded, extractor.config, weights_dir)
        return cls(name, pipeline, extractor, manifest, models_dir)

    def featurize(self, images: Sequence[Image.Image]) -> Any:
        """The expensive part, batchable: CLIP embeddings (n, d) or OCR texts (n,)."""
        if self.kind == "clip":
            return self.extractor.embed(list(images))
        return [self.extractor.read(image) for image in images]

    def predict_features(self, features: Any) -> np.ndarray:
        """(n, K) probabilities in manifest class order from featurize()'s output."""
        proba = self.pipeline.predict_proba(features)
        return align_proba(proba, self.pipeline.classes_, len(self.classes))

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, K) probabilities for decoded RGB images."""
        return self.predict_features(self.featurize(images))

    def metadata(self) -> dict:
        """What /v2/models/<name> reports: classes, feature config, artifact hashes, weights kind."""
        files = self.manifest["files"]
        return {
            "name": self.name,
            "model_version": self.model_version,
            "classes": self.classes,
            "feature": self.feature_config,
            "artifacts": {rel: files[rel] for rel in (learner_path(self.name),)},
            "trained_at": self.manifest.get("created_at"),
            "weights": "synthetic" if self.synthetic else "pretrained",
            "synthetic": self.synthetic,
        }


def align_proba(proba: np.ndarray, fitted_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Place the columns of predict_proba at their class ids (a class unseen in fit gets 0)."""
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    out[:, np.asarray(fitted_classes, dtype=int)] = proba
    return out
