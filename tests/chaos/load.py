"""A bounded closed-loop client for the chaos suite: a few keep-alive sessions posting real photos to the gateway,
every answer recorded (status, degraded, latency, error), so a scenario can count what its window saw."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


@dataclass
class Result:
    started: float
    latency_s: float
    status: int | None  # None: no HTTP answer at all (refused, reset, timed out)
    degraded: bool = False
    failed_members: tuple[str, ...] = ()
    error: str = ""
    retry_after: str | None = None


@dataclass
class Load:
    url: str
    photos: list[Path]
    clients: int = 2
    timeout_s: float = 30.0
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._bodies = [p.read_bytes() for p in self.photos]

    def __enter__(self) -> "Load":
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def _run(self, index: int) -> None:
        session = requests.Session()  # keep-alive, like a backend's pooled client
        n = index
        while not self._stop.is_set():
            body = self._bodies[n % len(self._bodies)]
            n += self.clients
            started = time.monotonic()
            try:
                resp = session.post(self.url, data=body, timeout=self.timeout_s)
                result = Result(started, time.monotonic() - started, resp.status_code,
                                retry_after=resp.headers.get("Retry-After"))
                if resp.status_code == 200:
                    answer = resp.json()
                    result.degraded = bool(answer.get("degraded"))
                    result.failed_members = tuple(sorted(answer.get("failed", {})))
                else:
                    result.error = resp.text[:200]
            except requests.RequestException as exc:
                result = Result(started, time.monotonic() - started, None, error=f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.results.append(result)

    def since(self, t0: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if r.started >= t0]

    def wait_for(self, count: int, after: float, timeout: float = 60.0) -> list[Result]:
        """At least `count` answers to requests sent after `after` (or fail after timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.since(after)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"only {len(self.since(after))} answers within {timeout} s")


def counts(results: list[Result]) -> dict[str, int]:
    """ok / degraded / refused (503) / failed (anything else: no answer, 5xx other than 503, 4xx)."""
    out = {"ok": 0, "degraded": 0, "overloaded_503": 0, "failed": 0}
    for r in results:
        if r.status == 200:
            out["degraded" if r.degraded else "ok"] += 1
        elif r.status == 503:
            out["overloaded_503"] += 1
        else:
            out["failed"] += 1
    return out
