"""Drift without labels: do the answers of the latest windows of traffic look like the training photos' answers?

Black-box shift detection on the models' outputs (Rabanser et al., "Failing Loudly", 2019), against the model's
reference (learning.reference), over consecutive windows of the newest answers of the serving model version:
- the stack's answered classes: a chi-square goodness-of-fit test against the training photos' class shares
  (classes expected fewer than 5 times in a window are pooled, as the test needs);
- each member's probability vectors: a two-sample Kolmogorov-Smirnov test per class against its out-of-fold
  probabilities on the training photos, Bonferroni-corrected over the classes.
A window is flagged when a test's p-value, Bonferroni-corrected over the tests, is below alpha. The members'
answers may instead be compared with the first answers the model served (traffic_baseline, DRIFT_REFERENCE=traffic). Also reported, not
tested: the mean top confidence, how often the members disagree with the stack, and for a text member how often
it read nothing (its answer equals its answer to no text).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from shared.learning.reference import Reference

MIN_POOLED = 5  # chi-square needs about this many expected per cell


def drift_report(records: Sequence[Mapping[str, Any]], reference: Reference, *, window: int, windows: int,
                 alpha: float, source: str = "training") -> dict:
    """Newest-first records (history items of one model version) -> the verdict of each full window, newest first.
    `source`: what the members' answers are compared with, "training" or "traffic" (traffic_baseline)."""
    full = [records[i:i + window] for i in range(0, len(records), window)][:windows]
    full = [w for w in full if len(w) == window]
    out = [window_report(list(reversed(w)), reference, alpha) for w in full]
    return {"window": window, "alpha": alpha, "records": len(records), "windows": out,
            "flagged": bool(out and out[0]["drift"]),
            "reference": {"source": source, "training_photos": int(len(reference.y)),
                          "members_rows": int(len(next(iter(reference.oof.values()), []))),
                          "mean_top_confidence": _mean_top(reference.stack_held_out)}}


def traffic_baseline(records: Sequence[Mapping[str, Any]], reference: Reference) -> Reference:
    """The reference with the members' and the stack's answers replaced by those of the first answers the model
    served (oldest first): drift then means "no longer like the traffic it started on". The class shares stay the
    training photos'. Answers on a new photo session differ from out-of-fold answers on the training session
    (grocery val/: every window flagged against training, ACCURACY.md), so this is what tells a change in the
    traffic apart from the gap between training and serving."""
    classes = reference.classes
    stack = np.asarray([[float((r.get("probas") or {}).get(c, 0.0)) for c in classes] for r in records])
    return Reference(classes, reference.y, {name: _member_matrix(records, name, classes) for name in reference.oof},
                     stack.reshape(-1, len(classes)), reference.images, reference.empty)


def window_report(records: Sequence[Mapping[str, Any]], reference: Reference, alpha: float) -> dict:
    """The tests and statistics of one window of records (oldest first)."""
    classes = reference.classes
    stack = np.asarray([[float((r.get("probas") or {}).get(c, 0.0)) for c in classes] for r in records])
    tests = {"stack_classes": class_test(stack.argmax(axis=1), reference.class_share())}
    signal = {}
    for name, ref in sorted(reference.oof.items()):
        served = _member_matrix(records, name, classes)
        if len(served) >= max(10, len(records) // 2):
            tests[name] = probability_test(served, ref)
        empty = reference.empty.get(name)
        if empty is not None and len(served):
            signal[name] = float(np.mean(np.abs(served - empty).max(axis=1) < 1e-3))
    corrected = {name: min(1.0, t["p_value"] * len(tests)) for name, t in tests.items()}
    for name, p in corrected.items():
        tests[name]["p_corrected"] = p
    first, last = records[0], records[-1]
    return {
        "from": first.get("time"), "to": last.get("time"), "first_id": first.get("id"), "last_id": last.get("id"),
        "n": len(records), "tests": tests, "drift": any(p < alpha for p in corrected.values()),
        "mean_top_confidence": _mean_top(stack), "disagreement_rate": _disagreement(records),
        "no_input_share": signal,
    }


def class_test(served: np.ndarray, expected_share: np.ndarray) -> dict:
    """Chi-square goodness of fit of the window's answered classes to the training photos' class shares; classes
    expected fewer than 5 times in the window are pooled into one cell, as the test needs."""
    from scipy.stats import chisquare

    observed = np.bincount(served, minlength=len(expected_share)).astype(float)
    expected = expected_share * len(served)
    rare = expected < MIN_POOLED
    cells_observed, cells_expected = observed[~rare], expected[~rare]
    if rare.any() and expected[rare].sum() > 0:
        cells_observed = np.append(cells_observed, observed[rare].sum())
        cells_expected = np.append(cells_expected, expected[rare].sum())
    if len(cells_observed) < 2:
        return {"test": "chi2", "statistic": 0.0, "p_value": 1.0, "cells": int(len(cells_observed))}
    result = chisquare(cells_observed, cells_expected * cells_observed.sum() / cells_expected.sum())
    return {"test": "chi2", "statistic": round(float(result.statistic), 4), "p_value": float(result.pvalue),
            "cells": int(len(cells_observed))}


def probability_test(served: np.ndarray, reference: np.ndarray) -> dict:
    """Per-class two-sample KS tests; the smallest p-value, Bonferroni-corrected over the classes."""
    from scipy.stats import ks_2samp

    found = [ks_2samp(served[:, k], reference[:, k]) for k in range(reference.shape[1])]
    worst = int(np.argmin([f.pvalue for f in found]))
    return {"test": "ks", "p_value": min(1.0, float(found[worst].pvalue) * len(found)),
            "statistic": round(float(found[worst].statistic), 4), "worst_class": worst}


def _member_matrix(records: Sequence[Mapping[str, Any]], name: str, classes: Sequence[str]) -> np.ndarray:
    rows = [[float(m["probas"].get(c, 0.0)) for c in classes] for r in records
            for m in [(r.get("members") or {}).get(name) or {}] if m.get("ok", True) and isinstance(m.get("probas"), dict)]
    return np.asarray(rows, dtype=float).reshape(-1, len(classes))


def _disagreement(records: Sequence[Mapping[str, Any]]) -> float:
    """Share of answers where some answering member's top class is not the stack's."""
    differ = [any(m.get("label") != r.get("label") for m in (r.get("members") or {}).values() if m.get("ok", True))
              for r in records]
    return float(np.mean(differ)) if differ else 0.0


def _mean_top(proba: np.ndarray) -> float | None:
    return round(float(proba.max(axis=1).mean()), 4) if len(proba) else None
