"""Metrics for each member and the stack side by side, and scoring saved models on image files."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, roc_auc_score

from shared import artifacts
from shared.config import Settings
from shared.errors import DatasetError
from shared.features.registry import part_label
from shared.learning import report
from shared.learning.data import Dataset, load_dataset
from shared.learning.meta_model import STACK

log = logging.getLogger(__name__)

SUMMARY_KEYS = report.SUMMARY_KEYS


# --- metrics ---------------------------------------------------------------------------------
def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by size."""
    confidence, predicted = proba.max(axis=1), proba.argmax(axis=1)
    correct = (predicted == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gaps = [abs(correct[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
            for b in range(bins) if np.any(which == b)]
    return float(np.sum(gaps))


def ece_by_chance(proba: np.ndarray, draws: int = 1000, seed: int = 0) -> dict:
    """The ECE a perfectly calibrated model with these confidences shows by chance on this many photos: each answer
    drawn right with probability equal to its confidence (median and 90th percentile over the draws)."""
    rng = np.random.default_rng(seed)
    confidence, predicted = proba.max(axis=1), proba.argmax(axis=1)
    eces = [expected_calibration_error(np.where(rng.random(len(proba)) < confidence, predicted, -1), proba)
            for _ in range(draws)]  # -1: a wrong answer, never a predicted class
    return {"median": round(float(np.median(eces)), 4), "p90": round(float(np.percentile(eces, 90)), 4)}


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """One-vs-rest macro ROC-AUC; the binary case scores the positive column; None if one class only."""
    present = np.unique(y)
    if len(present) < 2:
        return None
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    # Classes absent from y have no ROC curve; score the present ones, renormalised as sklearn requires.
    sub = proba[:, present] / np.clip(proba[:, present].sum(axis=1, keepdims=True), 1e-12, None)
    if len(present) == 2:
        return float(roc_auc_score(y == present[1], sub[:, 1]))
    return float(roc_auc_score(y, sub, multi_class="ovr", average="macro", labels=present))


def compute_metrics(y: np.ndarray, proba: np.ndarray) -> dict:
    """accuracy, macro-F1, ROC-AUC (OvR), log-loss, ECE and the confusion matrix for (n, K) probabilities.

    Macro-F1 averages over the classes the scored set has: a test set often lacks some trained classes, and an
    absent class would count as F1 0 however good the model (20 of 31 classes present: at most 0.65).
    """
    y, proba = np.asarray(y), np.asarray(proba, dtype=np.float64)
    labels = list(range(proba.shape[1]))
    predicted = proba.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, average="macro", labels=np.unique(y), zero_division=0)),
        "roc_auc": roc_auc(y, proba),
        "log_loss": float(log_loss(y, _normalised(proba), labels=labels)),
        "ece": expected_calibration_error(y, proba),
        "confusion": confusion_matrix(y, predicted, labels=labels).tolist(),
        "n": int(len(y)),
    }


def _normalised(proba: np.ndarray) -> np.ndarray:
    # Float round-off (and forests' averaged leaves) leave rows a hair off 1; log_loss warns on that.
    proba = np.clip(proba, 1e-15, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def evaluate_probas(y: np.ndarray, probas: Mapping[str, np.ndarray], classes: Sequence[str]) -> dict:
    """Metrics for every model ({name: (n, K)}), and a summary table of the headline numbers."""
    # Members by name, then the stack: training and evaluation reports list them in the same order.
    order = sorted(name for name in probas if name != STACK) + [name for name in probas if name == STACK]
    models = {name: compute_metrics(y, probas[name]) for name in order}
    summary = {name: {key: m[key] for key in SUMMARY_KEYS} for name, m in models.items()}
    chance = {name: ece_by_chance(probas[name], draws=200) for name in order}
    return {"classes": list(classes), "n": int(len(y)), "models": models, "summary": summary,
            "ece_by_chance": chance}


# --- scoring saved models on files ------------------------------------------------------------
@dataclass
class Scored:
    """Probabilities of each member and of the stack for the readable files; rows index into paths."""

    manifest: dict
    rows: list[int]
    probas: dict[str, np.ndarray]
    errors: dict[int, str]
    features: dict[str, Any] = field(default_factory=dict)  # {kind: the learners' input}, rows as probas
    feature_stats: dict = field(default_factory=dict)


def score_files(models_dir: Path, weights_dir: Path, paths: Sequence[Path], settings: Settings,
                progress: bool = True, manifest: dict | None = None) -> Scored:
    """Run the saved members and stack on image files (features via the cache; weights must match); `manifest`:
    the folder's, already verified."""
    from shared.features.cache import FeatureCache
    from shared.features.extract import extract_features
    from shared.learning.learners import load_pipelines
    from shared.learning.meta_model import MetaEnsemble

    manifest = manifest or artifacts.load_manifest(models_dir)
    pipelines, meta = load_pipelines(models_dir, manifest), MetaEnsemble.load(models_dir, manifest)
    recorded = manifest["features"]
    table = extract_features(paths, settings, weights_dir, kinds=sorted(recorded), cache=FeatureCache.default(settings),
                             progress=progress, recorded=recorded)
    probas = member_probas(pipelines, table.values, len(manifest["classes"])) if table.rows else {}
    if table.rows:
        probas[STACK] = meta.predict_proba(probas)
    return Scored(manifest, table.rows, probas, table.errors, dict(table.values), table.stats)


def member_probas(pipelines: Mapping[str, Any], features: Mapping[str, Any], n_classes: int) -> dict[str, np.ndarray]:
    """{member: (n, K)} from each member's pipeline on its extractor's features."""
    from shared.learning.learners import predict_aligned
    from shared.members import member

    return {name: predict_aligned(p, features[member(name).extractor], n_classes) for name, p in pipelines.items()}


def evaluate_models(models_dir: Path, data: Path | Dataset, weights_dir: Path, settings: Settings,
                    out: Path | None = None, labels: str | None = None) -> dict:
    """Score trained models on a labelled set; write metrics.json, report.md and plots (default MODELS/evaluation).

    An image folder's classes are named as `labels` says; by default as the training folder's were.
    """
    manifest = artifacts.load_manifest(models_dir)
    if isinstance(data, Dataset):
        dataset = data
    else:
        trained = manifest.get("training", {}).get("train", {}).get("labels")
        dataset = load_dataset(data, labels or trained, min_classes=1)  # scoring one class is fine
    scored = score_files(models_dir, weights_dir, dataset.paths, settings, manifest=manifest)
    classes = scored.manifest["classes"]
    y = _class_ids(dataset, classes)[scored.rows]
    if not scored.rows:
        raise DatasetError(f"None of the {len(dataset.paths)} images in {dataset.source} could be read.")
    results = evaluate_probas(y, scored.probas, classes)
    context = report.report_context(scored.manifest, dataset, scored.errors, title="Evaluation")
    kind = report.mapped_kind(scored.features)
    embedding = report.Embedding(scored.features[kind], y, part_label(kind)) if kind else None
    report.write_report(Path(out) if out else Path(models_dir) / "evaluation", results, context, y, scored.probas, embedding)
    return results


def _class_ids(dataset: Dataset, classes: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(dataset.labels) - set(index))
    if unknown:
        hint = (" (its classes are named by its first-level folders; `--labels leaf` names them by the folders "
                "holding the images)" if dataset.labels_from == "top" else "")
        raise DatasetError(f"{dataset.source} has labels the model was not trained on: {', '.join(unknown)}; "
                           f"known: {', '.join(classes)}{hint}.")
    return np.array([index[label] for label in dataset.labels], dtype=np.int64)


