"""HistoryStore: recording in the background, filters, keyset paging, CSV, retention, failures counted."""
from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from flask import Flask
from PIL import Image
from prometheus_client import REGISTRY

from shared.history import store as history
from shared.config import Settings
from shared.errors import BadRequest, ClassifierError, NotFound
from shared.history.store import HistoryFilter, HistoryStore

T0 = float(int(time.time()) - 20_000)  # recent: the default 90-day retention keeps these
LABELS = ("apple", "banana", "milk")


def _jpeg(color=(200, 30, 30), size=(300, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def _rec(i: int, *, ts: float | None = None, image: bytes | None = None, degraded: bool = False) -> dict:
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


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("history_record_failures_total", {"reason": reason}) or 0.0


@pytest.fixture
def store(tmp_path):
    s = HistoryStore(tmp_path / "h" / "history.sqlite3", queue_size=20_000)
    yield s
    s.close()


def _fill(store: HistoryStore, n: int, **kw) -> None:
    for i in range(n):
        store.record(_rec(i, degraded=(i % 10 == 0), **kw))
    assert store.flush(60)


def test_record_is_written_in_background_with_thumbnail(store):
    store.record(_rec(1, image=_jpeg()))
    assert store.flush()
    page = store.query()
    assert [item["request_id"] for item in page.items] == ["req-1"]
    item = page.items[0]
    assert item["label"] == "banana" and item["class_id"] == 1 and item["synthetic_weights"] is True
    assert item["members"]["ocr_nb"]["label"] == "apple"
    assert item["members"]["clip_svm"]["error"] == "timeout"
    assert item["time"].endswith("Z")
    thumb = Image.open(io.BytesIO(store.thumbnail(item["id"])))
    assert thumb.format == "JPEG" and max(thumb.size) == 96
    with pytest.raises(NotFound):
        store.image(item["id"])  # full images are kept only with keep_images


def test_keep_images_stores_the_original_bytes(tmp_path):
    s = HistoryStore(tmp_path / "k.sqlite3", keep_images=True)
    data = _jpeg()
    s.record(_rec(1, image=data))
    assert s.flush()
    assert s.image(s.query().items[0]["id"]) == data
    s.close()


def test_wal_mode_and_indexes(store):
    _fill(store, 3)
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_predictions_ts", "ix_predictions_label_ts", "ix_predictions_degraded_ts"} <= indexes
    plan = " ".join(str(r) for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM predictions WHERE label = ? AND (ts, id) < (?, ?) "
        "ORDER BY ts DESC, id DESC LIMIT 50", ("apple", 1e12, 1)))
    assert "ix_predictions_label_ts" in plan and "TEMP B-TREE" not in plan
    conn.close()


def test_filters_by_label_degraded_and_time(store):
    _fill(store, 60)
    assert {i["label"] for i in store.query(HistoryFilter(label="milk"), limit=500).items} == {"milk"}
    assert store.count(HistoryFilter(label="milk")) == 20
    degraded = store.query(HistoryFilter(degraded=True), limit=500).items
    assert len(degraded) == 6 and all(i["degraded"] for i in degraded)
    assert store.count(HistoryFilter(degraded=False)) == 54
    window = store.query(HistoryFilter(since=T0 + 10, until=T0 + 20), limit=500).items
    assert [i["request_id"] for i in window] == [f"req-{i}" for i in range(19, 9, -1)]
    both = store.query(HistoryFilter(label="apple", degraded=True, since=T0 + 1), limit=500).items
    assert [i["request_id"] for i in both] == ["req-30"]  # 0, 30 are apple+degraded; 0 is before `since`
    assert store.labels() == sorted(LABELS)


def test_keyset_paging_over_10k_rows_is_complete_and_fast(store, capsys):
    n = 10_500
    _fill(store, n)
    seen: list[str] = []
    timings: list[float] = []
    cursor = None
    while True:
        start = time.perf_counter()
        page = store.query(limit=100, cursor=cursor)
        timings.append(time.perf_counter() - start)
        seen += [i["request_id"] for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"req-{i}" for i in range(n - 1, -1, -1)]  # newest first, no gaps, no repeats
    filtered = []
    cursor = None
    while True:
        page = store.query(HistoryFilter(label="banana", degraded=False), limit=250, cursor=cursor)
        filtered += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(filtered) == sum(1 for i in range(n) if i % 3 == 1 and i % 10 != 0)
    start = time.perf_counter()
    assert store.labels() == sorted(LABELS)
    labels_ms = (time.perf_counter() - start) * 1000
    # Timing is reported, not asserted: the machine is shared.
    with capsys.disabled():
        print(f"\n[history] {n} rows, {len(timings)} pages of 100: "
              f"max {max(timings) * 1000:.1f} ms, mean {sum(timings) / len(timings) * 1000:.2f} ms per page; "
              f"class list {labels_ms:.1f} ms")


def test_same_timestamp_rows_page_without_loss(store):
    for i in range(25):
        store.record(_rec(i, ts=T0))
    assert store.flush()
    ids, cursor = [], None
    while True:
        page = store.query(limit=7, cursor=cursor)
        ids += [i["id"] for i in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 25


def test_csv_export_has_every_matching_row(store):
    _fill(store, 2500)
    text = "".join(store.iter_csv(HistoryFilter(label="apple")))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 834
    assert rows[0]["request_id"] == "req-2499" and rows[0]["label"] == "apple"
    assert rows[0]["ocr_nb_label"] == "apple" and rows[0]["clip_svm_ok"] == "False"
    assert rows[0]["clip_svm_error"] == "timeout"


def test_retention_by_age_and_by_row_cap(tmp_path):
    s = HistoryStore(tmp_path / "r.sqlite3", retention_days=1, max_rows=0)
    now = T0 + 10 * 86400
    for i in range(10):
        s.record(_rec(i, ts=now - i * 0.5 * 86400))  # every 12 h into the past
    assert s.flush()
    assert s.apply_retention(now=now) == 7  # older than one day: 1.5 days and up
    assert [i["request_id"] for i in s.query().items] == ["req-0", "req-1", "req-2"]
    s.max_rows = 2
    assert s.apply_retention(now=now) == 1
    assert [i["request_id"] for i in s.query().items] == ["req-0", "req-1"]
    s.close()


def test_retention_also_deletes_thumbnails(tmp_path):
    s = HistoryStore(tmp_path / "t.sqlite3", max_rows=1)
    s.record(_rec(1, image=_jpeg()))
    s.record(_rec(2, image=_jpeg()))
    assert s.flush()
    s.apply_retention()
    conn = sqlite3.connect(s.path)
    assert conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    conn.close()
    s.close()


def test_disabled_store_records_nothing(tmp_path):
    s = HistoryStore(tmp_path / "off.sqlite3", enabled=False)
    s.record(_rec(1))
    assert s.flush()
    assert not s.path.exists() and s.query().items == []


def test_unwritable_path_is_counted_and_record_returns_at_once(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    s = HistoryStore(blocker / "history.sqlite3")
    before = _failures("storage_error")
    start = time.perf_counter()
    s.record(_rec(1))
    assert time.perf_counter() - start < 0.05  # the caller never waits for storage
    assert s.flush()
    assert _failures("storage_error") == before + 1
    assert s.last_error and "not-a-dir" in s.last_error
    with pytest.raises(ClassifierError, match="is a file, not a folder"):
        s.query()
    s.close()


def test_corrupt_database_is_counted_and_reads_fail_in_words(tmp_path):
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a sqlite database" * 100)
    s = HistoryStore(path)
    before = _failures("storage_error")
    s.record(_rec(1))
    s.record(_rec(2))
    assert s.flush()
    assert _failures("storage_error") >= before + 1
    with pytest.raises(ClassifierError) as err:
        s.query()
    assert err.value.status == 503 and "cannot be" in err.value.message
    s.close()


def test_full_queue_drops_the_record_and_counts_it(tmp_path):
    path = tmp_path / "locked.sqlite3"
    s = HistoryStore(path, queue_size=2)
    s.record(_rec(0))
    assert s.flush()
    # Another process holding the write lock stalls the writer, so the queue fills up.
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    before = _failures("queue_full")
    for i in range(1, 8):
        s.record(_rec(i))
    assert _failures("queue_full") >= before + 4  # 1 in the writer's hands, 2 queued, the rest dropped
    locker.execute("ROLLBACK")
    locker.close()
    assert s.flush(20)
    assert 2 <= len(s.query().items) <= 4
    s.close()


def test_writer_restarts_in_a_new_process_id(tmp_path):
    s = HistoryStore(tmp_path / "fork.sqlite3")
    s.record(_rec(1))
    assert s.flush()
    s._owner_pid = -1  # what a forked gunicorn worker sees: the parent's thread is not its own
    s.record(_rec(2))
    assert s.flush()
    assert len(s.query().items) == 2
    assert sum(t.name == "history-writer" for t in threading.enumerate()) >= 1
    s.close()


@pytest.mark.parametrize("value,expected", [
    ("2026-11-21", 1_795_219_200.0), ("1795219200", 1_795_219_200.0), ("2026-11-21T00:00:00Z", 1_795_219_200.0),
])
def test_parse_time(value, expected):
    assert history.parse_time(value, "since") == expected
    assert history.parse_time("2026-11-21", "until", end_of_day=True) == expected + 86400


def test_bad_query_parameters_say_what_is_allowed():
    with pytest.raises(BadRequest, match="since must be"):
        history.parse_filter({"since": "yesterday"})
    with pytest.raises(BadRequest, match="degraded must be one of true, false or any, got 'maybe'"):
        history.parse_filter({"degraded": "maybe"})
    with pytest.raises(BadRequest, match="cursor"):
        history.parse_cursor("nonsense")


# --- the /v1/history endpoints, on a real Flask app --------------------------------
@pytest.fixture
def client(tmp_path):
    app = Flask(__name__)
    settings = Settings.from_env({}, history_db=tmp_path / "api.sqlite3")
    s = history.init_app(app, settings)

    @app.errorhandler(ClassifierError)
    def _error(exc):  # the gateway maps errors the same way
        return exc.to_dict(), exc.status

    s.record(_rec(1, image=_jpeg()))
    for i in range(2, 8):
        s.record(_rec(i, degraded=(i == 5)))
    assert s.flush()
    yield app.test_client()
    s.close()


def test_api_lists_with_filters_and_cursor(client):
    body = client.get("/v1/history?limit=3").get_json()
    assert [i["request_id"] for i in body["items"]] == ["req-7", "req-6", "req-5"]
    assert body["next_cursor"] and body["next_url"].startswith("/v1/history?")
    nxt = client.get(body["next_url"]).get_json()
    assert [i["request_id"] for i in nxt["items"]] == ["req-4", "req-3", "req-2"]
    degraded = client.get("/v1/history?degraded=true").get_json()
    assert [i["request_id"] for i in degraded["items"]] == ["req-5"]
    assert client.get("/v1/history?label=banana").get_json()["items"][0]["label"] == "banana"


def test_api_csv_and_thumbnail(client):
    for url in ("/v1/history.csv?label=banana", "/v1/history?format=csv&label=banana"):
        resp = client.get(url)
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
        assert [r["request_id"] for r in rows] == ["req-7", "req-4", "req-1"]
    first = client.get("/v1/history?label=banana").get_json()["items"][-1]
    thumb = client.get(first["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert client.get(f"/v1/history/{first['id']}").get_json()["request_id"] == "req-1"


def test_api_errors_are_json_in_words(client):
    resp = client.get("/v1/history?degraded=maybe")
    assert resp.status_code == 400 and "degraded must be" in resp.get_json()["error"]["message"]
    resp = client.get("/v1/history/999999/thumbnail")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("P", "GIF"), ("L", "JPEG"), ("I;16", "PNG")])
def test_thumbnails_of_other_modes_are_small_jpegs(mode, fmt):
    buf = io.BytesIO()
    Image.new(mode, (400, 100)).save(buf, format=fmt)
    thumb = Image.open(io.BytesIO(history.make_thumbnail(buf.getvalue())))
    assert thumb.format == "JPEG" and thumb.size == (96, 24)


def test_undecodable_image_is_recorded_without_thumbnail(store):
    store.record(_rec(1, image=b"\xff\xd8\xff broken"))
    assert store.flush()
    item = store.query().items[0]
    assert item["has_thumbnail"] is False
    with pytest.raises(NotFound):
        store.thumbnail(item["id"])
