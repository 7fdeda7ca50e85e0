"""HistoryStore: predictions written to SQLite by a background thread, read with keyset paging, kept within bounds."""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from prometheus_client import Counter

from shared.config import Settings
from shared.errors import ClassifierError, NotFound
from shared.history.query import MAX_PAGE_SIZE, PAGE_SIZE, HistoryFilter, HistoryPage, format_cursor, parse_cursor
from shared.history.records import (INSERT, LIST_COLUMNS, SCHEMA, add_columns, csv_header, csv_row, item_from_row,
                                    row_from_record)
from shared.history.thumbnails import make_thumbnail
from shared.members import member_names

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
BATCH_SIZE = 200  # records per write transaction: one fsync for a burst instead of one each
RETENTION_EVERY_S = 600.0
EXPORT_CHUNK = 1000

RECORD_FAILURES = Counter(
    "history_record_failures", "Predictions whose history record was dropped", ["reason"]
)
RECORDS_WRITTEN = Counter("history_records_written", "Prediction records written to the history")

LABELS_GIVEN = Counter("history_labels", "Labels given to recorded predictions", ["outcome"])  # new|same|changed


class HistoryUnavailable(ClassifierError):
    """The history database cannot be opened, read or written (predictions still work); retry later."""

    status, code = 503, "history_unavailable"
    retry_after = 5


