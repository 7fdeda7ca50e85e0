"""Serving benchmarks: each member alone, the gateway with its members, dynamic batching on and off."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import httpx

from bench import procs
from bench.load import Request, fan_out_to, post_to, run_load, run_paired, warm_up
from bench.services import Service, running
from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order
WARMUP_REQUESTS = 3


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the classifier_batch_size histogram in a service's /metrics (0, 0 without batching)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {kind: float(value) for kind, value in
             re.findall(r'^classifier_batch_size_(sum|count)\{[^}]*\}\s+(\S+)$', text, flags=re.M)}
    return found.get("sum", 0.0), found.get("count", 0.0)


def memory(service: Service) -> dict:
    """Resident memory of a service's gunicorn master and workers, in MiB."""
    sizes = procs.rss_bytes(service.pid)
    mib = {str(pid): round(size / 2**20, 1) for pid, size in sizes.items()}
    return {"per_process_mib": mib, "total_mib": round(sum(sizes.values()) / 2**20, 1),
            "largest_mib": max(mib.values()) if mib else None}


def load_level(request: Request, services: Mapping[str, Service], payloads: Sequence[bytes], concurrency: int,
               duration_s: float) -> dict:
    """One closed-loop run of `request`; CPU-seconds each running service spent per answered request."""
    before = {name: procs.cpu_seconds(s.pid) for name, s in services.items()}
    batches_before = {name: batch_stats(s.url) for name, s in services.items() if name != GATEWAY}
    result = run_load(request, payloads, concurrency, duration_s)
    row = result.summary()
    sent = max(result.sent, 1)
    row["cpu_s_per_request"] = {name: (procs.cpu_seconds(s.pid) - before[name]) / sent for name, s in services.items()}
    row["mean_batch_size"] = {name: _mean_batch(batch_stats(services[name].url), before_)
                              for name, before_ in batches_before.items()}
    return row


def _mean_batch(after: tuple[float, float], before: tuple[float, float]) -> float | None:
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count else None


def bench_member(name: str, env: Mapping[str, str], log_dir: Path, payloads: Sequence[bytes],
                 levels: Sequence[int], duration_s: float) -> dict:
    """One member started alone: ready time, memory, and a load run per concurrency level."""
    with running([name], env, log_dir) as services:
        service = services[name]
        result = {"ready_s": service.ready_s, "rss_ready": memory(service), "levels": []}
        request = post_to(f"{service.url}/predict")
        warm_up(request, payloads, WARMUP_REQUESTS)
        for concurrency in levels:
            result["levels"].append(load_level(request, services, payloads, concurrency, duration_s))
        result["rss_after_load"] = memory(service)
        return result


def bench_gateway(env: Mapping[str, str], log_dir: Path, payloads: Sequence[bytes], levels: Sequence[int],
                  duration_s: float, paired_rounds: int) -> dict:
    """The three members and the gateway started together: gateway vs ideal fan-out request by request at c=1,
    then at each load level the gateway, and the ideal fan-out under the same closed loop (what the members cost
    when they share the cores serving this workload without a gateway)."""
    with running([*MEMBERS, GATEWAY], env, log_dir) as services:
        gateway = post_to(f"{services[GATEWAY].url}/predict")
        fan_out = fan_out_to([f"{services[m].url}/predict" for m in MEMBERS])
        for request in (gateway, fan_out):
            warm_up(request, payloads, WARMUP_REQUESTS)
        paired = run_paired({"gateway": gateway, "fan_out": fan_out}, payloads, paired_rounds)
        result = {
            "ready_s": {name: s.ready_s for name, s in services.items()},
            "rss_ready": {name: memory(s) for name, s in services.items()},
            "paired_c1": {name: r.summary() for name, r in paired.items()},
            "paired_c1_ms": {name: [round(t * 1000, 2) for t in r.latencies_s] for name, r in paired.items()},
            "levels": [], "fan_out_levels": [],
        }
        for c in levels:
            result["levels"].append(load_level(gateway, services, payloads, c, duration_s))
            result["fan_out_levels"].append(load_level(fan_out, services, payloads, c, duration_s))
        result["rss_after_load"] = {name: memory(s) for name, s in services.items()}
        return result


