"""The training pipeline (`train`): features, out-of-fold stacking, refit, evaluation, saved artifacts."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from shared import artifacts, weights
from shared.config import Settings
from shared.errors import DatasetError
from shared.features.registry import extractor_class, extractor_kinds, part_label
from shared.learning import evaluation, report
from shared.learning.data import Dataset, load_dataset
from shared.learning.learners import CALIBRATION_FOLDS, build_learner, learner_path
from shared.learning.meta_model import (MetaEnsemble, fit_meta_models, make_folds, member_subsets, meta_path,
                                        out_of_fold_proba, subset_name)
from shared.learning.reference import save_reference
from shared.members import member, member_names

log = logging.getLogger(__name__)

# The SVC's internal Platt calibration needs 3 per class in every out-of-fold training part.
MIN_PER_CLASS = 4
MIN_CALIBRATION_IMAGES = 100  # below this a warning: the fitted temperature swings between random halves
REPORT_DIR = "report"


@dataclass
class Split:
    """Images and features of one side of the split (only readable images); features[kind] is a learner input."""

    dataset: Dataset
    y: np.ndarray
    features: dict[str, Any]

    def member_input(self, name: str) -> Any:
        """The input of the named member's learner: the features of its extractor."""
        return self.features[member(name).extractor]


def train(data: Path, out: Path, weights_dir: Path, settings: Settings, test_data: Path | None = None,
          test_size: float = 0.2, folds: int = 5, seed: int = 0, labels: str | None = None,
          calibration_data: Path | None = None) -> dict:
    """Extract features, fit members out-of-fold, fit the 7 meta-models, refit members, (calibrate,) evaluate, save."""
    started, out = time.perf_counter(), Path(out)
    # Read (not extract) the calibration set first: a wrong path or class fails before the long feature pass.
    calibration_set = None if calibration_data is None else load_dataset(calibration_data, labels, min_classes=1)
    loaded = _load_features(data, weights_dir, settings, test_data, test_size, seed, labels, calibration_set)
    train_split, test_split, classes = loaded.fit, loaded.held_out, loaded.train_set.classes
    k = choose_folds(train_split.y, folds, classes)
    calibration_split = None if loaded.calibration_set is None else _calibration_split(loaded, weights_dir, settings)
    learners, meta_models, oof = fit_stack(train_split, k, seed)
    calibration = None if calibration_split is None else calibrate(learners, meta_models, calibration_split)
    probas = held_out_probas(learners, meta_models, test_split, (calibration or {}).get("temperatures"))
    results = evaluation.evaluate_probas(test_split.y, probas, classes)
    manifest = _manifest(loaded, results, k, folds, seed, test_size, test_data) | {"calibration": calibration}
    _save_models(out, learners, meta_models)
    save_reference(out, classes, train_split.y, oof, probas[evaluation.STACK], loaded.table.hashes,
                   _empty_answers(learners, train_split, len(classes)))
    _write_training_report(out, results, probas, (train_split, test_split), manifest)
    manifest = artifacts.write_manifest(out, manifest | {"files": _artifact_files(out)})
    log.info("trained %s in %.1f s; stack accuracy on held-out: %.3f%s", out, time.perf_counter() - started,
             results["summary"][evaluation.STACK]["accuracy"], _synthetic_note(loaded.table.config))
    return manifest


# --- data ---------------------------------------------------------------------------------------
def feature_splits(data: Path, weights_dir: Path, settings: Settings, test_data: Path | None = None,
                   test_size: float = 0.2, seed: int = 0, labels: str | None = None) -> tuple[Split, Split]:
    """The training and held-out sides with their features, as `train` builds them (through the feature cache)."""
    loaded = _load_features(data, weights_dir, settings, test_data, test_size, seed, labels)
    return loaded.fit, loaded.held_out


@dataclass
class _Loaded:
    """Both sides as listed (train_set, test_set) and as read (fit, held_out), the feature table, the skipped."""

    train_set: Dataset
    test_set: Dataset
    table: Any
    skipped: list[dict]
    fit: Split
    held_out: Split
    calibration_set: Dataset | None = None  # re-indexed to the training classes


