"""What to list from the history: HistoryFilter, pages and cursors, and their parsing from query strings."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Mapping

from sqlalchemy import ColumnElement

from shared.errors import BadRequest
from shared.history.schema import LABELLED, UNLABELLED, p

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# `reviewed=`: what a person said of the record; "wrong": labelled with another class than the answer's.
REVIEWED_CLAUSES = {"labelled": (LABELLED,), "unlabelled": (UNLABELLED,), "wrong": (LABELLED, p.true_label != p.label)}


@dataclass(frozen=True)
class HistoryFilter:
    """What to list: a class label, a time range [since, until) in epoch seconds, the degraded flag, whether a
    person labelled the record (`reviewed`: labelled, unlabelled, or wrong = labelled with another class than the
    answer's) and the model version that answered."""

    label: str | None = None
    since: float | None = None
    until: float | None = None
    degraded: bool | None = None
    reviewed: str | None = None
    model_version: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        """The SQL conditions, on schema.predictions."""
        conditions = [column == value for column, value in ((p.label, self.label), (p.model_version, self.model_version),
                      (p.degraded, None if self.degraded is None else int(self.degraded))) if value is not None]
        if self.since is not None:
            conditions.append(p.ts >= self.since)
        if self.until is not None:
            conditions.append(p.ts < self.until)
        return conditions + list(REVIEWED_CLAUSES.get(self.reviewed, ()))

    def to_query(self) -> dict[str, str]:
        """The filter as URL query parameters (for next-page and CSV links)."""
        out: dict[str, str] = {}
        if self.label is not None:
            out["label"] = self.label
        if self.since is not None:
            out["since"] = iso_time(self.since)
        if self.until is not None:
            out["until"] = iso_time(self.until)
        if self.degraded is not None:
            out["degraded"] = "true" if self.degraded else "false"
        if self.reviewed is not None:
            out["reviewed"] = self.reviewed
        if self.model_version is not None:
            out["model_version"] = self.model_version
        return out


@dataclass
class HistoryPage:
    """One page of records, newest first, and the cursor of the next (older) page."""

    items: list[dict] = field(default_factory=list)
    next_cursor: str | None = None


def iso_time(ts: float) -> str:
    """Epoch seconds as an ISO UTC datetime ending in Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    """Build a HistoryFilter from query parameters: label (or class), since, until, degraded, reviewed, model_version."""
    label = (args.get("label") or args.get("class") or "").strip() or None
    return HistoryFilter(
        label=label,
        since=parse_time(args.get("since"), "since"),
        until=parse_time(args.get("until"), "until", end_of_day=True),
        degraded=parse_bool(args.get("degraded"), "degraded"),
        reviewed=parse_reviewed(args.get("reviewed")),
        model_version=(args.get("model_version") or "").strip() or None,
    )


def parse_reviewed(value: str | None) -> str | None:
    """labelled / unlabelled / wrong; empty or 'any' -> None."""
    value = (value or "").strip().lower()
    if value in ("", "any", "all"):
        return None
    if value not in REVIEWED_CLAUSES:
        raise BadRequest(f"reviewed must be one of {', '.join(REVIEWED_CLAUSES)} or any, got {value!r}.")
    return value


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


def parse_limit(value: str | None) -> int:
    """A page size from the query string (the store clamps it to 1..MAX_PAGE_SIZE); PAGE_SIZE when absent."""
    if not value:
        return PAGE_SIZE
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value!r}.") from None
