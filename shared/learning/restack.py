"""Refit the stack on labelled traffic: `python -m shared restack --models M --data EXPORT --out NEW`.

The meta-models learn how far to trust each member from the members' out-of-fold answers on the training photos,
where members look better than on new photos (grocery: a stack that wins by 9 points on a random split of
train/ is no better than its best member on val/). Restacking refits only the forests and their temperatures, on
the training reference's out-of-fold rows plus the labelled traffic's member answers as the history recorded them
(`history export`'s predictions.jsonl): seconds, no feature extraction. The members stay as they are, byte for byte.

- How much a traffic row weighs against a training row is chosen by the traffic's out-of-fold answers (K folds over
  the traffic rows; Brier score) among: nothing (the stack as trained, only recalibrated), one, and up to both
  sources weighing the same in total. The traffic teaches what the new photos look like; the training rows keep the
  classes the traffic has not shown yet, and a few dozen labels do not outvote them unless they predict better.
- Temperatures are fitted on the traffic's out-of-fold stack answers with the chosen weight.
- Only traffic answered by these very learners is used: the model's own version and the versions it was restacked
  from (manifest `restack.lineage`); the rest is counted and left out.
- The new version's reference adds the traffic's images to the images the model has seen, so live quality of the
  new version does not score it on the photos it was fitted on.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from shared import artifacts
from shared.errors import DatasetError
from shared.learning import evaluation
from shared.learning.calibration import BOUNDS, fit_temperature
from shared.learning.meta_model import (build_meta_model, forest_proba, member_subsets, meta_features, meta_path,
                                        subset_name)
from shared.learning.reference import REFERENCE_PATH, load_reference, save_reference

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"  # feedback.export writes it
MIN_TRAFFIC = 20


def restack(models_dir: Path, data: Path, out: Path, folds: int = 5, seed: int = 0) -> dict:
    """Write a new model version in `out`: the same learners, meta-models refitted with the labelled traffic."""
    models_dir, data, out = Path(models_dir), Path(data), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not an empty folder; restack into a new one.")
    manifest = artifacts.load_manifest(models_dir)
    reference = load_reference(models_dir, manifest)
    if reference is None:
        raise DatasetError(f"{models_dir} has no training reference ({REFERENCE_PATH}); retrain it first: restacking "
                           "keeps the training photos' out-of-fold rows beside the traffic.")
    traffic = read_traffic(data / PREDICTIONS, manifest)
    members, classes = manifest["members"], manifest["classes"]
    everyone = tuple(sorted(members))
    full, temperature, traffic_oof, weight = fit_subset(reference, traffic, everyone, folds, seed)
    forests, temperatures = {subset_name(everyone): full}, {subset_name(everyone): temperature}
    for subset in member_subsets(members):  # the degraded subsets take the weight the full one chose
        if subset != everyone:
            name = subset_name(subset)
            forests[name], temperatures[name], _, _ = fit_subset(reference, traffic, subset, folds, seed, weight)
    _write(models_dir, out, forests, reference, traffic)
    complete = ~np.isnan(traffic_oof).any(axis=1)  # rows every member answered: each model scored on the same
    metrics = evaluation.evaluate_probas(traffic["y"][complete], {
        name: p[complete] for name, p in {**traffic["probas"], evaluation.STACK: traffic_oof}.items()}, classes)
    at_bound = sorted(n for n, t in temperatures.items() if not BOUNDS[0] * 1.05 < t < BOUNDS[1] / 1.05)
    restacked = {
        "data": str(data), "photos": int(len(traffic["y"])), "left_out": dict(traffic["left_out"]),
        "traffic_classes": int(len(np.unique(traffic["y"]))), "training_rows": int(len(reference.y)),
        "traffic_weight": weight, "traffic_weights_tried": traffic_weights(len(reference.y), len(traffic["y"])),
        "folds": folds, "seed": seed, "from_model_version": manifest["model_version"],
        "lineage": [manifest["model_version"], *(manifest.get("restack") or {}).get("lineage", [])],
        "traffic_metrics": metrics["summary"],
    }
    # "metrics" described the old stack on the training side's held-out photos: this one's are traffic_metrics.
    new = {key: value for key, value in manifest.items() if key not in ("model_version", "files", "metrics")}
    new |= {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "restack": restacked,
            "calibration": {"method": "temperature", "data": {"source": str(data), "images": int(len(traffic["y"]))},
                            "temperatures": temperatures, "at_bound": at_bound}}
    files = sorted(str(p.relative_to(out)) for folder in ("learners", "meta", "reference")
                   for p in (out / folder).rglob("*") if p.is_file())
    artifacts.write_manifest(out, new | {"files": files})
    log.info("restacked %s on %d labelled photos into %s; stack macro-F1 on them (out-of-fold) %.3f",
             models_dir, len(traffic["y"]), out, metrics["summary"][evaluation.STACK]["macro_f1"])
    return artifacts.load_manifest(out)


def read_traffic(path: Path, manifest: dict) -> dict:
    """The export's rows answered by these learners, as y (n,), {member: (n, K) with NaN rows where it did not
    answer}, sha256s, and what was left out by reason."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing: restack reads the members' answers that `python -m shared history "
                           "export --labelled` writes beside labels.csv.")
    classes, members = manifest["classes"], manifest["members"]
    index = {c: i for i, c in enumerate(classes)}
    usable = {manifest["model_version"], *(manifest.get("restack") or {}).get("lineage", [])}
    y, hashes, rows, left_out = [], [], {m: [] for m in members}, Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError:
            raise DatasetError(f"{path} line {number} is not JSON.") from None
        if row.get("model_version") not in usable:
            left_out["answered_by_other_learners"] += 1
        elif row.get("label") not in index:
            left_out["label_not_in_model"] += 1
        else:
            y.append(index[row["label"]])
            hashes.append(row.get("sha256"))
            answers = row.get("members") or {}
            for m in members:
                p = answers.get(m)
                rows[m].append([float(p.get(c, 0.0)) for c in classes] if isinstance(p, dict) else [np.nan] * len(classes))
    if len(y) < MIN_TRAFFIC:
        raise DatasetError(f"{path} has {len(y)} usable labelled photos ({dict(left_out) or 'none left out'}); "
                           f"restack needs at least {MIN_TRAFFIC}.")
    return {"y": np.asarray(y), "sha256": hashes, "left_out": left_out,
            "probas": {m: np.asarray(r, dtype=float).reshape(-1, len(classes)) for m, r in rows.items()}}


