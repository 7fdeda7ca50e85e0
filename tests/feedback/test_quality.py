"""Live quality from labelled history items: the metrics `evaluate` computes on the same probabilities, the records
it must not score left out and counted, and intervals that hold the point estimate."""
from __future__ import annotations

import numpy as np
import pytest

from shared.feedback.quality import bootstrap_macro_f1, live_quality, wilson_interval
from shared.learning.evaluation import compute_metrics

CLASSES = ["apple", "milk", "soap"]


def item(true: str, stack: list[float], ocr: list[float] | None, day: str = "2026-12-01", **extra) -> dict:
    members = {"clip_svm": {"ok": False, "error": "timeout"}}
    if ocr is not None:
        members["ocr_nb"] = {"ok": True, "probas": dict(zip(CLASSES, ocr))}
    return {"true_label": true, "probas": dict(zip(CLASSES, stack)), "members": members,
            "time": f"{day}T10:00:00Z", "in_training": False, **extra}


def test_the_metrics_are_evaluates_on_the_same_probabilities() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    stack, ocr = rng.dirichlet([1, 1, 1], 40), rng.dirichlet([1, 1, 1], 40)
    items = [item(CLASSES[t], list(s), list(o) if i % 4 else None, day=f"2026-12-0{1 + i % 2}")
             for i, (t, s, o) in enumerate(zip(y, stack, ocr))]
    quality = live_quality(items, CLASSES)
    expected = compute_metrics(y, stack)
    for key in ("accuracy", "macro_f1", "ece", "log_loss", "n"):
        assert quality["models"]["stack"][key] == pytest.approx(expected[key])
    assert quality["models"]["stack"]["confusion"] == expected["confusion"]
    answered = np.arange(40) % 4 != 0  # ocr_nb answered 3 in 4
    assert quality["models"]["ocr_nb"]["accuracy"] == pytest.approx(compute_metrics(y[answered], ocr[answered])["accuracy"])
    assert "clip_svm" not in quality["models"]
    assert [d["n"] for d in quality["over_time"]] == [20, 20]
    assert sum(b["n"] for b in quality["models"]["stack"]["reliability"]) == 40


def test_records_it_must_not_score_are_left_out_and_counted() -> None:
    items = [item("apple", [0.8, 0.1, 0.1], None), item("apple", [0.8, 0.1, 0.1], None, in_training=True),
             item("giraffe", [0.8, 0.1, 0.1], None), {**item("milk", [0, 0, 0], None), "probas": None}]
    quality = live_quality(items, CLASSES)
    assert quality["n"] == 1
    assert quality["left_out"] == {"in_training": 1, "label_not_in_model": 1, "no_probabilities": 1}
    assert live_quality([], CLASSES)["models"] == {}


def test_intervals_hold_the_estimate_and_narrow_with_more_labels() -> None:
    small, large = wilson_interval(8, 10), wilson_interval(800, 1000)
    assert small[0] < 0.8 < small[1] and large[0] < 0.8 < large[1]
    assert large[1] - large[0] < small[1] - small[0]
    assert wilson_interval(0, 0) is None
    y = np.array([0, 1, 2] * 10)
    proba = np.eye(3)[y]
    assert bootstrap_macro_f1(y, proba) == [1.0, 1.0]
    assert bootstrap_macro_f1(y[:1], proba[:1]) is None


def test_the_bootstrap_scores_each_resample_as_sklearn_does() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(5)
    y, proba = rng.integers(0, 5, 60), rng.dirichlet(np.ones(5), 60)
    interval = bootstrap_macro_f1(y, proba, draws=50, seed=1)
    picks = np.random.default_rng(1).integers(0, 60, (50, 60))
    scores = [f1_score(y[p], proba.argmax(axis=1)[p], average="macro", labels=np.unique(y[p]), zero_division=0)
              for p in picks]
    assert interval == [round(float(np.percentile(scores, 2.5)), 4), round(float(np.percentile(scores, 97.5)), 4)]