class HistoryStore:
    """SQLite history: `record` enqueues and returns at once; one writer thread per process does the I/O."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True, keep_images: bool = False,
                 retention_days: int = 0, max_rows: int = 0, queue_size: int = QUEUE_SIZE,
                 retention_every_s: float = RETENTION_EVERY_S, pending_images: int = 0):
        self.path = Path(path)
        self.enabled = enabled
        self.keep_images = keep_images
        # Without keep_images: the full images of the newest `pending_images` unlabelled records are kept so that
        # a label can still export its photo; a labelled record keeps its image for as long as the record.
        self.pending_images = pending_images
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.retention_every_s = retention_every_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._owner_pid = 0
        self._schema_ready = False
        self._setup_lock = threading.Lock()  # the writer and a reader may open the new database at once
        self.last_error: str | None = None  # this process's latest write failure, for the history page

    @classmethod
    def from_settings(cls, settings: Settings) -> "HistoryStore":
        """A store configured by the history_* settings."""
        return cls(settings.history_db, enabled=settings.history_enabled, keep_images=settings.history_keep_images,
                   retention_days=settings.history_retention_days, max_rows=settings.history_max_rows,
                   pending_images=settings.history_pending_images)

    # --- writing ----------------------------------------------------------
    def record(self, rec: Mapping[str, Any]) -> None:
        """Queue one prediction for writing; never raises and never blocks."""
        if not self.enabled:
            return
        try:
            self._ensure_writer()
            self._queue.put_nowait(dict(rec))
        except queue.Full:
            RECORD_FAILURES.labels(reason="queue_full").inc()
        except Exception:  # the prediction must answer whatever happens here
            log.exception("history: could not queue a record")
            RECORD_FAILURES.labels(reason="error").inc()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written (or dropped); True if done in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer thread."""
        thread = self._thread
        if thread is not None and self._writer_running():
            self._queue.put(None)
            thread.join(timeout)
        self._thread = None

    def _writer_running(self) -> bool:
        # A forked gunicorn worker inherits the parent's thread object, not the thread: it is not its own.
        return self._thread is not None and self._thread.is_alive() and self._owner_pid == os.getpid()

    def _ensure_writer(self) -> None:
        # Started lazily, and again after a fork: threads do not survive into gunicorn workers.
        if self._writer_running():
            return
        with self._lock:
            if self._writer_running():
                return
            self._owner_pid = os.getpid()
            self._thread = threading.Thread(target=self._write_loop, name="history-writer", daemon=True)
            self._thread.start()

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        next_retention = 0.0
        while True:
            batch, stop = self._next_batch(timeout=self.retention_every_s)
            try:
                conn = conn or self._connect()
                if batch:
                    self._write_batch(conn, batch)
                    self.last_error = None
                if time.monotonic() >= next_retention:
                    self.apply_retention(conn=conn)
                    next_retention = time.monotonic() + self.retention_every_s
            except Exception as exc:
                log.error("history: could not write %d record(s) to %s: %s", len(batch), self.path, exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                if batch:
                    RECORD_FAILURES.labels(reason="storage_error").inc(len(batch))
                conn = _close_quietly(conn)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
            if stop:
                _close_quietly(conn)
                return

    def _next_batch(self, timeout: float) -> tuple[list[dict], bool]:
        """Block for one record, then take whatever else is already queued; (batch, stop requested)."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < BATCH_SIZE:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _write_batch(self, conn: sqlite3.Connection, batch: list[dict]) -> None:
        rows = [row_from_record(rec) for rec in batch]
        blobs = [self._blobs_from_record(rec) for rec in batch]
        with conn:
            for row, (thumb, image) in zip(rows, blobs):
                cur = conn.execute(INSERT, row)
                if thumb is not None or image is not None:
                    conn.execute("INSERT INTO images (id, thumbnail, image) VALUES (?,?,?)",
                                 (cur.lastrowid, thumb, image))
        RECORDS_WRITTEN.inc(len(batch))

    def _blobs_from_record(self, rec: Mapping[str, Any]) -> tuple[bytes | None, bytes | None]:
        data = rec.get("image")
        if not data:
            return None, None
        return make_thumbnail(data), (bytes(data) if self.keep_images or self.pending_images > 0 else None)

    # --- retention --------------------------------------------------------
    def apply_retention(self, now: float | None = None, conn: sqlite3.Connection | None = None) -> int:
        """Delete records older than retention_days and beyond max_rows; returns how many went."""
        own = conn is None
        conn = conn or self._connect()
        try:
            with conn:
                deleted = self._delete_expired(conn, time.time() if now is None else now)
                deleted += self._delete_over_cap(conn)
                self._drop_pending_images(conn)
            return deleted
        finally:
            if own:
                conn.close()

    def _delete_expired(self, conn: sqlite3.Connection, now: float) -> int:
        if self.retention_days <= 0:
            return 0
        return conn.execute("DELETE FROM predictions WHERE ts < ?", (now - self.retention_days * 86400.0,)).rowcount

    def _delete_over_cap(self, conn: sqlite3.Connection) -> int:
        if self.max_rows <= 0:
            return 0
        # The newest row that falls outside the cap; everything at or below it in (ts, id) order goes.
        edge = conn.execute(
            "SELECT ts, id FROM predictions ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?", (self.max_rows,)
        ).fetchone()
        if edge is None:
            return 0
        return conn.execute("DELETE FROM predictions WHERE (ts, id) <= (?, ?)", edge).rowcount

    def _drop_pending_images(self, conn: sqlite3.Connection) -> int:
        """Forget the full images of unlabelled records beyond the newest pending_images (thumbnails stay)."""
        if self.keep_images:
            return 0
        return conn.execute(
            "UPDATE images SET image = NULL WHERE id IN (SELECT p.id FROM predictions p JOIN images i ON i.id = p.id"
            " WHERE p.true_label IS NULL AND i.image IS NOT NULL ORDER BY p.ts DESC, p.id DESC LIMIT -1 OFFSET ?)",
            (self.pending_images,)).rowcount

    # --- labels -------------------------------------------------------------
    def set_label(self, record_id: int, label: str, by: str, now: float | None = None) -> dict:
        """Store a person's class for one record (the latest wins; a different one counts a change), written and
        committed before it returns; the updated record with `label_outcome` new, same or changed. NotFound if
        there is no such record."""
        changed = self._write_label(record_id, label, by, time.time() if now is None else now)
        if changed is None and self._queue.unfinished_tasks and self.flush(timeout=2.0):
            changed = self._write_label(record_id, label, by, time.time() if now is None else now)  # just answered
        if changed is None:
            raise NotFound(f"There is no history record with id {record_id} (retention may have removed it).")
        LABELS_GIVEN.labels(changed).inc()
        return self.get(record_id) | {"label_outcome": changed}

    def record_for_request(self, request_id: str) -> int:
        """The id of the newest record answering this request id; NotFound if none."""
        sql = "SELECT id FROM predictions WHERE request_id = ? ORDER BY ts DESC, id DESC LIMIT 1"
        rows = self._read(sql, (request_id,))
        if not rows and self._queue.unfinished_tasks and self.flush(timeout=2.0):
            rows = self._read(sql, (request_id,))
        if not rows:
            raise NotFound(f"There is no history record for request id {request_id!r}.")
        return rows[0]["id"]

    def _write_label(self, record_id: int, label: str, by: str, now: float) -> str | None:
        """'new', 'same' or 'changed'; None when the record does not exist. Concurrent labels of one record
        serialise in SQLite's write lock, and each counts against the label it replaced."""
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise HistoryUnavailable(f"The history database {self.path} cannot be opened: {exc}") from None
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: read-then-update is one step for every labeller
            row = conn.execute("SELECT true_label FROM predictions WHERE id = ?", (record_id,)).fetchone()
            if row is not None:
                conn.execute("UPDATE predictions SET label_changes = label_changes + ?, true_label = ?,"
                             " labelled_by = ?, labelled_at = ? WHERE id = ?",
                             (int(row["true_label"] not in (None, label)), label, by, now, record_id))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"The history database {self.path} cannot be written: {exc}") from None
        finally:
            conn.close()
        if row is None:
            return None
        before = row["true_label"]
        return "new" if before is None else ("same" if before == label else "changed")

    def review_queue(self, *, limit: int = PAGE_SIZE, cursor: str | None = None) -> HistoryPage:
        """Unlabelled records, the ones a label would teach most first (review_priority, then newest)."""
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        after = parse_cursor(cursor)
        clause, params = ("", ()) if after is None else (" AND (priority, id) < (?, ?)", after)
        rows = self._read(f"SELECT {LIST_COLUMNS} FROM predictions WHERE true_label IS NULL AND priority IS NOT NULL"
                          f"{clause} ORDER BY priority DESC, id DESC LIMIT ?", (*params, limit + 1))
        page = HistoryPage(items=[item_from_row(r) for r in rows[:limit]])
        if len(rows) > limit:
            last = rows[limit - 1]
            page.next_cursor = format_cursor(last["priority"], last["id"])
        return page

    def iter_labelled(self, flt: HistoryFilter = HistoryFilter()) -> Iterator[dict]:
        """Every labelled record matching the filter, newest first, read in chunks."""
        return self.iter_items(dataclasses.replace(flt, reviewed="wrong" if flt.reviewed == "wrong" else "labelled"))

    def iter_items(self, flt: HistoryFilter = HistoryFilter(), oldest_first: bool = False) -> Iterator[dict]:
        """Every record matching the filter, newest first (or oldest first), read in chunks as it is consumed."""
        cursor: tuple[float, int] | None = None
        while True:
            rows = self._select(flt, EXPORT_CHUNK, cursor, oldest_first)
            yield from (item_from_row(row) for row in rows)
            if len(rows) < EXPORT_CHUNK:
                return
            cursor = (rows[-1]["ts"], rows[-1]["id"])

    # --- reading ----------------------------------------------------------
    def query(self, flt: HistoryFilter = HistoryFilter(), *, limit: int = PAGE_SIZE,
              cursor: str | None = None) -> HistoryPage:
        """One page, newest first; pass the returned next_cursor to get the next one."""
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        rows = self._select(flt, limit + 1, parse_cursor(cursor))
        page = HistoryPage(items=[item_from_row(r) for r in rows[:limit]])
        if len(rows) > limit:
            last = rows[limit - 1]
            page.next_cursor = format_cursor(last["ts"], last["id"])
        return page

    def get(self, record_id: int) -> dict:
        """One record by id; NotFound if there is none."""
        rows = self._read(f"SELECT {LIST_COLUMNS} FROM predictions WHERE id = ?", (record_id,))
        if not rows:
            raise NotFound(f"There is no history record with id {record_id}.")
        return item_from_row(rows[0])

    def thumbnail(self, record_id: int) -> bytes:
        """The JPEG thumbnail of one record; NotFound if it has none."""
        return self._blob("thumbnail", record_id)

    def image(self, record_id: int) -> bytes:
        """The full image of one record (kept with history_keep_images, for labelled records, and for the newest
        history_pending_images unlabelled ones); NotFound otherwise."""
        return self._blob("image", record_id)

    def labels(self) -> list[str]:
        """Every class label seen in the history, sorted (for the filter's choices)."""
        # A skip-scan of the label index: one lookup per distinct label instead of a pass over every row.
        rows = self._read(
            "WITH RECURSIVE seen(label) AS (SELECT MIN(label) FROM predictions UNION ALL"
            " SELECT (SELECT MIN(label) FROM predictions WHERE label > seen.label) FROM seen"
            " WHERE seen.label IS NOT NULL) SELECT label FROM seen WHERE label IS NOT NULL", ())
        return [r["label"] for r in rows]

    def count(self, flt: HistoryFilter = HistoryFilter()) -> int:
        """How many records match the filter."""
        clauses, params = flt.where()
        sql = "SELECT COUNT(*) AS n FROM predictions" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        return self._read(sql, tuple(params))[0]["n"]

    def iter_csv(self, flt: HistoryFilter = HistoryFilter()) -> Iterator[str]:
        """The matching records as CSV text, newest first, streamed in chunks; five columns per member."""
        members = member_names()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(csv_header(members))
        for n, item in enumerate(self.iter_items(flt), start=1):
            writer.writerow(csv_row(item, members))
            if n % EXPORT_CHUNK == 0:
                yield _drain(buf)
        yield _drain(buf)

    def _select(self, flt: HistoryFilter, limit: int, after: tuple[float, int] | None,
                oldest_first: bool = False) -> list[sqlite3.Row]:
        clauses, params = flt.where()
        if after is not None:
            clauses.append("(ts, id) > (?, ?)" if oldest_first else "(ts, id) < (?, ?)")
            params.extend(after)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        order = "ts, id" if oldest_first else "ts DESC, id DESC"
        sql = f"SELECT {LIST_COLUMNS} FROM predictions{where} ORDER BY {order} LIMIT ?"
        return self._read(sql, (*params, limit))

    def _blob(self, column: str, record_id: int) -> bytes:
        rows = self._read(f"SELECT {column} AS data FROM images WHERE id = ?", (record_id,))
        if not rows or rows[0]["data"] is None:
            raise NotFound(f"History record {record_id} has no stored {column}.")
        return bytes(rows[0]["data"])

    def _read(self, sql: str, params: tuple) -> list[sqlite3.Row]:
        if not self.path.exists():
            if self.path.parent.exists() and not self.path.parent.is_dir():
                raise HistoryUnavailable(f"The history database {self.path} cannot be created: "
                                         f"{self.path.parent} is a file, not a folder.")
            return []  # nothing recorded yet: an empty history, not an error
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise HistoryUnavailable(f"The history database {self.path} cannot be opened: {exc}") from None
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the writer created the file and has not made its tables yet
                return []
            raise HistoryUnavailable(f"The history database {self.path} cannot be read: {exc}") from None
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"The history database {self.path} cannot be read: {exc}") from None
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, one fsync per checkpoint
            conn.execute("PRAGMA foreign_keys=ON")
            if not self._schema_ready:
                # Once per process, one thread at a time: a reader racing the writer's first journal-mode switch
                # and schema got "database is locked" (a 503 from /v1/history right after the first prediction).
                with self._setup_lock:
                    if not self._schema_ready:
                        conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: once is enough
                        conn.executescript(SCHEMA)
                        add_columns(conn)
                        self._schema_ready = True
        except Exception:
            conn.close()
            raise
        return conn


def _drain(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass
    return None
