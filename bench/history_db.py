"""BENCHMARKS.md "The history on PostgreSQL": the gateway's p50 and throughput with its history in PostgreSQL ÷ in
SQLite, in one run (recording is off the answer path, so the goal is: within noise).

The four services at full size (REAL EasyOCR, SYNTHETIC ViT-B-32); a model trained on grocery val/'s 3 coarse classes (the
model's accuracy is not what is measured; a small training set keeps the bench short), val/ photos as the load,
4 keep-alive clients. The members start once; the gateway is restarted for each phase, with HISTORY_DB a SQLite file
or a database on a PostgreSQL server started here (Debian's package, on loopback, fsync on as in production), and
the phases alternate in each round (the VM's speed drifts over minutes). Every answer of every phase must be a
record at the end of its phase.

`make bench-history` (= python -m bench.history_db); about 12 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

from bench import load
from bench.accuracy import TASKS, setup, split_records
from bench.report.history_db import write_section
from bench.services import BENCH_PORTS, ROOT, running, service_env, start, stop_process
from shared.history import HistoryStore
from shared.learning.data import write_csv
from shared.members import GATEWAY, member_names
from tests.postgres import PostgresServer, find_bin_dir

log = logging.getLogger("bench.history_db")
RESULTS = Path("bench/results/history_db.json")
WORK = ROOT / ".cache" / "bench" / "history_db"
CONCURRENCY = 4
BACKENDS = ("sqlite", "postgresql")


def trained_model(settings, grocery: Path, weights_dir: Path) -> Path:
    from shared.learning.training import train

    models = WORK / "models"
    if not (models / "manifest.json").is_file():
        records = split_records(grocery, "val", TASKS["a_coarse"][1])
        train(write_csv(records, WORK / "train.csv"), models, weights_dir, settings, folds=3, seed=0)
    return models


def measure(rounds: int, duration_s: float) -> dict:
    settings, grocery, weights_dir, _ = setup()
    models = trained_model(settings, grocery, weights_dir)
    photos = [p.read_bytes() for p, _ in split_records(grocery, "val", TASKS["a_coarse"][1])]
    log_dir = WORK / "logs"
    env = service_env(models, weights_dir, log_dir, {"CACHE_MAX_ENTRIES": "0", "FEATURE_CACHE_DIR": str(WORK / "fc")})
    server = PostgresServer(find_bin_dir()).init(durable=True)
    url = f"http://127.0.0.1:{BENCH_PORTS[GATEWAY]}"
    request = load.post_to(url + "/")
    out: dict = {"rounds": [], "concurrency": CONCURRENCY, "duration_s": duration_s,
                 "postgresql": server.version()}
    try:
        with running(member_names(), env, log_dir):
            for r in range(rounds):
                row = {}
                for backend in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
                    target = (str(log_dir / f"history-{r}.sqlite3") if backend == "sqlite"
                              else server.create_database(f"bench{r}"))
                    gateway = start(GATEWAY, {**env, "HISTORY_DB": target}, log_dir)
                    try:
                        load.warm_up(request, photos, 4)
                        result = load.run_load(request, photos[r::2], CONCURRENCY, duration_s)
                        answered = int(gateway_answers(url))
                        recorded = wait_for_records(target, answered)
                    finally:
                        stop_process(gateway.process)
                    row[backend] = result.summary() | {"answers": answered, "records": recorded}
                    log.info("round %d %s: p50 %.0f ms, %.2f answers/s, %d answers, %d records", r, backend,
                             row[backend]["p50_ms"], row[backend]["throughput_rps"], answered,
                             row[backend]["records"])
                out["rounds"].append(row)
    finally:
        server.destroy()
    return out


def gateway_answers(url: str) -> float:
    """POST / answered 200, from the gateway's own counter."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("classifier_requests_total{") and 'method="POST"' in line and 'status="200"' in line)


def wait_for_records(target: str, n: int, timeout: float = 30.0) -> int:
    """The history's record count once it reaches n (the writer is a little behind the answers), or at timeout."""
    store = HistoryStore(target, enabled=False)
    deadline = time.monotonic() + timeout
    try:
        while (count := store.count()) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        return count
    finally:
        store.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of load per phase")
    parser.add_argument("--report-only", action="store_true", help=f"rewrite the section from {RESULTS}")
    args = parser.parse_args()
    if not args.report_only:
        started = time.monotonic()
        record = measure(args.rounds, args.duration) | {
            "machine": {"nproc": len(os.sched_getaffinity(0)), "python": platform.python_version()},
            "wall_s": round(time.monotonic() - started)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=1))
    print(f"wrote {write_section(json.loads(RESULTS.read_text()), Path('BENCHMARKS.md'))}")


if __name__ == "__main__":
    main()
