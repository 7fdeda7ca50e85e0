"""Dynamic batching through a real clip service: concurrent distinct images never get each other's answers."""
from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

THREADS = 16
ROUNDS = 3
SAME = 1e-5  # one image alone vs in a batch: float32 rounding only
DISTINCT = 1e-3  # images whose answers differ less than this could be swapped unnoticed


def noise_jpeg(seed: int) -> bytes:
    """A distinct 64x64 JPEG per seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def answer(url: str, image: bytes) -> np.ndarray:
    resp = requests.post(url + "/predict", data=image, timeout=120)
    assert resp.status_code == 200, resp.text
    probas = resp.json()["probas"]
    return np.array([probas[label] for label in sorted(probas)])


def batch_histogram(url: str) -> tuple[float, float]:
    """(sum, count) of the service's classifier_batch_size histogram."""
    text = requests.get(url + "/metrics", timeout=10).text
    found = dict(re.findall(r"^classifier_batch_size_(sum|count)\{[^}]*\}\s+(\S+)$", text, flags=re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def distinct_images(url: str, candidates: int = 40, wanted: int = 12) -> tuple[list[bytes], list[np.ndarray]]:
    """Images whose answers, each sent alone, differ from one another by more than DISTINCT."""
    images, alone = [], []
    for seed in range(candidates):
        image = noise_jpeg(seed)
        reference = answer(url, image)
        if all(np.abs(reference - other).max() > DISTINCT for other in alone):
            images.append(image)
            alone.append(reference)
        if len(images) == wanted:
            return images, alone
    pytest.fail(f"only {len(images)} of {candidates} images gave distinguishable answers; the test would prove nothing")


def test_concurrent_distinct_images_get_their_own_answers(start_service) -> None:
    service = start_service("clip_svm", GUNICORN_THREADS=THREADS, BATCH_MAX_SIZE=8, BATCH_MAX_WAIT_MS=50)
    images, alone = distinct_images(service.url)
    before = batch_histogram(service.url)
    jobs = [i for _ in range(ROUNDS) for i in range(len(images))]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        answers = list(pool.map(lambda i: answer(service.url, images[i]), jobs))
    for i, got in zip(jobs, answers):
        nearest = int(np.argmin([np.abs(got - ref).max() for ref in alone]))
        assert nearest == i, f"image {i} got the answer of image {nearest}"
        np.testing.assert_allclose(got, alone[i], atol=SAME)
    after = batch_histogram(service.url)
    batches = after[1] - before[1]
    assert after[0] - before[0] == len(jobs)
    assert batches < len(jobs), f"{len(jobs)} requests in {batches:.0f} forward passes: batching was not exercised"


def test_granted_slack_holds_a_lone_request_and_the_member_says_how_long(stack) -> None:
    image = noise_jpeg(7)
    clip = stack.urls["clip_svm"] + "/predict"
    held = requests.post(clip, data=image, headers={"X-Batch-Slack-Ms": "300"}, timeout=60)
    plain = requests.post(clip, data=image, timeout=60)
    assert held.status_code == plain.status_code == 200
    assert 250 <= float(held.headers["X-Batch-Wait-Ms"]) < 2000, "alone, it waits out its slack for company"
    assert float(plain.headers["X-Batch-Wait-Ms"]) < 100, "without slack a lone request never waits"
    assert held.json()["probas"] == pytest.approx(plain.json()["probas"], abs=SAME)
    ocr = requests.post(stack.urls["ocr_nb"] + "/predict", data=image, headers={"X-Batch-Slack-Ms": "300"}, timeout=60)
    assert ocr.status_code == 200 and "X-Batch-Wait-Ms" not in ocr.headers  # OCR does not batch
    bad = requests.post(clip, data=image, headers={"X-Batch-Slack-Ms": "later"}, timeout=60)
    assert bad.status_code == 400 and "X-Batch-Slack-Ms" in bad.json()["error"]["message"]
