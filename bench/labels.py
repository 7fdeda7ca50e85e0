"""BENCHMARKS.md "The loop's cost": what labelling, the review queue and live quality cost the answer path, and how
fast a label call answers under the benchmark's load (4 keep-alive clients on the gateway).

The four services at full size (REAL EasyOCR, SYNTHETIC ViT-B-32), a model trained on grocery train/Packages (the
features from make accuracy's cache), val/ photos as the load. Rounds alternate: load alone, then load while a
moderator thread labels the newest answers (`LABELS_PER_S`, each after listing the newest unlabelled ones) and
reads the review queue and the quality figures every `--reads-every` labels. Gateway p50 and throughput of the two are compared round by round (the VM's speed drifts by tens
of percent over minutes); the label calls' latencies are those of the loaded rounds.

`make bench-labels` (= python -m bench.labels); about 8 minutes on 2 cores once the features are cached.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench import load
from bench.accuracy import TASKS, setup, split_records
from bench.report.labels import write_section
from bench.services import BENCH_PORTS, ROOT, running, service_env
from shared.config import Settings
from shared.learning.data import write_csv
from shared.members import GATEWAY, member_names

log = logging.getLogger("bench.labels")
RESULTS = Path("bench/results/labels.json")
WORK = ROOT / ".cache" / "bench" / "labels"
CONCURRENCY, LABELS_PER_S = 4, 2.0


class Moderator(threading.Thread):
    """Labels the newest answers at a steady pace; every `reads_every` labels also reads /v1/review and /v1/quality."""

    def __init__(self, url: str, classes: list[str], reads_every: int):
        super().__init__(daemon=True)
        self.url, self.classes, self.reads_every = url, classes, reads_every
        self.stop = threading.Event()
        self.label_s: list[float] = []
        self.read_s: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        rng = np.random.default_rng(0)
        with httpx.Client(timeout=30.0) as client:
            n = 0
            while not self.stop.wait(1.0 / LABELS_PER_S):
                items = client.get(f"{self.url}/v1/history", params={"limit": 20, "reviewed": "unlabelled"}).json()
                if not items["items"]:
                    continue
                record = items["items"][int(rng.integers(len(items["items"])))]
                started = time.perf_counter()
                done = client.post(f"{self.url}/v1/history/{record['id']}/label",
                                   json={"label": self.classes[int(rng.integers(len(self.classes)))]})
                (self.label_s if done.status_code == 200 else self.errors).append(
                    time.perf_counter() - started if done.status_code == 200 else done.text[:200])
                n += 1
                if n % self.reads_every == 0:
                    for path in ("/v1/review", "/v1/quality"):
                        started = time.perf_counter()
                        client.get(self.url + path)
                        self.read_s.append(time.perf_counter() - started)


def trained_model(settings: Settings, grocery: Path, weights_dir: Path) -> Path:
    """grocery train/Packages (task (b)), trained once into WORK/models from make accuracy's feature cache."""
    from shared.learning.training import train

    models = WORK / "models"
    if not (models / "manifest.json").is_file():
        label = TASKS["b_packages"][1]
        train(write_csv(split_records(grocery, "train", label), WORK / "train.csv"), models, weights_dir, settings,
              test_data=write_csv(split_records(grocery, "val", label), WORK / "val.csv"), folds=5, seed=0)
    return models


def measure(rounds: int, duration_s: float, reads_every: int) -> dict:
    settings, grocery, weights_dir, _ = setup()
    models = trained_model(settings, grocery, weights_dir)
    classes = json.loads((models / "manifest.json").read_text())["classes"]
    photos = [p.read_bytes() for p, _ in split_records(grocery, "val", TASKS["a_coarse"][1])]
    log_dir = WORK / "logs"
    env = service_env(models, weights_dir, log_dir, {"CACHE_MAX_ENTRIES": "0", "FEATURE_CACHE_DIR": str(WORK / "fc")})
    (log_dir / "history.sqlite3").unlink(missing_ok=True)
    url = f"http://127.0.0.1:{BENCH_PORTS[GATEWAY]}"
    request = load.post_to(url + "/")
    out: dict = {"rounds": [], "concurrency": CONCURRENCY, "duration_s": duration_s, "labels_per_s": LABELS_PER_S,
                 "reads_every": reads_every}
    with running([*member_names(), GATEWAY], env, log_dir):
        load.warm_up(request, photos, 8)
        for r in range(rounds):
            row = {}
            for phase in (("alone", "labelling") if r % 2 == 0 else ("labelling", "alone")):
                moderator = Moderator(url, classes, reads_every) if phase == "labelling" else None
                if moderator:
                    moderator.start()
                result = load.run_load(request, photos[r::2], CONCURRENCY, duration_s)
                row[phase] = result.summary()
                if moderator:
                    moderator.stop.set()
                    moderator.join(30)
                    row["label_ms"] = [s * 1000 for s in moderator.label_s]
                    row["read_ms"] = [s * 1000 for s in moderator.read_s]
                    row["label_errors"] = moderator.errors
                log.info("round %d %s: p50 %.0f ms, %.2f answers/s", r, phase, row[phase]["p50_ms"],
                         row[phase]["throughput_rps"])
            out["rounds"].append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=50.0, help="seconds of load per phase")
    parser.add_argument("--reads-every", type=int, default=30,
                        help="labels between two reads of /v1/review and /v1/quality (default: %(default)s, a page "
                             "refreshed every 15 s)")
    parser.add_argument("--report-only", action="store_true", help=f"rewrite the section from {RESULTS}")
    args = parser.parse_args()
    if not args.report_only:
        record = measure(args.rounds, args.duration, args.reads_every) | {"machine": {"nproc": len(os.sched_getaffinity(0)),
                                                                     "python": platform.python_version()}}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=1))
    print(f"wrote {write_section(json.loads(RESULTS.read_text()), Path('BENCHMARKS.md'))}")


if __name__ == "__main__":
    main()
