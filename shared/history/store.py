"""Prediction history: a SQLite store written by a background thread, queried with keyset paging."""
from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from prometheus_client import Counter

from shared.config import MEMBERS, Settings
from shared.errors import BadRequest, ClassifierError, NotFound

log = logging.getLogger(__name__)

THUMBNAIL_PX = 96
QUEUE_SIZE = 1000
BATCH_SIZE = 200  # records per write transaction: one fsync for a burst instead of one each
RETENTION_EVERY_S = 600.0
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
EXPORT_CHUNK = 1000

RECORD_FAILURES = Counter(
    "history_record_failures", "Predictions whose history record was dropped", ["reason"]
)
RECORDS_WRITTEN = Counter("history_records_written", "Prediction records written to the history")

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT,
    sha256 TEXT,
    size_bytes INTEGER,
    class_id INTEGER,
    label TEXT,
    proba REAL,
    latency_ms REAL,
    degraded INTEGER NOT NULL DEFAULT 0,
    source TEXT,
    synthetic INTEGER NOT NULL DEFAULT 0,
    members TEXT
);
CREATE INDEX IF NOT EXISTS ix_predictions_ts ON predictions (ts, id);
CREATE INDEX IF NOT EXISTS ix_predictions_label_ts ON predictions (label, ts, id);
CREATE INDEX IF NOT EXISTS ix_predictions_degraded_ts ON predictions (degraded, ts, id);
CREATE INDEX IF NOT EXISTS ix_predictions_request ON predictions (request_id);
-- Blobs live apart so that listing and filtering scan small rows only.
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY REFERENCES predictions (id) ON DELETE CASCADE,
    thumbnail BLOB,
    image BLOB
);
"""

LIST_COLUMNS = (
    "id, ts, request_id, sha256, size_bytes, class_id, label, proba, latency_ms, degraded, source, synthetic, members,"
    " EXISTS (SELECT 1 FROM images i WHERE i.id = predictions.id AND i.thumbnail IS NOT NULL) AS has_thumbnail"
)


@dataclass(frozen=True)
class HistoryFilter:
    """What to list: a class label, a time range [since, until) in epoch seconds, and the degraded flag."""

    label: str | None = None
    since: float | None = None
    until: float | None = None
    degraded: bool | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        """SQL conditions and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.label is not None:
            clauses.append("label = ?")
            params.append(self.label)
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        if self.degraded is not None:
            clauses.append("degraded = ?")
            params.append(int(self.degraded))
        return clauses, params

    def to_query(self) -> dict[str, str]:
        """The filter as URL query parameters (for next-page and CSV links)."""
        out: dict[str, str] = {}
        if self.label is not None:
            out["label"] = self.label
        if self.since is not None:
            out["since"] = _iso(self.since)
        if self.until is not None:
            out["until"] = _iso(self.until)
        if self.degraded is not None:
            out["degraded"] = "true" if self.degraded else "false"
        return out


@dataclass
class HistoryPage:
    """One page of records, newest first, and the cursor of the next (older) page."""

    items: list[dict] = field(default_factory=list)
    next_cursor: str | None = None


