"""HistoryStore: recording in the background, filters, keyset paging, CSV, retention, failures counted."""
from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time

import psycopg
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from shared.errors import ClassifierError, NotFound
from shared.history import HistoryFilter, HistoryStore
from shared.history import store as store_module
from tests.history.conftest import LABELS, T0, jpeg, query_plan, record, scalar


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("history_record_failures_total", {"reason": reason}) or 0.0


def _fill(store: HistoryStore, n: int, **kw) -> None:
    for i in range(n):
        store.record(record(i, degraded=(i % 10 == 0), **kw))
    assert store.flush(60)


def test_item_names_the_parts_of_the_members_that_answered(store):
    rec = record(2)
    rec["members"]["ocr_nb"]["weights"] = {"ocr": "real"}
    rec["members"]["clip_svm"]["weights"] = {"clip": "synthetic"}  # failed: not behind the answer
    store.record(rec)
    store.record(record(3))  # an older record: members without weights
    assert store.flush()
    items = {item["request_id"]: item for item in store.query().items}
    assert items["req-2"]["weights"] == {"ocr": "real"} and items["req-3"]["weights"] == {}


def test_record_is_written_in_background_with_thumbnail(store):
    store.record(record(1, image=jpeg()))
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


def test_keep_images_stores_the_original_bytes(new_db):
    s = HistoryStore(new_db("k"), keep_images=True)
    data = jpeg()
    s.record(record(1, image=data))
    assert s.flush()
    assert s.image(s.query().items[0]["id"]) == data
    s.close()


def test_sqlite_is_in_wal_mode(tmp_path):
    s = HistoryStore(tmp_path / "wal.sqlite3")
    _fill(s, 3)
    assert scalar(s, "PRAGMA journal_mode") == "wal"
    s.close()


def test_a_filtered_page_reads_its_index_in_order(store):
    _fill(store, 3)
    plan = query_plan(store, "SELECT id FROM predictions WHERE label = ? AND (ts, id) < (?, ?) "
                             "ORDER BY ts DESC, id DESC LIMIT 50", ("apple", 1e12, 1))
    assert "ix_predictions_label_ts" in plan and "TEMP B-TREE" not in plan and "Sort" not in plan


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
        store.record(record(i, ts=T0))
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


def test_retention_by_age_and_by_row_cap(new_db):
    s = HistoryStore(new_db("r"), retention_days=1, max_rows=0)
    now = T0 + 10 * 86400
    for i in range(10):
        s.record(record(i, ts=now - i * 0.5 * 86400))  # every 12 h into the past
    assert s.flush()
    assert s.apply_retention(now=now) == 7  # older than one day: 1.5 days and up
    assert [i["request_id"] for i in s.query().items] == ["req-0", "req-1", "req-2"]
    s.max_rows = 2
    assert s.apply_retention(now=now) == 1
    assert [i["request_id"] for i in s.query().items] == ["req-0", "req-1"]
    s.close()


def test_retention_also_deletes_thumbnails(new_db):
    s = HistoryStore(new_db("t"), max_rows=1)
    s.record(record(1, image=jpeg()))
    s.record(record(2, image=jpeg()))
    assert s.flush()
    s.apply_retention()
    assert scalar(s, "SELECT COUNT(*) FROM images") == 1
    s.close()


def test_disabled_store_records_nothing(tmp_path):
    s = HistoryStore(tmp_path / "off.sqlite3", enabled=False)
    s.record(record(1))
    assert s.flush()
    assert not s.path.exists() and s.query().items == []


