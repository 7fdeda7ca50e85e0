"""The gateway's response cache: the same image bytes (sha256) under the same model version get the stored answer.

Per gunicorn worker, in memory: an LRU bounded by entries and by bytes (of the JSON body), each entry expiring after
a TTL. Only complete answers are kept: a degraded one (a member failed) is never cached. A hit answers with the
stored body as it was (its request_id and latency_ms are the first request's), `X-Cache: hit`; the history still
records it, marked `cached`. Counted in Prometheus: classifier_cache_{hits,misses,evictions}_total.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, g
from prometheus_client import Counter

from shared.config import Settings

CACHE_HEADER = "X-Cache"
HITS = Counter("classifier_cache_hits_total", "Gateway response cache: answers served from the cache")
MISSES = Counter("classifier_cache_misses_total", "Gateway response cache: answers computed (not in the cache)")
EVICTIONS = Counter("classifier_cache_evictions_total", "Gateway response cache: entries dropped, by reason",
                    ["reason"])


@dataclass
class _Entry:
    body: dict
    size: int
    expires: float


class ResponseCache:
    """A thread-safe LRU of prediction bodies keyed by (sha256, model_version); 0 entries or bytes = off."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ResponseCache:
        return cls(settings.cache_max_entries, settings.cache_max_bytes, settings.cache_ttl_s)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0 and self.ttl_s > 0

    def get(self, sha256: str, model_version: str) -> dict | None:
        """A copy of the stored body, or None (counted as a hit or a miss)."""
        if not self.enabled:
            return None
        key = (sha256, model_version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires <= self.clock():
                self._drop(key, "expired")
                entry = None
            if entry is None:
                MISSES.inc()
                return None
            self._entries.move_to_end(key)
            HITS.inc()
            return copy.deepcopy(entry.body)

    def put(self, sha256: str, model_version: str, body: dict) -> None:
        """Keep a complete answer; a degraded one, or one larger than the whole cache, is not kept."""
        if not self.enabled or body.get("degraded"):
            return
        size = len(json.dumps(body, separators=(",", ":")))
        if size > self.max_bytes:
            return
        key = (sha256, model_version)
        with self._lock:
            if key in self._entries:
                self._drop(key, None)
            self._entries[key] = _Entry(copy.deepcopy(body), size, self.clock() + self.ttl_s)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest, "entries" if len(self._entries) > self.max_entries else "bytes")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _drop(self, key: tuple[str, str], reason: str | None) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        if reason:
            EVICTIONS.labels(reason).inc()


def init_app(app: Flask, settings: Settings) -> ResponseCache:
    """The gateway's cache as app.extensions["cache"]; responses say X-Cache: hit|miss when it was asked."""
    cache = ResponseCache.from_settings(settings)
    app.extensions["cache"] = cache

    @app.after_request
    def _cache_header(response: Response) -> Response:
        status = g.get("cache_status")
        if status:
            response.headers[CACHE_HEADER] = status
        return response

    return cache


def mark(status: str) -> None:
    """This request's cache outcome ("hit" or "miss"), for the X-Cache header."""
    g.cache_status = status
