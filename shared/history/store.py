"""HistoryStore: predictions written by a background thread to SQLite or PostgreSQL (database.py), read with keyset
paging, kept within bounds."""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from prometheus_client import Counter
from sqlalchemy import Select, delete, func, insert, select, tuple_, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, TimeoutError as PoolTimeout

from shared.config import Settings
from shared.errors import ClassifierError, NotFound
from shared.history.query import MAX_PAGE_SIZE, PAGE_SIZE, HistoryFilter, HistoryPage, format_cursor, parse_cursor
from shared.history.database import Database, database_target
from shared.history.records import csv_header, csv_row, item_from_row, row_from_record, shadow_row
from shared.history.schema import LABELS_SQL, LISTED, UNLABELLED, images, p, predictions, shadow_answers
from shared.history.thumbnails import make_thumbnail
from shared.members import member_names

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
SHADOW = "_shadow"  # marks a queued shadow answer (and stands for its blobs: it has none)
BATCH_SIZE = 200  # records per write transaction: one fsync for a burst instead of one each
RETENTION_EVERY_S = 600.0
EXPORT_CHUNK = 1000
RETENTION_CHUNK = 5000  # rows a retention statement touches at most
RETRY_S = 60.0  # HISTORY_RETRY_S
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 5.0
# What a retry can mend: the database unreachable, restarting or locked (a full pool too), and PostgreSQL's own
# transient states: read-only during a failover, shutting down, starting up, a deadlock or serialization failure. A
# corrupt file or a value the schema refuses is dropped at once.
TRANSIENT = (OperationalError, InterfaceError, PoolTimeout, OSError)
TRANSIENT_SQLSTATES = {"25006", "57P01", "57P02", "57P03", "40001", "40P01"}

RECORD_FAILURES = Counter(
    "history_record_failures", "Predictions whose history record was dropped", ["reason"]
)
RECORDS_WRITTEN = Counter("history_records_written", "Prediction records written to the history")
WRITE_ERRORS = Counter("history_write_errors", "Failed attempts to write a batch of records (each is retried)")

LABELS_GIVEN = Counter("history_labels", "Labels given to recorded predictions", ["outcome"])  # new|same|changed


class HistoryUnavailable(ClassifierError):
    """The history database cannot be opened, read or written (predictions still work); retry later."""

    status, code = 503, "history_unavailable"
    retry_after = 5


