"""/metrics under two gunicorn workers: counts from both add up, and survive a worker's death."""
from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.members import GATEWAY

N_PREDICTIONS = 12


def scrape(url: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from one /metrics answer."""
    text = requests.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def predictions_ok(samples: dict) -> float:
    key = ("classifier_requests_total", (("endpoint", "gateway.predict"), ("method", "POST"),
                                         ("service", GATEWAY), ("status", "200")))
    return samples.get(key, 0.0)


def served_by(service) -> dict[int, int]:
    """{worker pid: predictions it answered}, from the JSON request log."""
    counts: dict[int, int] = {}
    for raw in service.log_text().splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line["path"] == "/" and line["status"] == 200:
                counts[line["pid"]] = counts.get(line["pid"], 0) + 1
    return counts


def wait_all_workers_ready(service, n: int, timeout: float = 120) -> None:
    """Readiness is per worker: poll on fresh connections until n distinct workers have said ready."""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(ready) < n and time.monotonic() < deadline:
        resp = requests.get(service.url + "/v2/health/ready", headers={"Connection": "close"}, timeout=5)
        if resp.status_code == 200:
            ready.add(resp.json()["pid"])
        time.sleep(0.05)
    assert len(ready) == n and sorted(ready) == sorted(service.workers())


def test_counts_add_up_across_two_workers(stack, start_service, jpeg):
    gw = start_service(GATEWAY, workers=2, MEMBER_URLS=stack.member_urls())
    wait_all_workers_ready(gw, 2)

    def predict(_: int) -> int:
        # a fresh connection each time, so both workers' accept loops get a share
        return requests.post(gw.url + "/", data=jpeg, headers={"Connection": "close"}, timeout=60).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(predict, range(N_PREDICTIONS))) == [200] * N_PREDICTIONS
    time.sleep(0.3)
    per_worker = served_by(gw)
    assert sum(per_worker.values()) == N_PREDICTIONS
    assert len(per_worker) == 2, f"one worker served everything: {per_worker}"

    for _ in range(4):  # whichever worker answers the scrape, it reports both workers' counts
        samples = scrape(gw.url)
        assert predictions_ok(samples) == N_PREDICTIONS
        latency_count = samples[("classifier_request_duration_seconds_count",
                                 (("endpoint", "gateway.predict"), ("service", GATEWAY)))]
        assert latency_count == N_PREDICTIONS
        calls = {labels: v for (name, labels), v in samples.items() if name == "classifier_member_calls_total"}
        assert sum(calls.values()) == 3 * N_PREDICTIONS

    # a worker dies: gunicorn replaces it, its counts stay, its in-flight gauge is dropped (child_exit)
    victim = next(iter(per_worker))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (victim in gw.workers() or len(gw.workers()) < 2):
        time.sleep(0.2)
    samples = scrape(gw.url)
    assert predictions_ok(samples) == N_PREDICTIONS
    in_flight = [v for (name, labels), v in samples.items() if name == "classifier_requests_in_flight"]
    assert in_flight == [1.0]  # just the scrape itself