class HistoryStore:
    """SQLite history: `record` enqueues and returns at once; one writer thread per process does the I/O."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        enabled: bool = True,
        keep_images: bool = False,
        retention_days: int = 0,
        max_rows: int = 0,
        queue_size: int = QUEUE_SIZE,
        retention_every_s: float = RETENTION_EVERY_S,
    ):
        self.path = Path(path)
        self.enabled = enabled
        self.keep_images = keep_images
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.retention_every_s = retention_every_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._owner_pid = 0
        self._schema_ready = False
        self.last_error: str | None = None  # this process's latest write failure, for the history page

    @classmethod
    def from_settings(cls, settings: Settings) -> "HistoryStore":
        """A store configured by the history_* settings."""
        return cls(
            settings.history_db,
            enabled=settings.history_enabled,
            keep_images=settings.history_keep_images,
            retention_days=settings.history_retention_days,
            max_rows=settings.history_max_rows,
        )

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
        if thread is not None and thread.is_alive() and self._owner_pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)
        self._thread = None

    def _ensure_writer(self) -> None:
        # Started lazily, and again after a fork: threads do not survive into gunicorn workers.
        if self._thread is not None and self._thread.is_alive() and self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._owner_pid == os.getpid():
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
        rows = [_row_from_record(rec) for rec in batch]
        blobs = [self._blobs_from_record(rec) for rec in batch]
        with conn:
            for row, (thumb, image) in zip(rows, blobs):
                cur = conn.execute(
                    "INSERT INTO predictions (ts, request_id, sha256, size_bytes, class_id, label, proba,"
                    " latency_ms, degraded, source, synthetic, members) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                if thumb is not None or image is not None:
                    conn.execute("INSERT INTO images (id, thumbnail, image) VALUES (?,?,?)",
                                 (cur.lastrowid, thumb, image))
        RECORDS_WRITTEN.inc(len(batch))

    def _blobs_from_record(self, rec: Mapping[str, Any]) -> tuple[bytes | None, bytes | None]:
        data = rec.get("image")
        if not data:
            return None, None
        return make_thumbnail(data), (bytes(data) if self.keep_images else None)

    # --- retention --------------------------------------------------------
    def apply_retention(self, now: float | None = None, conn: sqlite3.Connection | None = None) -> int:
        """Delete records older than retention_days and beyond max_rows; returns how many went."""
        own = conn is None
        conn = conn or self._connect()
        try:
            with conn:
                deleted = self._delete_expired(conn, time.time() if now is None else now)
                deleted += self._delete_over_cap(conn)
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

    # --- reading ----------------------------------------------------------
    def query(self, flt: HistoryFilter = HistoryFilter(), *, limit: int = PAGE_SIZE,
              cursor: str | None = None) -> HistoryPage:
        """One page, newest first; pass the returned next_cursor to get the next one."""
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        rows = self._select(flt, limit + 1, parse_cursor(cursor))
        page = HistoryPage(items=[_item_from_row(r) for r in rows[:limit]])
        if len(rows) > limit:
            last = rows[limit - 1]
            page.next_cursor = format_cursor(last["ts"], last["id"])
        return page

    def get(self, record_id: int) -> dict:
        """One record by id; NotFound if there is none."""
        rows = self._read(f"SELECT {LIST_COLUMNS} FROM predictions WHERE id = ?", (record_id,))
        if not rows:
            raise NotFound(f"There is no history record with id {record_id}.")
        return _item_from_row(rows[0])

    def thumbnail(self, record_id: int) -> bytes:
        """The JPEG thumbnail of one record; NotFound if it has none."""
        return self._blob("thumbnail", record_id)

    def image(self, record_id: int) -> bytes:
        """The full image of one record (only kept with history_keep_images); NotFound otherwise."""
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
        """The matching records as CSV text, newest first, streamed in chunks."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_HEADER)
        cursor: tuple[float, int] | None = None
        while True:
            rows = self._select(flt, EXPORT_CHUNK, cursor)
            for row in rows:
                writer.writerow(_csv_row(_item_from_row(row)))
            yield _drain(buf)
            if len(rows) < EXPORT_CHUNK:
                return
            cursor = (rows[-1]["ts"], rows[-1]["id"])

    def _select(self, flt: HistoryFilter, limit: int, after: tuple[float, int] | None) -> list[sqlite3.Row]:
        clauses, params = flt.where()
        if after is not None:
            clauses.append("(ts, id) < (?, ?)")
            params.extend(after)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        sql = f"SELECT {LIST_COLUMNS} FROM predictions{where} ORDER BY ts DESC, id DESC LIMIT ?"
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
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"The history database {self.path} cannot be read: {exc}") from None
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, one fsync per checkpoint
            conn.execute("PRAGMA foreign_keys=ON")
            if not self._schema_ready:
                conn.executescript(SCHEMA)
                self._schema_ready = True
        except Exception:
            conn.close()
            raise
        return conn


class HistoryUnavailable(ClassifierError):
    """The history database cannot be opened or read (predictions still work)."""

    status, code = 503, "history_unavailable"