def _load_features(data: Path, weights_dir: Path, settings: Settings, test_data: Path | None, test_size: float,
                   seed: int, labels: str | None, calibration_set: Dataset | None = None) -> _Loaded:
    train_set, test_set = split_dataset(load_dataset(data, labels), test_data, test_size, seed, labels)
    if calibration_set is not None:
        calibration_set = _aligned(calibration_set, train_set, "Calibration set")
    log.info("training on %d images, evaluating on %d (%s)", len(train_set.records), len(test_set.records),
             ", ".join(train_set.classes))
    table, skipped = _extract(train_set.paths + test_set.paths, weights_dir, settings)
    return _Loaded(train_set, test_set, table, skipped, *_sides(table, train_set, test_set), calibration_set)


def split_dataset(dataset: Dataset, test_data: Path | None, test_size: float, seed: int,
                  labels: str | None = None) -> tuple[Dataset, Dataset]:
    """A stratified held-out split, or the given test set (a folder's classes named as `labels`) re-indexed to the
    training classes."""
    if test_data is not None:
        return dataset, _aligned(load_dataset(test_data, labels), dataset, "Test set")
    if not 0 < test_size < 1:
        raise DatasetError(f"test_size must be between 0 and 1 (exclusive); got {test_size}.")
    try:
        train_idx, test_idx = train_test_split(np.arange(len(dataset.records)), test_size=test_size,
                                               stratify=dataset.y, random_state=seed)
    except ValueError as exc:
        raise DatasetError(f"Cannot split {dataset.source} ({dataset.counts()}) with test_size={test_size}: {exc}") from None
    return dataset.subset(train_idx), dataset.subset(test_idx)


def _aligned(other: Dataset, training: Dataset, role: str) -> Dataset:
    """Another labelled set re-indexed to the training classes; a class training lacks is refused."""
    unknown = sorted(set(other.classes) - set(training.classes))
    if unknown:
        raise DatasetError(f"{role} {other.source} has classes not in the training data: {', '.join(unknown)}.")
    return Dataset(other.records, training.classes, other.source, other.labels_from)


def choose_folds(y: np.ndarray, folds: int, classes: Sequence[str]) -> int:
    """K for the out-of-fold step: at most the smallest class count; refuses classes too small to fit. K is raised
    where a training fold would leave a class fewer photos than a learner's own inner CV needs (clip_svm's
    calibration): 4 photos of a class split 3 ways leave 2 in a training fold, 4 ways leave 3."""
    counts = np.bincount(y, minlength=len(classes))
    smallest = int(counts.min())
    if smallest < MIN_PER_CLASS:
        small = [f"{name}: {n}" for name, n in zip(classes, counts) if n < MIN_PER_CLASS]
        raise DatasetError(f"Every class needs at least {MIN_PER_CLASS} readable training images; "
                           f"too few in {', '.join(small)}.")
    if folds < 2:
        raise DatasetError(f"folds must be at least 2; got {folds}.")
    if smallest < folds:
        log.warning("reducing folds from %d to %d: the smallest class has only %d training images",
                    folds, smallest, smallest)
    k = min(folds, smallest)
    while smallest - math.ceil(smallest / k) < CALIBRATION_FOLDS and k < smallest:
        k += 1
    if k > folds:
        log.warning("raising folds from %d to %d: with %d images in the smallest class each training fold keeps "
                    "%d, as clip_svm's calibration needs", folds, k, smallest, smallest - math.ceil(smallest / k))
    return k


def member_kinds() -> tuple[str, ...]:
    """The extractor kinds the members of the table need, each once, in table order."""
    return tuple(dict.fromkeys(member(name).extractor for name in member_names()))


def _extract(paths: list[Path], weights_dir: Path, settings: Settings) -> tuple[Any, list[dict]]:
    """Every member's features of the images (through the cache), and the unreadable ones, logged."""
    from shared.features.cache import FeatureCache
    from shared.features.extract import extract_features

    table = extract_features(paths, settings, weights_dir, kinds=member_kinds(), cache=FeatureCache.default(settings))
    log.info("features: %s%s", table.stats, _synthetic_note(table.config))
    skipped = [{"path": str(paths[i]), "reason": reason} for i, reason in sorted(table.errors.items())]
    for item in skipped:
        log.warning("skipped unreadable image %s: %s", item["path"], item["reason"])
    return table, skipped


