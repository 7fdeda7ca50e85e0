"""The gateway's response cache: the same image bytes (sha256) under the same model version get the stored answer.

Per gunicorn worker, in memory: an LRU bounded by entries and by bytes (of the JSON body), each entry expiring after
a TTL. Only complete answers are kept: a degraded one (a member failed) is never cached. A hit answers with the
stored body as it was (its request_id and latency_ms are the first request's), `X-Cache: hit`; the history still
records it, marked `cached`. Counted in Prometheus: classifier_cache_{hits,misses,evictions}_total.

The store is cachetools' `TTLCache` (LRU order, one TTL for every entry) with `maxsize` in bytes: `getsizeof` is an
entry's JSON length, so cachetools itself evicts the least recently used entries until a new one fits. cachetools
bounds one size only; the bound on entries is the second, enforced after each insert by the same LRU `popitem`.
Both bounds evict from the same end of the same order, so the entries left are those the two bounds together allow,
whichever bound is hit first (a `TLRUCache` would only add per-entry TTLs, which nothing here needs). cachetools is
not thread-safe: one lock guards every call.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache
from flask import Flask, Response, current_app, g
from prometheus_client import Counter

from shared.config import Settings

CACHE_HEADER = "X-Cache"
HITS = Counter("classifier_cache_hits_total", "Gateway response cache: answers served from the cache")
MISSES = Counter("classifier_cache_misses_total", "Gateway response cache: answers computed (not in the cache)")
EVICTIONS = Counter("classifier_cache_evictions_total", "Gateway response cache: entries dropped, by reason",
                    ["reason"])
_EXTENSION = "cache"  # app.extensions key; read through current_cache()

Key = tuple[str, str]


def json_size(body: dict) -> int:
    """The body's size as the cache counts it: its compact JSON length."""
    return len(json.dumps(body, separators=(",", ":")))


class _Store(TTLCache):
    """A TTLCache bounded by bytes (its maxsize) and by entries; counts each eviction by reason."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float, clock: Callable[[], float]):
        super().__init__(max_bytes, ttl_s, timer=clock, getsizeof=json_size)
        self.max_entries = max_entries

    def __setitem__(self, key: Key, value: dict) -> None:
        super().__setitem__(key, value)
        while len(self) > self.max_entries:
            TTLCache.popitem(self)  # not self.popitem: that one counts evictions for bytes
            EVICTIONS.labels("entries").inc()

    def popitem(self) -> tuple[Key, dict]:
        """cachetools calls this inside __setitem__ only, to make room in bytes."""
        item = super().popitem()
        EVICTIONS.labels("bytes").inc()
        return item

    def expire(self, time: float | None = None) -> list[tuple[Key, dict]]:
        expired = super().expire(time)
        if expired:
            EVICTIONS.labels("expired").inc(len(expired))
        return expired


class ResponseCache:
    """A thread-safe LRU of prediction bodies keyed by (sha256, model_version); 0 entries or bytes = off."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._store = _Store(max_entries, max_bytes, ttl_s, clock)
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
        with self._lock:
            self._store.expire()  # drops (and counts) what has expired, this entry included
            body = self._store.get((sha256, model_version))
            if body is None:
                MISSES.inc()
                return None
            HITS.inc()
            return copy.deepcopy(body)

    def put(self, sha256: str, model_version: str, body: dict) -> None:
        """Keep a complete answer; a degraded one, or one larger than the whole cache, is not kept."""
        if not self.enabled or body.get("degraded"):
            return
        kept = copy.deepcopy(body)
        with self._lock:
            try:
                self._store[(sha256, model_version)] = kept
            except ValueError:  # cachetools: larger than maxsize, i.e. than the whole cache
                return

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return int(self._store.currsize)


def init_app(app: Flask, settings: Settings) -> ResponseCache:
    """Keep the gateway's cache on the app (current_cache()); responses say X-Cache: hit|miss when it was asked."""
    cache = ResponseCache.from_settings(settings)
    app.extensions[_EXTENSION] = cache

    @app.after_request
    def _cache_header(response: Response) -> Response:
        status = g.get("cache_status")
        if status:
            response.headers[CACHE_HEADER] = status
        return response

    return cache


def current_cache() -> ResponseCache:
    """The current app's response cache."""
    return current_app.extensions[_EXTENSION]


def mark(status: str) -> None:
    """This request's cache outcome ("hit" or "miss"), for the X-Cache header."""
    g.cache_status = status