# --- record <-> row ---------------------------------------------------------
def _row_from_record(rec: Mapping[str, Any]) -> tuple:
    class_id = rec.get("class_id")
    if isinstance(class_id, (list, tuple)):
        class_id = class_id[0] if class_id else None
    return (
        float(rec.get("ts") or time.time()),
        rec.get("request_id"),
        rec.get("sha256"),
        rec.get("size_bytes"),
        None if class_id is None else int(class_id),
        rec.get("label"),
        _maybe_float(rec.get("proba")),
        _maybe_float(rec.get("latency_ms")),
        int(bool(rec.get("degraded"))),
        rec.get("source"),
        int(bool(rec.get("synthetic_weights"))),
        json.dumps(_compact_members(rec.get("members") or {}), separators=(",", ":")),
    )


def _compact_members(members: Mapping[str, Any]) -> dict:
    """Members' results with probabilities rounded, so a row stays small."""
    out = {}
    for name, m in members.items():
        m = dict(m or {})
        probas = m.get("probas")
        if isinstance(probas, Mapping):
            m["probas"] = {k: round(float(v), 5) for k, v in probas.items()}
        elif isinstance(probas, (list, tuple)):
            m["probas"] = [round(float(v), 5) for v in probas]
        out[name] = m
    return out


def _item_from_row(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "ts": row["ts"],
        "time": _iso(row["ts"]),
        "request_id": row["request_id"],
        "sha256": row["sha256"],
        "size_bytes": row["size_bytes"],
        "class_id": row["class_id"],
        "label": row["label"],
        "proba": row["proba"],
        "latency_ms": row["latency_ms"],
        "degraded": bool(row["degraded"]),
        "source": row["source"],
        "synthetic_weights": bool(row["synthetic"]),
        "members": json.loads(row["members"] or "{}"),
        "has_thumbnail": bool(row["has_thumbnail"]),
    }


CSV_HEADER = (
    ["id", "time", "ts", "request_id", "sha256", "size_bytes", "class_id", "label", "proba", "latency_ms",
     "degraded", "source", "synthetic_weights"]
    + [f"{m}_{col}" for m in MEMBERS for col in ("label", "proba", "ok", "latency_ms", "error")]
)


def _csv_row(item: dict) -> list:
    row = [item[k] for k in CSV_HEADER[:13]]
    for name in MEMBERS:
        m = item["members"].get(name) or {}
        row += [m.get("label"), member_top_proba(m), m.get("ok"), m.get("latency_ms"), m.get("error")]
    return row


def member_top_proba(member: Mapping[str, Any]) -> float | None:
    """The member's probability of its own top class."""
    probas = member.get("probas")
    values = list(probas.values()) if isinstance(probas, Mapping) else list(probas or [])
    return max(values) if values else None


def _drain(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- thumbnails -------------------------------------------------------------
def make_thumbnail(data: bytes, size: int = THUMBNAIL_PX) -> bytes | None:
    """A JPEG no larger than size x size, or None if the bytes do not decode."""
    try:
        img = _decode_small(bytes(data), size)
        img.thumbnail((size, size))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=80)
        return out.getvalue()
    except Exception as exc:  # a thumbnail is a nicety; the record is kept without one
        log.warning("history: no thumbnail: %s", exc)
        return None


def _decode_small(data: bytes, size: int):
    """RGB image; JPEGs decode at 1/2..1/8 scale so a big photo costs the writer a fraction of a full decode."""
    from PIL import Image, ImageOps

    from shared.images import decode_image

    img = Image.open(io.BytesIO(data))
    if img.format != "JPEG":
        return decode_image(data)  # every other format and mode, exactly as the models see it
    img.draft("RGB", (size * 2, size * 2))
    return ImageOps.exif_transpose(img).convert("RGB")


# --- cursors and filters from query strings -----------------------------------
def format_cursor(ts: float, record_id: int) -> str:
    """An opaque-looking but readable cursor: '<ts>_<id>' of the last row on the page."""
    return f"{ts!r}_{record_id}"


def parse_cursor(cursor: str | None) -> tuple[float, int] | None:
    """'<ts>_<id>' -> (ts, id); BadRequest if malformed."""
    if not cursor:
        return None
    try:
        ts, record_id = cursor.rsplit("_", 1)
        return float(ts), int(record_id)
    except ValueError:
        raise BadRequest(f"cursor must be the next_cursor of a previous page, got {cursor!r}.") from None