def _calibration_split(loaded: _Loaded, weights_dir: Path, settings: Settings) -> Split:
    """The calibration set with its features (through the cache), its unreadable images left out; refused when it
    shares images with the training or held-out side (a temperature fitted there would not hold on new photos)."""
    dataset = loaded.calibration_set
    table, _ = _extract(dataset.paths, weights_dir, settings)
    shared_images = set(table.hashes) & set(loaded.table.hashes)
    if shared_images:
        raise DatasetError(f"Calibration set {dataset.source} shares {len(shared_images)} image(s) with the training "
                           "or held-out images; calibrate on photos the models never saw.")
    rows = np.asarray(table.rows, dtype=int)
    if not len(rows):
        raise DatasetError(f"No readable image in calibration set {dataset.source}.")
    if len(rows) < MIN_CALIBRATION_IMAGES:
        log.warning("calibrating on %d images: one temperature per meta-model wants %d or more to be reliable",
                    len(rows), MIN_CALIBRATION_IMAGES)
    return Split(dataset.subset(rows), dataset.y[rows], dict(table.values))


def _sides(table: Any, train_set: Dataset, test_set: Dataset) -> tuple[Split, Split]:
    """Rows of the feature table split back into training and held-out sides."""
    n_train, rows = len(train_set.records), np.asarray(table.rows, dtype=int)
    sides = []
    for dataset, mask, offset in ((train_set, rows < n_train, 0), (test_set, rows >= n_train, n_train)):
        picked = rows[mask] - offset
        features = {kind: _take(values, mask) for kind, values in table.values.items()}
        sides.append(Split(dataset.subset(picked), dataset.y[picked], features))
    if len(sides[1].y) == 0:
        raise DatasetError("No readable image is left in the held-out set.")
    return sides[0], sides[1]


def _take(values: Any, mask: np.ndarray) -> Any:
    """The masked rows of a learner input, of the same type (matrix or list)."""
    if isinstance(values, np.ndarray):
        return values[mask]
    return [value for value, keep in zip(values, mask) if keep]


