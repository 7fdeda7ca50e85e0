"""Drift tests on simulated answers: rarely flagged on traffic drawn like the training answers, flagged within a
window when the classes or a member's answers shift, and the untested statistics reported."""
from __future__ import annotations

import numpy as np
import pytest

from shared.feedback.drift import class_test, drift_report, traffic_baseline
from shared.learning.reference import Reference

CLASSES = ["apple", "milk", "soap", "tea"]
MEMBERS = ("clip_svm", "ocr_nb")


def answers(rng: np.random.Generator, y: np.ndarray, sharpness: float = 6.0) -> np.ndarray:
    """(n, K) probabilities leaning to each row's class, as a member's would."""
    alpha = np.ones((len(y), len(CLASSES)))
    alpha[np.arange(len(y)), y] += sharpness
    return np.vstack([rng.dirichlet(a) for a in alpha])


def make_reference(rng: np.random.Generator, n: int = 600) -> Reference:
    y = rng.integers(0, len(CLASSES), n)
    empty = np.full(len(CLASSES), 1 / len(CLASSES))
    return Reference(CLASSES, y, {m: answers(rng, y) for m in MEMBERS}, answers(rng, y[:150]), frozenset(),
                     {"ocr_nb": empty})


def traffic(rng: np.random.Generator, n: int, shares=None, member_sharpness: float = 6.0,
            blank_ocr: float = 0.0) -> list[dict]:
    """Newest-first history items whose true classes follow `shares` (default: even)."""
    y = rng.choice(len(CLASSES), n, p=shares)
    stack, members = answers(rng, y), {m: answers(rng, y, member_sharpness) for m in MEMBERS}
    out = []
    for i in range(n):
        rows = {m: members[m][i] for m in MEMBERS}
        if rng.random() < blank_ocr:
            rows["ocr_nb"] = np.full(len(CLASSES), 1 / len(CLASSES))
        label = CLASSES[int(stack[i].argmax())]
        out.append({"id": n - i, "time": f"2026-12-03T00:00:{i % 60:02d}Z", "label": label,
                    "probas": dict(zip(CLASSES, stack[i])),
                    "members": {m: {"ok": True, "label": CLASSES[int(p.argmax())], "probas": dict(zip(CLASSES, p))}
                                for m, p in rows.items()}})
    return out


def test_traffic_like_the_training_answers_is_rarely_flagged() -> None:
    rng = np.random.default_rng(0)
    reference = make_reference(rng)
    flagged = [drift_report(traffic(rng, 200), reference, window=200, windows=1, alpha=0.01)["flagged"]
               for _ in range(60)]
    assert np.mean(flagged) <= 0.05


def test_a_shift_in_the_classes_is_flagged_in_the_first_window() -> None:
    rng = np.random.default_rng(1)
    report = drift_report(traffic(rng, 200, shares=[0.7, 0.1, 0.1, 0.1]), make_reference(rng), window=200,
                          windows=1, alpha=0.01)
    assert report["flagged"] and report["windows"][0]["tests"]["stack_classes"]["p_corrected"] < 0.01


def test_a_member_answering_less_surely_is_flagged_by_its_own_test() -> None:
    rng = np.random.default_rng(2)
    report = drift_report(traffic(rng, 200, member_sharpness=1.0), make_reference(rng), window=200, windows=1,
                          alpha=0.01)
    tests = report["windows"][0]["tests"]
    assert report["flagged"] and tests["clip_svm"]["p_corrected"] < 0.01 and tests["ocr_nb"]["p_corrected"] < 0.01


def test_windows_are_full_newest_first_and_report_the_untested_statistics() -> None:
    rng = np.random.default_rng(3)
    records = traffic(rng, 250, blank_ocr=0.3)
    report = drift_report(records, make_reference(rng), window=100, windows=5, alpha=0.01)
    assert [w["n"] for w in report["windows"]] == [100, 100]  # the last 50 make no full window
    newest = report["windows"][0]
    assert newest["last_id"] == records[0]["id"] and newest["first_id"] == records[99]["id"]
    assert newest["no_input_share"]["ocr_nb"] == pytest.approx(0.3, abs=0.12)
    assert 0 <= newest["disagreement_rate"] <= 1 and 0.25 < newest["mean_top_confidence"] <= 1


def test_rare_classes_are_pooled_and_one_cell_is_no_evidence() -> None:
    share = np.array([0.97, 0.01, 0.01, 0.01])
    pooled = class_test(np.zeros(50, dtype=int), share)
    assert pooled["cells"] == 2 and pooled["p_value"] > 0.05
    assert class_test(np.zeros(3, dtype=int), share)["p_value"] == 1.0


def test_against_the_first_served_window_a_new_photo_session_alone_is_not_drift() -> None:
    rng = np.random.default_rng(4)
    reference = make_reference(rng)
    # Members answer the served photos less surely than their out-of-fold answers on the training session.
    first, later = traffic(rng, 200, member_sharpness=2.0), traffic(rng, 200, member_sharpness=2.0)
    assert drift_report(later, reference, window=200, windows=1, alpha=0.01)["flagged"]
    baseline = traffic_baseline(list(reversed(first)), reference)
    assert not drift_report(later, baseline, window=200, windows=1, alpha=0.01, source="traffic")["flagged"]
    shifted = traffic(rng, 200, member_sharpness=0.5)
    assert drift_report(shifted, baseline, window=200, windows=1, alpha=0.01)["flagged"]
    assert baseline.y is reference.y  # the class shares stay the training photos'
