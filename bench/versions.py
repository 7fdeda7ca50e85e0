"""BENCHMARKS.md "Model versions": activating and rolling back a version under load (failed and mixed answers, how
long the switch takes), what a second loaded version costs each service in memory, and what shadow traffic costs
the live answers.

The four services at full size (REAL EasyOCR, SYNTHETIC ViT-B-32) over a model repository of two versions trained
on grocery val/'s 3 coarse classes (seeds 0 and 1: other learners and meta-models, the same extractors), val/ photos
as the load, 4 keep-alive clients.

1. Memory: each service's RSS with one version loaded, then with the second loaded beside it.
2. Switch: the clients post without pause while the second version is activated (the gateway's repository API) and
   the first one activated again; every answer is checked for its status and for members of the answer's version.
3. Shadow: rounds alternate the load alone and the load with the shadow (the other version) at 100% and at 10% of
   the requests; the gateway's p50 and throughput with the shadow ÷ alone, in the same round.

`make bench-versions` (= python -m bench.versions); about 15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from bench import load
from bench.accuracy import TASKS, setup, split_records
from bench.procs import rss_bytes
from bench.report.versions import write_section
from bench.services import BENCH_PORTS, ROOT, running, service_env
from shared import repository
from shared.learning.data import write_csv
from shared.members import GATEWAY, member_names

log = logging.getLogger("bench.versions")
RESULTS = Path("bench/results/versions.json")
WORK = ROOT / ".cache" / "bench" / "versions"
CONCURRENCY = 4
SHADOW_SHARES = (100, 10)


def repository_of_two(settings, grocery: Path, weights_dir: Path) -> tuple[Path, str, str]:
    """WORK/models with two versions (seeds 0 and 1), the first active; trained once."""
    from shared.learning.training import train

    root = WORK / "models"
    versions = repository.list_versions(root) if root.exists() else []
    if len(versions) < 2:
        csv = write_csv(split_records(grocery, "val", TASKS["a_coarse"][1]), WORK / "train.csv")
        for seed in (0, 1):
            repository.publish(root, lambda folder, seed=seed: train(csv, folder, weights_dir, settings, folds=3,
                                                                      seed=seed))
        versions = repository.list_versions(root)
    first, second = versions[0].version, versions[1].version
    repository.write_state(root, repository.ServingState(active=first, loaded=(first,)))
    return root, first, second


def rss_mb(services: dict) -> dict[str, float]:
    return {name: sum(rss_bytes(svc.pid).values()) / 2**20 for name, svc in services.items()}


def repository_call(url: str, path: str, body: dict) -> dict:
    resp = httpx.post(url + path, json=body, timeout=600)
    if resp.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json()


def switch_under_load(url: str, photos: list[bytes], first: str, second: str, settle_s: float) -> dict:
    """Closed-loop clients while `second` is activated, then `first`: every answer's status, version, members."""
    stop, answers, lock = threading.Event(), [], threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(timeout=60) as session:
            n = index
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    resp = session.post(url + "/", content=photos[n % len(photos)])
                    body = resp.json()
                    row = (time.monotonic(), resp.status_code, body.get("model_version"), bool(body.get("degraded")),
                           sorted({m.get("model_version") for m in body.get("members", {}).values()}),
                           time.perf_counter() - began)
                except (httpx.HTTPError, ValueError) as exc:
                    row = (time.monotonic(), 0, repr(exc)[:100], True, [], time.perf_counter() - began)
                n += CONCURRENCY
                with lock:
                    answers.append(row)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CONCURRENCY)]
    for t in threads:
        t.start()
    switches = []
    try:
        time.sleep(settle_s)
        for version in (second, first):
            began = time.monotonic()
            repository_call(url, f"/v2/repository/models/{GATEWAY}/load", {"parameters": {"version": version}})
            switches.append({"version": version, "seconds": time.monotonic() - began, "at": began})
            time.sleep(settle_s)
    finally:
        stop.set()
        for t in threads:
            t.join(70)
    statuses = Counter(a[1] for a in answers)
    mixed = [a for a in answers if a[1] == 200 and a[4] != [a[2]]]
    # Sent after a switch returned (the answer's time less its latency) and answered by another version.
    late = [a for s, nxt in zip(switches, switches[1:] + [None]) for a in answers
            if a[0] - a[5] > s["at"] + s["seconds"] and (nxt is None or a[0] - a[5] < nxt["at"])
            and a[2] != s["version"]]
    return {"answers": len(answers), "statuses": {str(k): v for k, v in statuses.items()},
            "degraded": sum(1 for a in answers if a[3]), "mixed": len(mixed),
            "by_version": dict(Counter(a[2] for a in answers)), "switches": switches,
            "old_version_after_switch": len(late),
            "p50_ms": sorted(a[5] for a in answers)[len(answers) // 2] * 1000 if answers else None}


def shadow_rounds(url: str, photos: list[bytes], shadow: str, rounds: int, duration_s: float) -> list[dict]:
    request = load.post_to(url + "/")
    out = []
    for r in range(rounds):
        row = {}
        phases = ["alone", *[f"shadow{p}" for p in SHADOW_SHARES]]
        for phase in (phases if r % 2 == 0 else phases[::-1]):
            percent = 0 if phase == "alone" else int(phase.removeprefix("shadow"))
            repository_call(url, "/v1/versions/shadow", {"version": shadow if percent else None, "percent": percent})
            before = shadow_counts(url)
            result = load.run_load(request, photos[r::2], CONCURRENCY, duration_s)
            repository_call(url, "/v1/versions/shadow", {"version": None, "percent": 0})
            after = drained(url)  # the next phase starts with no copy left running
            row[phase] = result.summary() | {"shadow": {k: after.get(k, 0) - before.get(k, 0) for k in after}}
            log.info("round %d %s: p50 %.0f ms, %.2f answers/s, shadow %s", r, phase, row[phase]["p50_ms"],
                     row[phase]["throughput_rps"], row[phase]["shadow"])
        out.append(row)
    repository_call(url, "/v1/versions/shadow", {"version": None, "percent": 0})
    return out


def drained(url: str, quiet_s: float = 3.0, most_s: float = 60.0) -> dict[str, float]:
    """The shadow counters once they have not moved for `quiet_s` (the queued copies are done)."""
    counts, since, deadline = shadow_counts(url), time.monotonic(), time.monotonic() + most_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.5)
        now = shadow_counts(url)
        if now != counts:
            counts, since = now, time.monotonic()
    return counts


def shadow_counts(url: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("classifier_shadow_requests_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = counts.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def measure(rounds: int, duration_s: float) -> dict:
    settings, grocery, weights_dir, _ = setup()
    root, first, second = repository_of_two(settings, grocery, weights_dir)
    photos = [p.read_bytes() for p, _ in split_records(grocery, "val", TASKS["a_coarse"][1])]
    log_dir = WORK / "logs"
    (log_dir / "history.sqlite3").unlink(missing_ok=True)
    env = service_env(root, weights_dir, log_dir, {"CACHE_MAX_ENTRIES": "0", "FEATURE_CACHE_DIR": str(WORK / "fc"),
                                                   "MODEL_POLL_S": "1"})
    url = f"http://127.0.0.1:{BENCH_PORTS[GATEWAY]}"
    out: dict = {"concurrency": CONCURRENCY, "duration_s": duration_s, "versions": [first, second]}
    with running([*member_names(), GATEWAY], env, log_dir) as services:
        load.warm_up(load.post_to(url + "/"), photos, 8)
        one = rss_mb(services)
        began = time.monotonic()
        repository_call(url, f"/v2/repository/models/{GATEWAY}/load",
                        {"parameters": {"version": second, "activate": False}})
        load_s = time.monotonic() - began
        load.warm_up(load.post_to(url + "/"), photos, 8)
        two = rss_mb(services)
        out["memory"] = {"one_mb": one, "two_mb": two, "load_s": load_s}
        log.info("memory, one version: %s; two: %s (loaded in %.1f s)", one, two, load_s)
        out["switch"] = switch_under_load(url, photos, first, second, settle_s=duration_s / 3)
        log.info("switch: %s", {k: v for k, v in out["switch"].items() if k != "switches"})
        out["shadow"] = shadow_rounds(url, photos, second, rounds, duration_s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load per phase")
    parser.add_argument("--report-only", action="store_true", help=f"rewrite the section from {RESULTS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every request
    if not args.report_only:
        record = measure(args.rounds, args.duration) | {"machine": {"nproc": len(os.sched_getaffinity(0)),
                                                                    "python": platform.python_version()}}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=1))
    print(f"wrote {write_section(json.loads(RESULTS.read_text()), Path('BENCHMARKS.md'))}")


if __name__ == "__main__":
    main()