# --- fitting ------------------------------------------------------------------------------------
def fit_stack(split: Split, folds: int, seed: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Out-of-fold probabilities -> meta-models; then every member refit on all training data.
    (learners, meta-models, the out-of-fold probabilities)."""
    from tqdm import tqdm

    oof, learners = {}, {}
    for name in tqdm(member_names(), desc=f"fitting members ({folds}-fold out-of-fold + refit)", unit="member"):
        oof[name] = member_out_of_fold(name, split, folds, seed)
        learners[name] = build_learner(name, seed).fit(split.member_input(name), split.y)
    return learners, fit_meta_models(oof, split.y, seed), oof


def member_out_of_fold(name: str, split: Split, folds: int, seed: int) -> np.ndarray:
    """(n, K) out-of-fold probabilities of one member, on the folds fit_stack uses (the stack's meta-features)."""
    return out_of_fold_proba(build_learner(name, seed), split.member_input(name), split.y, make_folds(folds, seed))


def held_out_probas(learners: dict[str, Any], meta_models: dict[str, Any], split: Split,
                    temperatures: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """{member: (n, K)} for the held-out side, plus the stack's (calibrated when temperatures are given)."""
    probas = evaluation.member_probas(learners, split.features, len(split.dataset.classes))
    ensemble = MetaEnsemble(meta_models, split.dataset.classes, list(learners), temperatures)
    return probas | {evaluation.STACK: ensemble.predict_proba(probas)}


def calibrate(learners: dict[str, Any], meta_models: dict[str, Any], split: Split) -> dict:
    """A temperature per meta-model, fitted on a labelled batch the models never saw (the manifest's calibration)."""
    from shared.learning.calibration import BOUNDS, fit_temperature

    probas = evaluation.member_probas(learners, split.features, len(split.dataset.classes))
    ensemble = MetaEnsemble(meta_models, split.dataset.classes, list(learners))
    temperatures = {subset_name(s): fit_temperature(ensemble.predict_proba({m: probas[m] for m in s}), split.y)
                    for s in member_subsets(learners)}
    log.info("calibrated on %d images of %s: temperatures %s", len(split.y), split.dataset.source, temperatures)
    at_bound = sorted(name for name, t in temperatures.items() if not BOUNDS[0] * 1.05 < t < BOUNDS[1] / 1.05)
    if at_bound:
        log.warning("temperature at its bound %s for %s: the calibration set is too small or too easy to fit it",
                    BOUNDS, ", ".join(at_bound))
    return {"method": "temperature", "data": split.dataset.summary(), "temperatures": temperatures,
            "at_bound": at_bound}


def _empty_answers(learners: dict[str, Any], split: Split, k: int) -> dict[str, np.ndarray]:
    """{member: (K,) its answer to no text} for the members that read text (their input is a list of strings)."""
    from shared.learning.learners import predict_aligned

    return {name: predict_aligned(pipeline, [""], k)[0] for name, pipeline in learners.items()
            if isinstance(split.member_input(name), list)}


# --- saving -------------------------------------------------------------------------------------
def _manifest(loaded: _Loaded, results: dict, k: int, folds: int, seed: int, test_size: float,
              test_data: Path | None) -> dict:
    train_set, test_set, table = loaded.train_set, loaded.test_set, loaded.table
    parts = weights.parts_of(table.config)
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": train_set.classes,
        "members": sorted(member_names()),
        "learner_features": {name: member(name).extractor for name in member_names()},
        "features": table.config,
        "synthetic_weights": "synthetic" in parts.values(),
        "weights": parts,
        "training": {
            "train": train_set.summary(), "test": test_set.summary(),
            "test_source": "given" if test_data is not None else f"stratified split, test_size={test_size}",
            "folds": k, "folds_requested": folds, "seed": seed,
            "skipped": loaded.skipped, "feature_stats": table.stats,
        },
        "metrics": results["summary"],
    }


def _save_models(out: Path, learners: dict[str, Any], meta_models: dict[str, Any]) -> None:
    for name, pipeline in learners.items():
        artifacts.save_object(pipeline, out, learner_path(name))
    for name, model in meta_models.items():
        artifacts.save_object(model, out, meta_path(name))


def _write_training_report(out: Path, results: dict, probas: dict[str, np.ndarray], sides: tuple[Split, Split],
                           manifest: dict) -> None:
    train_split, test_split = sides
    context = {"title": "Training", "features": manifest["features"], "weights": manifest["weights"],
               "synthetic": manifest["synthetic_weights"],
               "data": test_split.dataset.summary(), "skipped": manifest["training"]["skipped"],
               "notes": _training_notes(manifest["training"], len(train_split.y))
               + report.calibration_notes(manifest)
               + _feature_notes(train_split, test_split)}
    embedding = _embedding(train_split, test_split)
    report.write_report(out / REPORT_DIR, results, context, test_split.y, probas, embedding)


def _training_notes(training: dict, n_train: int) -> list[str]:
    notes = [f"scored on the held-out set ({training['test_source']}); members and meta-models trained on "
             f"{n_train} images with {training['folds']}-fold out-of-fold stacking, seed {training['seed']}"]
    if training["test_source"] != "given":
        notes.append("a random split scores photos taken alongside the training photos, which new traffic often is "
                     "not (docs/training.md, step 3): `train --test-data` with a later, separate batch gives "
                     "a figure that predicts new traffic")
    return notes + [_feature_note(training["feature_stats"])]


def _feature_note(stats: dict) -> str:
    parts = [f"{kind} {s['misses']} computed, {s['hits']} from cache" for kind, s in stats.items() if isinstance(s, dict)]
    return f"features: {'; '.join(parts)} ({stats.get('seconds', 0):.0f} s)"


def _common_kinds(*sides: Split) -> list[str]:
    """The extractor kinds every side has features of, in registry order."""
    return [kind for kind in extractor_kinds() if all(kind in side.features for side in sides)]


def _feature_notes(*sides: Split) -> list[str]:
    """What each extractor says about its features over both sides (OCR: how many images had text)."""
    return [note for kind in _common_kinds(*sides)
            for note in extractor_class(kind).feature_notes([side.features[kind] for side in sides])]


def _embedding(*sides: Split) -> report.Embedding | None:
    """The mapped vectors (CLIP's) of every readable image, training and held-out, for the report's map."""
    kind = report.mapped_kind(_common_kinds(*sides))
    if kind is None:
        return None
    return report.Embedding(np.vstack([side.features[kind] for side in sides]),
                            np.concatenate([side.y for side in sides]), part_label(kind))


def _artifact_files(out: Path) -> list[str]:
    """Every file training wrote (learners, meta-models, reference, report), relative to out."""
    return sorted(str(p.relative_to(out)) for folder in ("learners", "meta", "reference", REPORT_DIR)
                  for p in (out / folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def _synthetic_note(configs: dict) -> str:
    """' [weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)]'."""
    note = weights.parts_note(weights.parts_of(configs))
    return f" [{note}]" if note else ""