class HistoryStore:
    """The history: `record` enqueues and returns at once; one writer thread per process does the I/O."""

    def __init__(self, db: str | os.PathLike, *, enabled: bool = True, keep_images: bool = False,
                 retention_days: int = 0, max_rows: int = 0, queue_size: int = QUEUE_SIZE,
                 retention_every_s: float = RETENTION_EVERY_S, pending_images: int = 0, retry_s: float = RETRY_S):
        self.db = Database(db)  # a SQLite file path or a postgresql:// URL
        self.enabled = enabled
        self.keep_images = keep_images
        # Without keep_images: the full images of the newest `pending_images` unlabelled records are kept so that
        # a label can still export its photo; a labelled record keeps its image for as long as the record.
        self.pending_images = pending_images
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.retention_every_s = retention_every_s
        self.retry_s = retry_s
        # Bounded: while the database is down the writer retries one batch and up to queue_size records wait here;
        # what does not fit is dropped and counted, and the prediction never waits.
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._owner_pid = 0
        self._stopping = threading.Event()
        self.last_error: str | None = None  # this process's latest write failure, for the history page

    @property
    def path(self) -> Path | None:
        """The SQLite file (None on PostgreSQL)."""
        return self.db.path

    @classmethod
    def from_settings(cls, settings: Settings) -> "HistoryStore":
        """A store configured by the history_* settings (HISTORY_DB or HISTORY_DB_FILE)."""
        return cls(database_target(settings), enabled=settings.history_enabled,
                   keep_images=settings.history_keep_images, retention_days=settings.history_retention_days,
                   max_rows=settings.history_max_rows, pending_images=settings.history_pending_images,
                   retry_s=settings.history_retry_s)

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

    def record_shadow(self, rec: Mapping[str, Any]) -> None:
        """Queue what a shadow version answered for a copy of a live request (shadow_row's fields); as record()."""
        self.record({**rec, SHADOW: True})

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written (or dropped); True if done in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer thread; within `timeout`, even with the database down (what
        cannot be written then is dropped, counted)."""
        thread = self._thread
        if thread is not None and self._writer_running():
            self._stopping.set()  # no more retries: a stopping worker must not wait out HISTORY_RETRY_S
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
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
            self._stopping.clear()
            self._thread = threading.Thread(target=self._write_loop, name="history-writer", daemon=True)
            self._thread.start()

    def _write_loop(self) -> None:
        next_retention = 0.0
        while True:
            batch, stop = self._next_batch(timeout=self.retention_every_s)
            try:
                if batch:
                    self._write_with_retry(batch)
                if time.monotonic() >= next_retention:
                    self.apply_retention()
                    next_retention = time.monotonic() + self.retention_every_s
            except Exception as exc:  # retention, or a bug: the writer thread must live on
                log.error("history: retention on %s failed: %s", self.db, exc)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
            if stop:
                self.db.dispose()
                return

    def _write_with_retry(self, batch: list[dict]) -> None:
        """Write one batch. While the database cannot be reached (down, restarting, locked) retry with backoff for
        retry_s; then, or at once for an error retrying cannot mend, drop the batch, counted."""
        rows, blobs = [], []
        for rec in batch:  # once, not per attempt
            try:
                row, blob = ((shadow_row(rec), SHADOW) if rec.get(SHADOW) else
                             (row_from_record(rec), self._blobs_from_record(rec)))
            except Exception:  # a record this code cannot map: a bug, never worth a retry; the others go on
                log.exception("history: could not prepare a record")
                RECORD_FAILURES.labels(reason="error").inc()
                continue
            rows.append(row)
            blobs.append(blob)
        if not rows:
            return
        first_failure, wait = 0.0, RETRY_FIRST_S
        while True:
            try:
                self._insert(rows, blobs)
                if first_failure:
                    log.warning("history: %s is writable again; %d record(s) written after %.1f s of retries",
                                self.db, len(rows), time.monotonic() - first_failure)
                self.last_error = None
                return
            except Exception as exc:
                WRITE_ERRORS.inc()
                self.last_error = f"{type(exc).__name__}: {_first_line(exc)}"
                first_failure = first_failure or time.monotonic()
                if not _transient(exc) and len(rows) > 1:
                    self._insert_one_by_one(rows, blobs)  # one refused row must not take its batch with it
                    return
                if (not _transient(exc) or self._stopping.is_set()
                        or time.monotonic() - first_failure + wait > self.retry_s):
                    log.error("history: could not write %d record(s) to %s: %s", len(rows), self.db, self.last_error)
                    RECORD_FAILURES.labels(reason="storage_error").inc(len(rows))
                    return
                log.warning("history: %s refused %d record(s) (%s); retrying in %.2f s", self.db, len(rows),
                            self.last_error, wait)
                self._stopping.wait(wait)
                wait = min(wait * 2, RETRY_MAX_S)

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

    def _insert_one_by_one(self, rows: list[dict], blobs: list[Any]) -> None:
        for row, blob in zip(rows, blobs):
            try:
                self._insert([row], [blob])
            except Exception as exc:
                log.error("history: %s refused a record: %s", self.db, _first_line(exc))
                RECORD_FAILURES.labels(reason="storage_error").inc()

    def _insert(self, rows: list[dict], blobs: list[Any]) -> None:
        """Predictions with their blobs, and shadow answers (their blob is the SHADOW marker), in one transaction."""
        shadows = [row for row, blob in zip(rows, blobs) if blob is SHADOW]
        kept = [(row, blob) for row, blob in zip(rows, blobs) if blob is not SHADOW]
        with self.db.begin() as conn:
            if kept:
                ids = conn.execute(insert(predictions).returning(p.id, sort_by_parameter_order=True),
                                   [row for row, _ in kept]).scalars().all()
                stored = [{"id": i, "thumbnail": thumb, "image": image}
                          for i, (_, (thumb, image)) in zip(ids, kept) if thumb is not None or image is not None]
                if stored:
                    conn.execute(insert(images), stored)
            if shadows:
                conn.execute(insert(shadow_answers), shadows)
        RECORDS_WRITTEN.inc(len(kept))

    def _blobs_from_record(self, rec: Mapping[str, Any]) -> tuple[bytes | None, bytes | None]:
        data = rec.get("image")
        if not data:
            return None, None
        return make_thumbnail(data), (bytes(data) if self.keep_images or self.pending_images > 0 else None)

    # --- retention --------------------------------------------------------
    def apply_retention(self, now: float | None = None) -> int:
        """Delete records older than retention_days and beyond max_rows, and the full images of unlabelled records
        beyond the newest pending_images; returns how many records went. In chunks of RETENTION_CHUNK rows, a
        transaction each: a first pass over millions of rows stays within PostgreSQL's statement timeout, and
        SQLite's write lock is never held for long."""
        deleted = 0
        if self.retention_days > 0:
            cutoff = (time.time() if now is None else now) - self.retention_days * 86400.0
            deleted += self._in_chunks(delete(predictions).where(p.id.in_(
                select(p.id).where(p.ts < cutoff).order_by(p.ts, p.id).limit(RETENTION_CHUNK))))
            s = shadow_answers.c
            self._in_chunks(delete(shadow_answers).where(s.id.in_(
                select(s.id).where(s.ts < cutoff).order_by(s.ts, s.id).limit(RETENTION_CHUNK))))
        if self.max_rows > 0:
            # The newest row that falls outside the cap; everything at or below it in (ts, id) order goes.
            with self.db.begin() as conn:
                edge = conn.execute(select(p.ts, p.id).order_by(p.ts.desc(), p.id.desc())
                                    .limit(1).offset(self.max_rows)).first()
            if edge is not None:
                deleted += self._in_chunks(delete(predictions).where(p.id.in_(
                    select(p.id).where(tuple_(p.ts, p.id) <= tuple_(*edge)).order_by(p.ts, p.id)
                    .limit(RETENTION_CHUNK))))
        if self.max_rows > 0:  # shadow answers: at most as many as records
            s = shadow_answers.c
            with self.db.begin() as conn:
                edge = conn.execute(select(s.id).order_by(s.id.desc()).limit(1).offset(self.max_rows)).scalar()
            if edge is not None:
                self._in_chunks(delete(shadow_answers).where(s.id.in_(
                    select(s.id).where(s.id <= edge).order_by(s.id).limit(RETENTION_CHUNK))))
        if not self.keep_images:  # thumbnails stay
            beyond = (select(p.id).join(images, images.c.id == p.id).where(UNLABELLED, images.c.image.is_not(None))
                      .order_by(p.ts.desc(), p.id.desc()).offset(self.pending_images).limit(RETENTION_CHUNK))
            self._in_chunks(update(images).where(images.c.id.in_(beyond)).values(image=None))
        return deleted

    def _in_chunks(self, statement: Any) -> int:
        """Run a statement that touches at most RETENTION_CHUNK rows until it touches fewer; the rows touched."""
        total = 0
        while True:
            with self.db.begin(write_lock=True) as conn:
                done = conn.execute(statement).rowcount
            total += done
            if done < RETENTION_CHUNK:
                return total

    # --- labels -------------------------------------------------------------
    def set_label(self, record_id: int, label: str, by: str, now: float | None = None) -> dict:
        """Store a person's class for one record (the latest wins; a different one counts a change), written and
        committed before it returns; the updated record with `label_outcome` new, same or changed. NotFound if
        there is no such record."""
        _check_id(record_id)
        changed = self._write_label(record_id, label, by, time.time() if now is None else now)
        if changed is None and self._queue.unfinished_tasks and self.flush(timeout=2.0):
            changed = self._write_label(record_id, label, by, time.time() if now is None else now)  # just answered
        if changed is None:
            raise NotFound(f"There is no history record with id {record_id} (retention may have removed it).")
        LABELS_GIVEN.labels(changed).inc()
        return self.get(record_id) | {"label_outcome": changed}

    def record_for_request(self, request_id: str) -> int:
        """The id of the newest record answering this request id; NotFound if none."""
        sql = select(p.id).where(p.request_id == request_id).order_by(p.ts.desc(), p.id.desc()).limit(1)
        rows = self._read(sql)
        if not rows and self._queue.unfinished_tasks and self.flush(timeout=2.0):
            rows = self._read(sql)
        if not rows:
            raise NotFound(f"There is no history record for request id {request_id!r}.")
        return rows[0]["id"]

    def _write_label(self, record_id: int, label: str, by: str, now: float) -> str | None:
        """'new', 'same' or 'changed'; None when the record does not exist. Concurrent labels of one record
        serialise (SQLite's write lock, PostgreSQL's row lock), and each counts against the label it replaced."""
        try:
            with self.db.begin(write_lock=True) as conn:
                row = conn.execute(select(p.true_label).where(p.id == record_id).with_for_update()).first()
                if row is not None:
                    conn.execute(update(predictions).where(p.id == record_id).values(
                        label_changes=p.label_changes + int(row.true_label not in (None, label)),
                        true_label=label, labelled_by=by, labelled_at=now))
        except (SQLAlchemyError, OSError) as exc:
            raise self._unavailable("written", exc) from None
        if row is None:
            return None
        before = row.true_label
        return "new" if before is None else ("same" if before == label else "changed")

    def review_queue(self, *, limit: int = PAGE_SIZE, cursor: str | None = None) -> HistoryPage:
        """Unlabelled records, the ones a label would teach most first (review_priority, then newest)."""
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        after = parse_cursor(cursor)
        sql = LISTED.where(UNLABELLED, p.priority.is_not(None))
        if after is not None:
            sql = sql.where(tuple_(p.priority, p.id) < tuple_(*after))
        rows = self._read(sql.order_by(p.priority.desc(), p.id.desc()).limit(limit + 1))
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
        _check_id(record_id)
        rows = self._read(LISTED.where(p.id == record_id))
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
        return [r["label"] for r in self._read(LABELS_SQL)]

    def count(self, flt: HistoryFilter = HistoryFilter()) -> int:
        """How many records match the filter."""
        return self._read(select(func.count().label("n")).select_from(predictions).where(*flt.where()))[0]["n"]

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

    # --- shadow answers ---------------------------------------------------------
    def shadow_pairs(self, version: str, since: float | None = None) -> list[Mapping[str, Any]]:
        """Every shadow answer of `version` (since a time): its label, the live answer's label and version, and the
        label a person gave the live record, if any (joined by request id)."""
        s = shadow_answers.c
        sql = (select(s.label, s.live_label, s.live_version, s.degraded, p.true_label)
               .select_from(shadow_answers.outerjoin(predictions, p.request_id == s.request_id))
               .where(s.model_version == version))
        if since is not None:
            sql = sql.where(s.ts >= since)
        return self._read(sql)

    def _select(self, flt: HistoryFilter, limit: int, after: tuple[float, int] | None,
                oldest_first: bool = False) -> list[Mapping[str, Any]]:
        sql = LISTED.where(*flt.where())
        if after is not None:
            key = tuple_(p.ts, p.id)
            sql = sql.where(key > tuple_(*after) if oldest_first else key < tuple_(*after))
        order = (p.ts, p.id) if oldest_first else (p.ts.desc(), p.id.desc())
        return self._read(sql.order_by(*order).limit(limit))

    def _blob(self, column: str, record_id: int) -> bytes:
        _check_id(record_id)
        rows = self._read(select(images.c[column].label("data")).where(images.c.id == record_id))
        if not rows or rows[0]["data"] is None:
            raise NotFound(f"History record {record_id} has no stored {column}.")
        return bytes(rows[0]["data"])

    def _read(self, sql: Select | Any) -> list[Mapping[str, Any]]:
        if not self.db.exists():
            if self.path.parent.exists() and not self.path.parent.is_dir():
                raise HistoryUnavailable(f"The history database {self.path} cannot be created: "
                                         f"{self.path.parent} is a file, not a folder.")
            return []  # nothing recorded yet: an empty history, not an error
        try:
            with self.db.begin() as conn:
                return list(conn.execute(sql).mappings())
        except (SQLAlchemyError, OSError) as exc:
            raise self._unavailable("read", exc) from None

    def _unavailable(self, what: str, exc: BaseException) -> HistoryUnavailable:
        return HistoryUnavailable(f"The history database {self.db} cannot be {what}: {_first_line(exc)}")


def _check_id(record_id: int) -> None:
    """Ids are 64-bit on both backends: a larger one (a fuzzed URL) is no record, not a driver's OverflowError."""
    if not 0 <= record_id < 2**63:
        raise NotFound(f"There is no history record with id {record_id}.")


def _drain(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def _transient(exc: BaseException) -> bool:
    """Whether a retry may succeed where this attempt failed."""
    return isinstance(exc, TRANSIENT) or getattr(getattr(exc, "orig", None), "sqlstate", None) in TRANSIENT_SQLSTATES


def _first_line(exc: BaseException) -> str:
    """The driver's own words, without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
