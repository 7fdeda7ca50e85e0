"""Live quality: the metrics `evaluate` reports, computed on the history records people labelled.

The same functions as `evaluate` (learning.evaluation.compute_metrics) on the probabilities the history recorded,
so the two agree on the same photos. Left out, and counted: records of images the model was trained or tested on
(no new evidence), records labelled with a class the model does not have, and records older than the stored
probabilities. Labelled sets are small: accuracy carries a Wilson interval, macro-F1 a bootstrap one.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from shared.learning.meta_model import STACK

CONFIDENCE = 0.95
BOOTSTRAP_DRAWS = 200


@dataclass
class Labelled:
    """Labelled records as matrices: y (n,), the stack's (n, K), and each member's rows where it answered."""

    classes: list[str]
    y: np.ndarray
    stack: np.ndarray
    members: dict[str, tuple[np.ndarray, np.ndarray]]  # {member: (row indices, (m, K) probabilities)}
    days: list[str]
    left_out: Counter = field(default_factory=Counter)


def collect(records: Iterable[Mapping[str, Any]], classes: Sequence[str]) -> Labelled:
    """Labelled history items -> matrices in the model's class order; the rest counted by reason."""
    index = {c: i for i, c in enumerate(classes)}
    y, stack, days, left_out = [], [], [], Counter()
    member_rows: dict[str, list[tuple[int, list[float]]]] = {}
    for rec in records:
        if rec.get("in_training"):
            left_out["in_training"] += 1
        elif rec.get("true_label") not in index:
            left_out["label_not_in_model"] += 1
        elif not rec.get("probas"):
            left_out["no_probabilities"] += 1
        else:
            row = len(y)
            y.append(index[rec["true_label"]])
            stack.append(_row(rec["probas"], classes))
            days.append(str(rec.get("time", ""))[:10])
            for name, m in (rec.get("members") or {}).items():
                if m.get("ok", True) and isinstance(m.get("probas"), Mapping):
                    member_rows.setdefault(name, []).append((row, _row(m["probas"], classes)))
    k = len(classes)
    members = {name: (np.asarray([r for r, _ in rows], dtype=int), np.asarray([p for _, p in rows]).reshape(-1, k))
               for name, rows in sorted(member_rows.items())}
    return Labelled(list(classes), np.asarray(y, dtype=int), np.asarray(stack, dtype=float).reshape(-1, k), members,
                    days, left_out)


def live_quality(records: Iterable[Mapping[str, Any]], classes: Sequence[str]) -> dict:
    """{n, left_out, models: {stack|member: metrics + intervals}, over_time: [{day, n, accuracy}]}."""
    data = collect(records, classes)
    models = {STACK: _scored(data.y, data.stack, classes)} if len(data.y) else {}
    for name, (rows, proba) in data.members.items():
        models[name] = _scored(data.y[rows], proba, classes)
    return {"n": int(len(data.y)), "classes": list(classes), "left_out": dict(data.left_out), "models": models,
            "over_time": _over_time(data), "confidence_level": CONFIDENCE}


def _scored(y: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict:
    from shared.learning.evaluation import compute_metrics

    metrics = compute_metrics(y, proba)
    correct = int((proba.argmax(axis=1) == y).sum())
    return metrics | {"correct": correct, "accuracy_interval": wilson_interval(correct, len(y)),
                      "macro_f1_interval": bootstrap_macro_f1(y, proba), "reliability": reliability(y, proba),
                      "labels": list(classes)}


def wilson_interval(successes: int, n: int, level: float = CONFIDENCE) -> list[float] | None:
    """The Wilson score interval of a proportion (scipy's binomtest); None when n is 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def bootstrap_macro_f1(y: np.ndarray, proba: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                       level: float = CONFIDENCE, seed: int = 0) -> list[float] | None:
    """A percentile bootstrap interval of macro-F1 (over the classes each resample has); None below 2 rows.

    Every resample's confusion counts at once with numpy (sklearn's f1_score per resample cost ~1 s per model
    under the benchmark's load; this is milliseconds)."""
    if len(y) < 2:
        return None
    rng, predicted, k = np.random.default_rng(seed), proba.argmax(axis=1), proba.shape[1]
    picks = rng.integers(0, len(y), (draws, len(y)))
    truth, said = y[picks], predicted[picks]
    offsets = np.arange(draws)[:, None] * k
    true_counts = np.bincount((truth + offsets).ravel(), minlength=draws * k).reshape(draws, k)
    said_counts = np.bincount((said + offsets).ravel(), minlength=draws * k).reshape(draws, k)
    hits = np.bincount((truth + offsets)[truth == said], minlength=draws * k).reshape(draws, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(true_counts + said_counts > 0, 2 * hits / (true_counts + said_counts), 0.0)
    present = true_counts > 0
    scores = (f1 * present).sum(axis=1) / present.sum(axis=1)
    tail = (1 - level) / 2 * 100
    return [round(float(np.percentile(scores, tail)), 4), round(float(np.percentile(scores, 100 - tail)), 4)]


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict]:
    """The reliability diagram's bins (the ones ECE averages): confidence, accuracy and count of each."""
    confidence, correct = proba.max(axis=1), (proba.argmax(axis=1) == y)
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True), 0, bins - 1)
    return [{"bin": b, "low": b / bins, "high": (b + 1) / bins, "n": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()), "accuracy": float(correct[which == b].mean())}
            for b in range(bins) if np.any(which == b)]


def _over_time(data: Labelled) -> list[dict]:
    """The stack's accuracy per UTC day of the answer."""
    correct = data.stack.argmax(axis=1) == data.y if len(data.y) else np.zeros(0, bool)
    out = []
    for day in sorted(set(data.days)):
        mask = np.asarray([d == day for d in data.days])
        out.append({"day": day, "n": int(mask.sum()), "accuracy": float(correct[mask].mean())})
    return out


def _row(probas: Mapping[str, float], classes: Sequence[str]) -> list[float]:
    return [float(probas.get(c, 0.0)) for c in classes]
