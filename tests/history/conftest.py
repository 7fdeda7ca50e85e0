"""Fixtures and builders of the history tests: prediction records as the gateway hands them over, and stores on
both backends (SQLite and a real PostgreSQL)."""
from __future__ import annotations

import io
import sqlite3
import time

import psycopg
import pytest
from PIL import Image
from sqlalchemy import text

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


@pytest.fixture(params=["sqlite", "postgresql"])
def new_db(request, tmp_path):
    """Makes an empty history database on each backend: a SQLite file path, or a new database on the test
    PostgreSQL server (its URL)."""
    if request.param == "sqlite":
        return lambda name="history": tmp_path / "h" / f"{name}.sqlite3"
    server = request.getfixturevalue("postgres")
    return lambda name="history": server.create_database(name)


@pytest.fixture
def store(new_db):
    s = HistoryStore(new_db(), queue_size=20_000)
    yield s
    s.close()


def query_plan(store: HistoryStore, sql: str, params: tuple = ()) -> str:
    """The backend's own plan for `sql` (? placeholders), as one string. PostgreSQL is asked with sequential scans
    off, so a plan shows whether an index can serve the query at all, not the planner's choice on a tiny table."""
    if store.path is not None:
        conn = sqlite3.connect(store.path)
        try:
            return " ".join(str(r) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        finally:
            conn.close()
    with psycopg.connect(str(store.db.url.set(drivername="postgresql").render_as_string(hide_password=False))) as conn:
        conn.execute("SET enable_seqscan = off")
        return " ".join(r[0] for r in conn.execute("EXPLAIN " + sql.replace("?", "%s"), params))


def scalar(store: HistoryStore, sql: str) -> object:
    """One value from the store's own database, by plain SQL."""
    with store.db.begin() as conn:
        return conn.execute(text(sql)).scalar()