def bench_batching(env: Mapping[str, str], log_dir: Path, payloads: Sequence[bytes], levels: Sequence[int],
                   duration_s: float, rounds: int = 2, name: str = "clip_svm") -> dict:
    """A CLIP member alone, batched (as shipped) and with BATCH_MAX_SIZE=1, started in turn for `rounds` rounds
    (the order alternating), so that each pair of runs sees the machine in the same state."""
    modes = {"batched": env, "unbatched": {**env, "BATCH_MAX_SIZE": "1"}}
    result: dict = {"rounds": []}
    for i in range(rounds):
        order = list(modes) if i % 2 == 0 else list(reversed(modes))
        result["rounds"].append({mode: bench_member(name, modes[mode], log_dir, payloads, levels, duration_s)
                                 for mode in order})
    return result


def repeating_stream(photos: Sequence[bytes], share: float, lag: int = 8, seed: int = 0) -> list[bytes]:
    """The photos in order, with `share` of the stream being repeats of photos sent at least `lag` places earlier
    (a closed loop of N clients keeps N in flight: a repeat of one still in flight could not be a hit yet)."""
    import random

    rng = random.Random(seed)
    repeats = round(len(photos) * share / (1 - share))
    after = sorted(rng.choices(range(lag, len(photos)), k=repeats))  # which fresh photo each repeat follows
    stream: list[bytes] = []
    for i, photo in enumerate(photos):
        stream.append(photo)
        while after and after[0] == i:
            after.pop(0)
            stream.append(rng.choice(stream[:-lag]))
    return stream


def hit_latencies_ms(log: Path, offset: int = 0) -> list[float]:
    """Server-side latency of the gateway's cache hits after `offset` bytes of its JSON request log (a hit calls
    no member)."""
    import json

    with log.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    lines = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
    return [r["latency_ms"] for r in lines
            if r.get("path") == "/predict" and r.get("status") == 200 and "members" not in r]


def bench_cache(env: Mapping[str, str], log_dir: Path, photos: Sequence[bytes], concurrency: int,
                duration_s: float, share: float = 0.3) -> dict:
    """The gateway with its response cache on: a repeated photo's latency (client and gateway side), and a stream
    where `share` of the photos repeat against one of photos never seen (both long enough not to wrap around)."""
    import random

    from bench.load import latency_summary

    photos = list(photos)
    random.Random(0).shuffle(photos)  # both streams mix fruit, vegetables and packages (OCR costs differ by kind)
    half = len(photos) // 2
    unseen, pool = photos[:half], photos[half:]
    with running([*MEMBERS, GATEWAY], {**env, "CACHE_MAX_ENTRIES": "4096"}, log_dir) as services:
        gateway = post_to(f"{services[GATEWAY].url}/predict")
        warm_up(gateway, pool[:1], 1)  # now cached: every further request for it is a hit
        log = log_dir / f"{GATEWAY}.log"
        offset = log.stat().st_size
        hits = run_load(gateway, pool[:1], 1, 0.0, min_requests=30)
        at_gateway = latency_summary([ms / 1000 for ms in hit_latencies_ms(log, offset)])
        baseline = load_level(gateway, services, unseen, concurrency, duration_s)
        stream = repeating_stream(pool[1:], share, lag=2 * concurrency)
        mixed = load_level(gateway, services, stream, concurrency, duration_s)
    return {"hit": hits.summary(), "hit_at_gateway": at_gateway, "no_repeats": baseline, "repeats": mixed,
            "share": share, "stream_len": len(stream), "unseen_len": len(unseen)}
