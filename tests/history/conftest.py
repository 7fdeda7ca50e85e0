"""Fixtures and builders of the history tests: prediction records as the gateway hands them over."""
from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from shared.history import HistoryStore

T0 = float(int(time.time()) - 20_000)  # recent: the default 90-day retention keeps these
LABELS = ("apple", "banana", "milk")


def jpeg(color=(200, 30, 30), size=(300, 200)) -> bytes:
    """A plain JPEG (larger than a thumbnail)."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def record(i: int, *, ts: float | None = None, image: bytes | None = None, degraded: bool = False) -> dict:
    """The i-th test record: labels cycle through LABELS, ocr_nb answered, clip_svm timed out."""
    label = LABELS[i % len(LABELS)]
    return {
        "ts": T0 + i if ts is None else ts,
        "request_id": f"req-{i}",
        "sha256": f"{i:064x}",
        "size_bytes": 1000 + i,
        "image": image,
        "class_id": [i % len(LABELS)],
        "label": label,
        "proba": 0.5 + (i % 50) / 100,
        "members": {
            "ocr_nb": {"probas": {lab: 1 / 3 for lab in LABELS}, "label": "apple", "latency_ms": 12.5, "ok": True},
            "clip_svm": {"probas": None, "label": None, "latency_ms": 10000.0, "ok": False, "error": "timeout"},
        },
        "latency_ms": 40.0 + i % 7,
        "degraded": degraded,
        "source": "api" if i % 2 else "ui",
        "synthetic_weights": True,
    }


@pytest.fixture
def store(tmp_path):
    s = HistoryStore(tmp_path / "h" / "history.sqlite3", queue_size=20_000)
    yield s
    s.close()