def traffic_weights(n_reference: int, n_traffic: int) -> list[float]:
    """The weights a traffic row may get, relative to a training row: none (the stack as trained, recalibrated),
    as much as one, a quarter of the sources' balance, and the balance (both sources weigh the same in total)."""
    balance = n_reference / max(n_traffic, 1)
    return sorted({0.0, 1.0, round(max(1.0, balance / 4), 3), round(max(1.0, balance), 3)})


def fit_subset(reference: Any, traffic: dict, subset: tuple[str, ...], folds: int, seed: int,
               weight: float | None = None) -> tuple[Any, float, np.ndarray, float]:
    """The subset's forest on training rows + traffic, its temperature from the traffic's out-of-fold answers,
    those answers ((n, K), NaN rows where a member of the subset did not answer) and the traffic rows' weight.

    weight=None chooses it among traffic_weights by the Brier score of the traffic's out-of-fold answers: a few
    dozen labels must not outvote hundreds of training rows unless they predict the traffic better."""
    k = len(reference.classes)
    X_ref, y_ref = meta_features(reference.oof, subset), reference.y
    X_all = meta_features(traffic["probas"], subset)
    answered = ~np.isnan(X_all).any(axis=1)
    X_t, y_t = X_all[answered], traffic["y"][answered]
    candidates = traffic_weights(len(y_ref), len(y_t)) if weight is None else [weight]
    oofs = {w: np.full((len(X_all), k), np.nan) for w in candidates}
    splitter = KFold(n_splits=min(folds, len(y_t)), shuffle=True, random_state=seed)
    for fit_rows, held in splitter.split(X_t):
        for w in candidates:
            forest = _fit(X_ref, y_ref, X_t[fit_rows], y_t[fit_rows], w, seed)
            oofs[w][np.flatnonzero(answered)[held]] = _proba(forest, X_t[held], k)
    chosen = min(candidates, key=lambda w: _brier(oofs[w][answered], y_t))
    temperature = fit_temperature(oofs[chosen][answered], y_t)
    return (_fit(X_ref, y_ref, X_t, y_t, chosen, seed), temperature, _calibrated(oofs[chosen], temperature),
            chosen)


def _brier(proba: np.ndarray, y: np.ndarray) -> float:
    truth = np.zeros_like(proba)
    truth[np.arange(len(y)), y] = 1.0
    return float(((proba - truth) ** 2).sum(axis=1).mean())


def _fit(X_ref: np.ndarray, y_ref: np.ndarray, X_t: np.ndarray, y_t: np.ndarray, weight: float, seed: int) -> Any:
    if weight == 0:  # the training rows alone: the forest training fitted, exactly
        return build_meta_model(seed).fit(X_ref, y_ref)
    X, y = np.vstack([X_ref, X_t]), np.concatenate([y_ref, y_t])
    sample_weight = np.concatenate([np.ones(len(y_ref)), np.full(len(y_t), weight)])
    return build_meta_model(seed).fit(X, y, sample_weight=sample_weight)


def _proba(forest: Any, X: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(X), k))
    out[:, forest.classes_.astype(int)] = forest_proba(forest, X)
    return out


def _calibrated(proba: np.ndarray, temperature: float) -> np.ndarray:
    from shared.learning.calibration import apply_temperature

    done = ~np.isnan(proba).any(axis=1)
    out = proba.copy()
    out[done] = apply_temperature(proba[done], temperature)
    return out


def _write(models_dir: Path, out: Path, forests: dict, reference: Any, traffic: dict) -> None:
    """The same learner files, the new forests, the reference with the traffic's images added."""
    shutil.copytree(models_dir / "learners", out / "learners")
    for name, forest in forests.items():
        artifacts.save_object(forest, out, meta_path(name))
    save_reference(out, reference.classes, reference.y, reference.oof, reference.stack_held_out,
                   reference.images | {h for h in traffic["sha256"] if h}, reference.empty)