def parse_filter(args: Mapping[str, str]) -> HistoryFilter:
    """Build a HistoryFilter from query parameters: label (or class), since, until, degraded."""
    label = (args.get("label") or args.get("class") or "").strip() or None
    return HistoryFilter(
        label=label,
        since=parse_time(args.get("since"), "since"),
        until=parse_time(args.get("until"), "until", end_of_day=True),
        degraded=parse_bool(args.get("degraded"), "degraded"),
    )


def parse_time(value: str | None, name: str, *, end_of_day: bool = False) -> float | None:
    """Epoch seconds, an ISO date (a whole UTC day) or an ISO datetime -> epoch seconds."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
            return start + 86400.0 if end_of_day else start  # 'until' a date includes that whole day
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError:
        raise BadRequest(
            f"{name} must be epoch seconds, a date like 2026-11-21 or a datetime like 2026-11-21T12:00:00Z, "
            f"got {value!r}."
        ) from None


def parse_bool(value: str | None, name: str) -> bool | None:
    """'true'/'false' (and 1/0, yes/no) -> bool; empty or 'any' -> None."""
    value = (value or "").strip().lower()
    if value in ("", "any", "all"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"{name} must be one of true, false or any, got {value!r}.")


# --- HTTP: /v1/history ----------------------------------------------------------
def init_app(app, settings: Settings) -> HistoryStore:
    """Attach a HistoryStore as app.extensions["history"] and register the /v1/history endpoints."""
    store = HistoryStore.from_settings(settings)
    app.extensions["history"] = store
    atexit.register(store.close)  # a stopping worker writes what is still queued
    app.register_blueprint(_blueprint())
    return store


def _blueprint():
    from flask import Blueprint, Response, current_app, jsonify, request, url_for

    bp = Blueprint("history_api", __name__)

    def store() -> HistoryStore:
        return current_app.extensions["history"]

    @bp.get("/v1/history")
    def list_records():
        if request.args.get("format", "json").lower() == "csv":
            return export_csv()
        flt = parse_filter(request.args)
        page = store().query(flt, limit=_limit(request.args.get("limit")), cursor=request.args.get("cursor"))
        for item in page.items:
            if item["has_thumbnail"]:
                item["thumbnail_url"] = url_for("history_api.thumbnail", record_id=item["id"])
        body = {"items": page.items, "next_cursor": page.next_cursor, "filters": flt.to_query(),
                "recording": store().enabled}
        if page.next_cursor:
            body["next_url"] = url_for("history_api.list_records", cursor=page.next_cursor,
                                       limit=len(page.items), **flt.to_query())
        return jsonify(body)

    @bp.get("/v1/history.csv")
    def export_csv():
        flt = parse_filter(request.args)
        headers = {"Content-Disposition": 'attachment; filename="history.csv"'}
        return Response(store().iter_csv(flt), mimetype="text/csv", headers=headers)

    @bp.get("/v1/history/<int:record_id>")
    def one_record(record_id: int):
        return jsonify(store().get(record_id))

    @bp.get("/v1/history/<int:record_id>/thumbnail")
    def thumbnail(record_id: int):
        return _jpeg_or_image(store().thumbnail(record_id))

    @bp.get("/v1/history/<int:record_id>/image")
    def image(record_id: int):
        return _jpeg_or_image(store().image(record_id))

    return bp


IMAGE_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif", b"RIFF": "image/webp",
               b"BM": "image/bmp", b"II*\x00": "image/tiff", b"MM\x00*": "image/tiff"}


def _jpeg_or_image(data: bytes):
    from flask import Response

    mimetype = next((m for magic, m in IMAGE_MAGIC.items() if data.startswith(magic)), "application/octet-stream")
    # Records never change once written, so a browser may keep them.
    return Response(data, mimetype=mimetype, headers={"Cache-Control": "private, max-age=86400"})


def _limit(value: str | None) -> int:
    if not value:
        return PAGE_SIZE
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value!r}.") from None