def test_unwritable_path_is_counted_and_record_returns_at_once(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    s = HistoryStore(blocker / "history.sqlite3", retry_s=0.5)
    before = _failures("storage_error")
    start = time.perf_counter()
    s.record(record(1))
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
    s = HistoryStore(path, retry_s=0.5)
    before = _failures("storage_error")
    s.record(record(1))
    s.record(record(2))
    assert s.flush()
    assert _failures("storage_error") >= before + 1
    with pytest.raises(ClassifierError) as err:
        s.query()
    assert err.value.status == 503 and "cannot be" in err.value.message
    s.close()


def test_full_queue_drops_the_record_and_counts_it(tmp_path):
    path = tmp_path / "locked.sqlite3"
    s = HistoryStore(path, queue_size=2)
    s.record(record(0))
    assert s.flush()
    # Another process holding the write lock stalls the writer, so the queue fills up.
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    before = _failures("queue_full")
    for i in range(1, 8):
        s.record(record(i))
    assert _failures("queue_full") >= before + 4  # 1 in the writer's hands, 2 queued, the rest dropped
    locker.execute("ROLLBACK")
    locker.close()
    assert s.flush(20)
    assert 2 <= len(s.query().items) <= 4
    s.close()


def test_writer_restarts_in_a_new_process_id(new_db):
    s = HistoryStore(new_db("fork"))
    s.record(record(1))
    assert s.flush()
    s._owner_pid = -1  # what a forked gunicorn worker sees: the parent's thread is not its own
    s.record(record(2))
    assert s.flush()
    assert len(s.query().items) == 2
    assert sum(t.name == "history-writer" for t in threading.enumerate()) >= 1
    s.close()


def test_undecodable_image_is_recorded_without_thumbnail(store):
    store.record(record(1, image=b"\xff\xd8\xff broken"))
    assert store.flush()
    item = store.query().items[0]
    assert item["has_thumbnail"] is False
    with pytest.raises(NotFound):
        store.thumbnail(item["id"])


def test_reading_while_the_first_record_creates_the_database_never_fails(tmp_path):
    """The writer's first connection switches the new file to WAL and makes the tables while a reader (GET
    /v1/history right after the first prediction) opens it: the reader sees an empty or a whole history."""
    for attempt in range(15):
        store = HistoryStore(tmp_path / f"h{attempt}.sqlite3")
        errors: list[Exception] = []
        start = threading.Barrier(5)

        def read() -> None:
            start.wait()
            for _ in range(20):
                try:
                    store.query()
                except Exception as exc:  # noqa: BLE001 - any failure, not only the expected kind, fails the test
                    errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(4)]
        for reader in readers:
            reader.start()
        start.wait()
        store.record(record(attempt))
        for reader in readers:
            reader.join(30)
        assert store.flush()
        store.close()
        assert not errors, errors[:3]


def test_a_record_that_cannot_be_stored_is_dropped_alone_and_at_once(store):
    before_error, before_storage = _failures("error"), _failures("storage_error")
    unmappable = record(1) | {"ts": "not a time"}  # this code cannot map it
    refused = record(2) | {"size_bytes": 10**20}  # the database refuses it: out of range, not worth a retry
    start = time.perf_counter()
    for rec in (record(0), unmappable, refused, record(3)):
        store.record(rec)
    assert store.flush(30)
    assert time.perf_counter() - start < 5  # no backoff spent on either
    assert sorted(i["request_id"] for i in store.query().items) == ["req-0", "req-3"]
    assert (_failures("error"), _failures("storage_error")) == (before_error + 1, before_storage + 1)


def test_retention_deletes_in_chunks_until_done(new_db, monkeypatch):
    monkeypatch.setattr(store_module, "RETENTION_CHUNK", 3)  # 3 rows a statement: 8 records take 3 statements
    s = HistoryStore(new_db("chunks"), pending_images=12)  # no limits while writing: the writer applies them too
    now = T0 + 10 * 86400
    for i in range(12):
        s.record(record(i, ts=now - (86400 * 2 if i < 4 else 0) + i, image=jpeg()))  # 4 expired, 8 recent
    assert s.flush()
    s.retention_days, s.max_rows, s.pending_images = 1, 4, 1
    assert s.apply_retention(now=now) == 4 + 4  # the expired, then the recent beyond the cap of 4
    kept = s.query().items
    assert [i["request_id"] for i in kept] == ["req-11", "req-10", "req-9", "req-8"]
    assert [i["has_image"] for i in kept] == [True, False, False, False] and all(i["has_thumbnail"] for i in kept)
    assert scalar(s, "SELECT COUNT(*) FROM images") == 4  # the deleted records' images went with them
    s.close()


def test_a_read_only_postgresql_is_waited_out_as_in_a_failover(postgres):
    """A standby promoted late answers writes with 'read-only transaction' (SQLSTATE 25006): retried, not dropped."""
    url = postgres.create_database("readonly")
    name = url.rsplit("/", 1)[1]
    s = HistoryStore(url, retry_s=30)
    s.record(record(0))
    assert s.flush()
    before = _failures("storage_error")
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        def read_only(on: bool) -> None:  # for new sessions; the store's pooled ones are ended, as a failover does
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

        read_only(True)
        s.record(record(1))
        deadline = time.monotonic() + 10
        while not (s.last_error and "read-only" in s.last_error) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.last_error and "read-only" in s.last_error
        read_only(False)
    assert s.flush(30) and s.count() == 2 and _failures("storage_error") == before
    s.close()


def test_an_id_beyond_64_bits_is_no_record(store):
    for call in (store.get, store.thumbnail, lambda i: store.set_label(i, "apple", "t")):
        with pytest.raises(NotFound):
            call(1606921011980227440315203584)
