"""The gateway's response cache: LRU by entries and bytes, TTL, degraded answers never kept, metrics counted."""
from __future__ import annotations

from shared.gateway.cache import EVICTIONS, HITS, MISSES, ResponseCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def body(label: str, pad: int = 0) -> dict:
    return {"label": label, "probas": {"a": 1.0}, "degraded": False, "pad": "x" * pad}


def test_miss_then_hit_returns_a_copy_and_counts():
    cache = ResponseCache(4, 10_000, 60)
    hits, misses = HITS._value.get(), MISSES._value.get()
    assert cache.get("s1", "v1") is None
    cache.put("s1", "v1", body("a"))
    got = cache.get("s1", "v1")
    assert got == body("a")
    got["label"] = "changed"  # a caller's change never reaches the cache
    assert cache.get("s1", "v1")["label"] == "a"
    assert cache.get("s1", "v2") is None  # another model version is another key
    assert (HITS._value.get() - hits, MISSES._value.get() - misses) == (2, 2)


def test_bounded_by_entries_and_bytes_least_recently_used_first():
    cache = ResponseCache(2, 10_000, 60)
    evicted = EVICTIONS.labels("entries")._value.get()
    for key in ("a", "b"):
        cache.put(key, "v", body(key))
    cache.get("a", "v")  # a is now the most recent
    cache.put("c", "v", body("c"))
    assert cache.get("b", "v") is None and cache.get("a", "v") and len(cache) == 2
    assert EVICTIONS.labels("entries")._value.get() - evicted == 1
    small = ResponseCache(100, 300, 60)
    for key in "abcdef":
        small.put(key, "v", body(key, pad=100))
    assert small.size_bytes <= 300 and small.get("f", "v") and small.get("a", "v") is None
    small.put("huge", "v", body("huge", pad=1000))  # larger than the whole cache: not kept
    assert small.get("huge", "v") is None


def test_entries_expire_and_degraded_answers_are_never_kept():
    clock = Clock()
    cache = ResponseCache(10, 10_000, 5, clock=clock)
    cache.put("a", "v", body("a"))
    cache.put("d", "v", {**body("d"), "degraded": True})
    assert cache.get("d", "v") is None
    clock.now = 4.9
    assert cache.get("a", "v")
    clock.now = 5.0
    assert cache.get("a", "v") is None and len(cache) == 0 and cache.size_bytes == 0


def test_off_when_a_bound_is_zero():
    cache = ResponseCache(0, 10_000, 60)
    cache.put("a", "v", body("a"))
    assert not cache.enabled and cache.get("a", "v") is None


def test_each_eviction_is_counted_by_its_reason():
    clock = Clock()
    cache = ResponseCache(2, 400, 5, clock=clock)
    before = {r: EVICTIONS.labels(r)._value.get() for r in ("entries", "bytes", "expired")}
    cache.put("a", "v", body("a", pad=100))
    cache.put("b", "v", body("b", pad=100))
    cache.put("c", "v", body("c", pad=100))  # over 400 bytes before over 2 entries: a goes for bytes
    cache.put("d", "v", body("d"))  # small: b goes for entries
    clock.now = 5.0
    assert cache.get("c", "v") is None  # c and d expired
    after = {r: EVICTIONS.labels(r)._value.get() - before[r] for r in before}
    assert after == {"entries": 1, "bytes": 1, "expired": 2}


def test_the_app_keeps_its_cache(tmp_path):
    from shared.gateway.app import build_app
    from shared.gateway.cache import current_cache

    app = build_app({"SERVICE_NAME": "stacking", "MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3",
                     "LOAD_IN_BACKGROUND": False, "CACHE_MAX_ENTRIES": 7})
    with app.app_context():
        assert isinstance(current_cache(), ResponseCache) and current_cache().max_entries == 7
