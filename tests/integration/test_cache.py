"""The gateway's response cache on a real gunicorn: the same photo twice is a miss then a hit with the same body;
the history records both, the second marked cached; the metrics count it."""
from __future__ import annotations

import time

import requests

from tests.integration.conftest import MEMBERS


def test_same_photo_twice_is_a_miss_then_a_hit(stack, start_service, jpeg):
    gateway = start_service("stacking", CACHE_MAX_ENTRIES=16, CACHE_TTL_S=600,
                            MEMBER_URLS=",".join(f"{n}={stack.urls[n]}" for n in MEMBERS))
    first = requests.post(gateway.url + "/", data=jpeg, timeout=60)
    second = requests.post(gateway.url + "/", data=jpeg, timeout=60)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert second.content == first.content  # the stored answer, byte for byte
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    wanted, by_id = {first.headers["X-Request-ID"], second.headers["X-Request-ID"]}, {}
    deadline = time.monotonic() + 20  # the history writes in the background
    while not wanted <= set(by_id) and time.monotonic() < deadline:
        time.sleep(0.2)
        by_id = {i["request_id"]: i for i in requests.get(gateway.url + "/v1/history", timeout=10).json()["items"]}
    hit, miss = by_id[second.headers["X-Request-ID"]], by_id[first.headers["X-Request-ID"]]
    assert (miss["cached"], hit["cached"]) == (False, True) and hit["label"] == miss["label"]
    metrics = requests.get(gateway.url + "/metrics", timeout=10).text
    assert "classifier_cache_hits_total 1.0" in metrics and "classifier_cache_misses_total 1.0" in metrics
