"""Closed-loop load client: N concurrent asyncio workers POST raw image bytes, one request after another."""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

import httpx
import numpy as np

# One request = send the payload and wait for the answer; returns (error or None, degraded).
Outcome = tuple[str | None, bool]
Request = Callable[[httpx.AsyncClient, bytes], Awaitable[Outcome]]


@dataclass
class LoadResult:
    """Latencies of the successful requests of one run at one concurrency."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    finished_at_s: list[float] = field(default_factory=list)  # since the run started, per successful request
    errors: list[str] = field(default_factory=list)
    degraded: int = 0
    wall_s: float = 0.0
    window_s: float = 0.0  # how long every worker kept sending

    @property
    def throughput(self) -> float:
        """Answers per second while all workers were sending (the drain at the end runs below concurrency)."""
        done = sum(1 for t in self.finished_at_s if t <= self.window_s)
        if self.window_s > 0 and done >= self.concurrency:
            return done / self.window_s
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies_s) + len(self.errors)

    def summary(self) -> dict:
        """n, errors, degraded, p50/p95/p99/mean latency in ms and throughput in requests/s."""
        return {"concurrency": self.concurrency, "n": len(self.latencies_s), "errors": len(self.errors),
                "first_error": self.errors[0] if self.errors else None, "degraded": self.degraded,
                **latency_summary(self.latencies_s),
                "throughput_rps": self.throughput, "wall_s": self.wall_s, "window_s": self.window_s,
                "complete_throughput_rps": self.throughput * (1 - self.degraded / max(len(self.latencies_s), 1))}


def latency_summary(latencies_s: Sequence[float]) -> dict:
    """p50/p95/p99/mean in milliseconds."""
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    lat = np.array(latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(lat.mean())}


def post_to(url: str) -> Request:
    """A request that POSTs the payload to one URL and expects 200 (a gateway answer may say degraded)."""
    async def request(client: httpx.AsyncClient, payload: bytes) -> Outcome:
        response = await client.post(url, content=payload, headers={"Content-Type": "application/octet-stream"})
        if response.status_code != 200:
            return f"{url}: HTTP {response.status_code} {response.text[:200]}", False
        return None, bool(response.json().get("degraded", False))
    return request


def fan_out_to(urls: Sequence[str]) -> Request:
    """The ideal fan-out: the same payload to every URL in parallel, done when the slowest answers."""
    singles = [post_to(url) for url in urls]

    async def request(client: httpx.AsyncClient, payload: bytes) -> Outcome:
        outcomes = await asyncio.gather(*(single(client, payload) for single in singles))
        return next((error for error, _ in outcomes if error), None), False
    return request


def _client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency * 4, max_keepalive_connections=concurrency * 4)
    return httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits)


async def _timed(request: Request, client: httpx.AsyncClient, payload: bytes, result: LoadResult,
                 start: float = 0.0) -> None:
    t0 = time.perf_counter()
    try:
        error, degraded = await request(client, payload)
    except httpx.HTTPError as exc:
        error, degraded = f"{type(exc).__name__}: {exc}", False
    if error is None:
        now = time.perf_counter()
        result.latencies_s.append(now - t0)
        result.finished_at_s.append(now - start)
        result.degraded += degraded
    else:
        result.errors.append(error)


async def _run(request: Request, payloads: Sequence[bytes], concurrency: int, duration_s: float,
               min_requests: int) -> LoadResult:
    async with _client(concurrency) as client:
        result, counter = LoadResult(concurrency), itertools.count()
        start = time.perf_counter()

        async def worker() -> None:
            while (i := next(counter)) < min_requests or time.perf_counter() < start + duration_s:
                await _timed(request, client, payloads[i % len(payloads)], result, start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - start
        result.window_s = duration_s
        return result


def run_load(request: Request, payloads: Sequence[bytes], concurrency: int, duration_s: float,
             min_requests: int = 8) -> LoadResult:
    """Keep `concurrency` requests in flight for `duration_s` (and at least `min_requests`)."""
    return asyncio.run(_run(request, payloads, concurrency, duration_s, min_requests))


async def _paired(requests: dict[str, Request], payloads: Sequence[bytes], rounds: int) -> dict[str, LoadResult]:
    results = {name: LoadResult(1) for name in requests}
    async with _client(4) as client:
        for i in range(rounds):
            # Alternate which goes first so neither always meets a cache or a GC pause the other left.
            order = list(requests) if i % 2 == 0 else list(reversed(requests))
            for name in order:
                await _timed(requests[name], client, payloads[i % len(payloads)], results[name])
    for result in results.values():
        result.wall_s = sum(result.latencies_s)
    return results


def run_paired(requests: dict[str, Request], payloads: Sequence[bytes], rounds: int) -> dict[str, LoadResult]:
    """Concurrency 1, the requests interleaved on the same images, so they see the same machine state."""
    return asyncio.run(_paired(requests, payloads, rounds))


def warm_up(request: Request, payloads: Sequence[bytes], count: int) -> None:
    """Send `count` requests one by one and ignore the answers (first-call costs, connection set-up)."""
    run_load(request, payloads, 1, 0.0, min_requests=count)
