"""ACCURACY.md's Loop section: the loop measured as if grocery val/ were the traffic a model trained on train/ serves.

Real EasyOCR, SYNTHETIC CLIP (randomly initialised ViT-B-32: its rows are not CLIP's accuracy). The answers are
`evaluate`'s on the photos (the gateway's, but for the history's 5-decimal rounding); the loop's own code does the
rest: review_priority, fit_temperature (train --calibration-data), restack's fit_subset, drift_report.

- Review queue: val/ split into a labelling pool and an evaluation half (random, `repeats` times); label the first
  25% / 50% of the pool in queue order or in random order; calibrate (a temperature) or restack on them; the stack's
  macro-F1 and ECE on the evaluation half.
- Calibration from the loop: a temperature fitted on one half of val/, scored on the other (and back).
- Refit from the loop: restack on one half of val/, scored on the other (and back), against each member.
- Drift, against either reference (DRIFT_REFERENCE: the training photos' out-of-fold answers, or a first window of
  served answers): windows drawn from val/ (the trained classes; false alarms), and streams that switch to photos
  of other classes (grocery's other categories, the screenshots set): answers after the switch until flagged.

`make accuracy-loop` (= python -m bench.loop); features come from models/accuracy/cache (make accuracy's), so a
first run reads the photos it has not seen with OCR (task (b): about 10 min on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.accuracy import TASKS, setup, split_records
from shared.config import Settings
from shared.feedback.drift import drift_report, traffic_baseline
from shared.history.records import review_priority
from shared.learning import evaluation
from shared.learning.calibration import apply_temperature, fit_temperature
from shared.learning.data import folder_records, write_csv
from shared.learning.meta_model import forest_proba, meta_features
from shared.learning.reference import Reference, load_reference
from shared.learning.restack import fit_subset

RESULTS = Path("bench/results/accuracy/loop.json")
FRACTIONS = (0.25, 0.5)
DRIFT_WINDOW, DRIFT_ALPHA, DRIFT_EVERY = 50, 0.01, 10
SOURCES = ("training", "traffic")  # DRIFT_REFERENCE
FALSE_ALARM_WINDOWS = 200


class Served:
    """One model's answers on a set of photos: y, {member: (n, K)}, the stack's (n, K), as history items."""

    def __init__(self, classes: list[str], y: np.ndarray, members: dict[str, np.ndarray], stack: np.ndarray):
        self.classes, self.y, self.members, self.stack = classes, y, members, stack

    def items(self, rows: np.ndarray) -> list[dict]:
        out = []
        for i in rows:
            probas = dict(zip(self.classes, self.stack[i]))
            members = {m: {"ok": True, "label": self.classes[int(p[i].argmax())], "probas": dict(zip(self.classes, p[i]))}
                       for m, p in self.members.items()}
            out.append({"id": int(i), "time": "", "label": self.classes[int(self.stack[i].argmax())],
                        "probas": probas, "members": members})
        return out

    def priority(self) -> np.ndarray:
        return np.asarray([review_priority(it["probas"], it["label"], it["members"]) for it in self.items(
            np.arange(len(self.y)))])

    def traffic(self, rows: np.ndarray) -> dict:
        return {"y": self.y[rows], "probas": {m: p[rows] for m, p in self.members.items()}}


def serve(models: Path, records: list[tuple[Path, str]], weights_dir: Path, settings: Settings) -> Served:
    scored = evaluation.score_files(models, weights_dir, [p for p, _ in records], settings, progress=True)
    classes = scored.manifest["classes"]
    y = np.asarray([classes.index(records[i][1]) if records[i][1] in classes else -1 for i in scored.rows])
    members = {m: p for m, p in scored.probas.items() if m != evaluation.STACK}
    return Served(classes, y, members, scored.probas[evaluation.STACK])


def restacked_proba(reference: Reference, served: Served, fit_rows: np.ndarray, score_rows: np.ndarray,
                    seed: int) -> np.ndarray:
    """The full-subset stack refitted on the training rows + fit_rows of the traffic (restack's own code),
    with its temperature, on score_rows."""
    members = tuple(sorted(served.members))
    forest, temperature, _, _ = fit_subset(reference, served.traffic(fit_rows), members, folds=5, seed=seed)
    X = meta_features({m: p[score_rows] for m, p in served.members.items()}, members)
    out = np.zeros((len(score_rows), len(served.classes)))
    out[:, forest.classes_.astype(int)] = forest_proba(forest, X)
    return apply_temperature(out, temperature)


def _scores(y: np.ndarray, proba: np.ndarray) -> dict:
    m = evaluation.compute_metrics(y, proba)
    return {"macro_f1": m["macro_f1"], "ece": m["ece"], "accuracy": m["accuracy"]}


def review_queue(served: Served, reference: Reference, repeats: int, seed: int = 0) -> dict:
    """Queue order vs random order at equal labels, for calibration and for restacking."""
    priority, n = served.priority(), len(served.y)
    runs: dict[str, list[dict]] = {}
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        order = rng.permutation(n)
        pool, held = order[: n // 2], order[n // 2:]
        for fraction in FRACTIONS:
            m = max(2, round(fraction * len(pool)))
            picks = {"queue": pool[np.argsort(-priority[pool], kind="stable")][:m], "random": pool[:m]}
            for how, rows in picks.items():
                t = fit_temperature(served.stack[rows], served.y[rows])
                runs.setdefault(f"{fraction}:{how}:calibrate", []).append(
                    _scores(served.y[held], apply_temperature(served.stack[held], t)))
                runs.setdefault(f"{fraction}:{how}:restack", []).append(
                    _scores(served.y[held], restacked_proba(reference, served, rows, held, seed + r)))
    return {key: {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]}
            for key, scores in runs.items()} | {"repeats": repeats, "pool": n // 2, "held": n - n // 2}


def halves(served: Served, reference: Reference, repeats: int, seed: int = 0) -> dict:
    """Calibration and restacking fitted on one half of val/ and scored on the other, pooled, over halvings."""
    from sklearn.model_selection import KFold

    runs: dict[str, list[dict]] = {}
    for r in range(repeats):
        calibrated, restacked = np.zeros_like(served.stack), np.zeros_like(served.stack)
        for fit, scored in KFold(2, shuffle=True, random_state=seed + r).split(served.stack):
            calibrated[scored] = apply_temperature(served.stack[scored],
                                                   fit_temperature(served.stack[fit], served.y[fit]))
            restacked[scored] = restacked_proba(reference, served, fit, scored, seed + r)
        runs.setdefault("calibrated", []).append(_scores(served.y, calibrated))
        runs.setdefault("restacked", []).append(_scores(served.y, restacked))
        runs.setdefault("calibrated_ece_by_chance_p90", []).append(
            {"ece": evaluation.ece_by_chance(calibrated, draws=200)["p90"]})
    out = {key: {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]} for key, scores in runs.items()}
    out["as_trained"] = _scores(served.y, served.stack)
    out["members"] = {m: _scores(served.y, p) for m, p in served.members.items()}
    out["repeats"] = repeats
    return out


def _reference(source: str, reference: Reference, baseline: list[dict]) -> Reference:
    return traffic_baseline(baseline, reference) if source == "traffic" else reference


def false_alarms(served: Served, reference: Reference, windows: int, seed: int = 0) -> dict:
    """Windows of DRIFT_WINDOW answers drawn (with replacement) from the in-distribution traffic, against each
    reference source (the traffic baseline: another window drawn the same way): share flagged."""
    out = {}
    for source in SOURCES:
        rng = np.random.default_rng(seed)
        flagged, by_test = 0, {}
        for _ in range(windows):
            baseline = served.items(rng.integers(0, len(served.y), DRIFT_WINDOW))
            report = drift_report(served.items(rng.integers(0, len(served.y), DRIFT_WINDOW)),
                                  _reference(source, reference, baseline), window=DRIFT_WINDOW, windows=1,
                                  alpha=DRIFT_ALPHA)
            flagged += report["flagged"]
            for test, t in report["windows"][0]["tests"].items():
                by_test[test] = by_test.get(test, 0) + (t["p_corrected"] < DRIFT_ALPHA)
        out[source] = {"windows": windows, "flagged_share": round(flagged / windows, 4),
                       "flagged_by_test": {k: round(v / windows, 4) for k, v in by_test.items()}}
    return out


def until_flagged(before: Served, after: Served, reference: Reference, seed: int = 0) -> dict:
    """A window of in-distribution answers (the traffic baseline), another, then shifted ones: answers after the
    switch until the newest window (tested every DRIFT_EVERY answers) is flagged, for each reference source."""
    out = {}
    for source in SOURCES:
        rng = np.random.default_rng(seed)
        baseline = before.items(rng.integers(0, len(before.y), DRIFT_WINDOW))
        calm = before.items(rng.integers(0, len(before.y), DRIFT_WINDOW))
        shifted = after.items(rng.permutation(len(after.y)))
        found = {"answers": None, "shifted_photos": len(shifted)}
        for n in range(DRIFT_EVERY, len(shifted) + 1, DRIFT_EVERY):
            stream = (calm + shifted[:n])[::-1]  # newest first, as the history lists them
            report = drift_report(stream, _reference(source, reference, baseline), window=DRIFT_WINDOW, windows=1,
                                  alpha=DRIFT_ALPHA)
            if report["flagged"]:
                tests = report["windows"][0]["tests"]
                found = {"answers": n, "windows": round(n / DRIFT_WINDOW, 2), "shifted_photos": len(shifted),
                         "flagged_by": sorted(t for t, v in tests.items() if v["p_corrected"] < DRIFT_ALPHA)}
                break
        out[source] = found
    return out


def run_task(key: str, grocery: Path, weights_dir: Path, settings: Settings, work: Path, repeats: int) -> dict:
    from shared import artifacts
    from shared.learning.training import train

    title, label = TASKS[key]
    train_csv = write_csv(split_records(grocery, "train", label), work / f"{key}_train.csv")
    val_records = split_records(grocery, "val", label)
    models = work / key
    train(train_csv, models, weights_dir, settings, test_data=write_csv(val_records, work / f"{key}_val.csv"),
          folds=5, seed=0)
    reference = load_reference(models, artifacts.load_manifest(models))
    served = serve(models, val_records, weights_dir, settings)
    out = {"title": title, "val": int(len(served.y)), "train": int(len(reference.y)),
           "classes": len(served.classes), "review_queue": review_queue(served, reference, repeats),
           "halves": halves(served, reference, repeats), "false_alarms": false_alarms(served, reference,
                                                                                       FALSE_ALARM_WINDOWS)}
    shifts = {"grocery Fruit and Vegetables": [(p, "?") for p, coarse in split_records(grocery, "val", TASKS["a_coarse"][1])
                                               if coarse != "Packages"] if key == "b_packages" else [],
              "screenshots": folder_records(Path(settings.datasets_dir) / "screenshots")[::5][:200]}
    out["shifts"] = {name: until_flagged(served, serve(models, records, weights_dir, settings), reference)
                     for name, records in shifts.items() if records}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["b_packages"], choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--report-only", action="store_true", help="rewrite ACCURACY.md's Loop section from "
                                                                   f"{RESULTS}")
    args = parser.parse_args()
    from bench.report.loop import write_section

    if not args.report_only:
        settings, grocery, weights_dir, info = setup()
        with tempfile.TemporaryDirectory() as tmp:
            tasks = {key: run_task(key, grocery, weights_dir, settings, Path(tmp), args.repeats) for key in args.tasks}
        from shared import weights

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"tasks": tasks, "weights": weights.describe_parts(info),
                                       "drift": {"window": DRIFT_WINDOW, "alpha": DRIFT_ALPHA,
                                                 "every": DRIFT_EVERY}}, indent=2))
    print(f"wrote the Loop section of {write_section(json.loads(RESULTS.read_text()))}")


if __name__ == "__main__":
    main()
