"""Temperature scaling of the stack: the fit recovers a known temperature; scaling keeps every answer's class."""
from __future__ import annotations

import numpy as np
import pytest

from shared.learning.calibration import apply_temperature, fit_temperature


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_recovers_the_temperature_that_made_probabilities_miscalibrated(true_temperature: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(4000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(logits)])  # labels drawn from the calibrated probabilities
    miscalibrated = softmax(logits / true_temperature)  # 0.5: over-confident, 2.0: under-confident
    assert fit_temperature(miscalibrated, y) == pytest.approx(1 / true_temperature, rel=0.08)


def test_scaling_keeps_the_ranking_and_rows_sum_to_one() -> None:
    proba = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.7, 0.1]])  # forests give exact zeros
    for temperature in (0.3, 1.0, 3.0):
        scaled = apply_temperature(proba, temperature)
        assert (scaled.argmax(axis=1) == proba.argmax(axis=1)).all()
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    assert apply_temperature(proba, 0.3)[0, 0] > 0.5 > apply_temperature(proba, 3.0)[0, 0]
    np.testing.assert_array_equal(apply_temperature(proba, 1.0), proba)


def test_fit_needs_labelled_images() -> None:
    with pytest.raises(ValueError, match="at least one labelled image"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
