"""Prediction history: the SQLite store (written in the background), its queries, thumbnails and HTTP routes.

Import from here; the modules behind it are its private layout:
store (HistoryStore), records (row mapping, CSV), thumbnails, query (filters, cursors),
routes (init_app, current_history).
"""
from shared.history.query import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    HistoryFilter,
    HistoryPage,
    format_cursor,
    parse_bool,
    parse_cursor,
    parse_filter,
    parse_time,
)
from shared.history.records import member_top_proba
from shared.history.routes import current_history, init_app
from shared.history.store import HistoryStore, HistoryUnavailable
from shared.history.thumbnails import make_thumbnail

__all__ = [
    "MAX_PAGE_SIZE", "PAGE_SIZE", "HistoryFilter", "HistoryPage", "HistoryStore", "HistoryUnavailable",
    "current_history", "format_cursor", "init_app", "make_thumbnail", "member_top_proba", "parse_bool",
    "parse_cursor", "parse_filter", "parse_time",
]
