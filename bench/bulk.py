"""`python -m bench.bulk` (= `make bench-bulk`): classify-batch against the gateway, serial predict and the CPU-bound
ideal; a resume after SIGKILL; two Ray nodes against one; memory. Writes bench/results/bulk.json and the "Bulk"
section of BENCHMARKS.md.

Real OCR (EasyOCR's released weights), SYNTHETIC ViT-B-32 CLIP: CLIP's cost is real, its answers are not.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from bench import load, procs, services, training
from bench.run import WORK, full_size_weights
from bench.services import ROOT
from shared.config import Settings
from shared.images import IMAGE_SUFFIXES
from shared.members import GATEWAY, member_names

log = logging.getLogger("bench.bulk")
RESULTS = ROOT / "bench" / "results"
MARKDOWN = ROOT / "BENCHMARKS.md"
RAY = Path(sys.executable).with_name("ray")


def photo_listing(settings: Settings, count: int, out: Path) -> list[Path]:
    """A fixed, evenly spread sample of grocery train/ + val/ (all of them with count 0), as a `path` CSV."""
    root = settings.datasets_dir / "grocery"
    paths = sorted(p for split in ("train", "val") for p in (root / split).rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    if count and count < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("path\n" + "".join(f"{p.resolve()}\n" for p in paths))
    return paths


def models_folder(settings: Settings, weights_dir: Path) -> Path:
    """The stack `make bench` serves (trained on 20 grocery train photos a class) or, if absent, the same trained now."""
    models = WORK / "full" / "models"
    if not (models / "manifest.json").exists():
        data_csv = WORK / "full" / "train.csv"
        training.write_subset_csv(settings.datasets_dir / "grocery" / "train", 20, data_csv)
        training.train_models(data_csv, models, weights_dir, settings.replace(cache_dir=WORK / "full" / "cache"))
    return models


class PeakMemory:
    """Samples the RSS of a process tree every 0.5 s: the peak of the whole tree and of its largest process."""

    def __init__(self, pid: int):
        self.pid, self.tree, self.largest = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            sizes = procs.rss_bytes(self.pid)
            self.tree, self.largest = max(self.tree, sum(sizes.values())), max(self.largest, max(sizes.values(),
                                                                                                 default=0))

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def classify_cmd(listing: Path, out: Path, models: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shared", "classify-batch", "--data", str(listing), "--out", str(out),
            "--models", str(models), "--weights", str(weights), "--quiet", *extra]


def env() -> dict:
    # Ray's token auth: `ray start --head` turns it on, a joining node and a driver must say so too (docs/bulk.md).
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


def run_job(cmd: list[str], kill_at_rows: int | None = None, out: Path | None = None) -> dict:
    """Run a classify-batch to its end (or SIGKILL it once `kill_at_rows` rows are written); wall time, peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    with PeakMemory(proc.pid) as memory:
        if kill_at_rows is not None:
            while proc.poll() is None and written_rows(out) < kill_at_rows:
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    if kill_at_rows is None and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-3000:]}")
    return {"wall_s": time.perf_counter() - started, "peak_rss_mib": memory.tree / 2**20,
            "largest_process_rss_mib": memory.largest / 2**20, "summary": stdout.strip().splitlines()[-1:],
            "returncode": proc.returncode, **(steady_rate(out) if out and kill_at_rows is None else {})}


def steady_rate(out: Path) -> dict:
    """Photos/s between the first part written and the last: the job's rate once Ray and its actors are up."""
    parts = sorted((p.stat().st_mtime, pq.read_metadata(p).num_rows) for p in out.glob("part-*.parquet"))
    if len(parts) < 3:
        return {}
    rows = sum(n for _, n in parts[1:])
    return {"steady_photos_per_s": rows / (parts[-1][0] - parts[0][0]), "steady_rows": rows}


def written_rows(out: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet")) if out.exists() else 0


def extractor_cpu_s(paths: list[Path], weights: Path, models: Path, settings: Settings) -> dict:
    """Each extractor's own CPU-seconds per photo (one thread, as in an actor; loading excluded): the ideal's input."""
    import torch

    from shared import artifacts
    from shared.features.registry import load_extractor
    from shared.images import read_image_file

    recorded = artifacts.load_manifest(models)["features"]
    images = [read_image_file(p)[0] for p in paths]
    torch.set_num_threads(1)
    cost = {}
    for kind, config in recorded.items():
        extractor = load_extractor(kind, weights, settings.replace(torch_threads=1), config)
        extractor.extract(images[:2])  # first-call costs
        started = time.process_time()
        for start in range(0, len(images), settings.clip_batch_size):
            extractor.extract(images[start:start + settings.clip_batch_size])
        cost[kind] = (time.process_time() - started) / len(images)
    return cost


def gateway_pass(paths: list[Path], models: Path, weights: Path, concurrency: int) -> dict:
    """Every photo once through the local gateway, `concurrency` closed-loop clients."""
    log_dir = RESULTS / "logs" / "bulk"
    service_env = services.service_env(models, weights, log_dir, {"DRAIN_SECONDS": "0", "CACHE_MAX_ENTRIES": "0",
                                                                  "HISTORY_ENABLED": "0"})
    payloads = [p.read_bytes() for p in paths]
    with services.running([*member_names(), GATEWAY], service_env, log_dir) as running:
        gateway = running[GATEWAY].url
        load.warm_up(load.post_to(gateway), payloads[:4], 4)
        result = load.run_load(load.post_to(gateway), payloads, concurrency, 0.0, min_requests=len(payloads))
    summary = result.summary()
    return {"photos": len(paths), "wall_s": result.wall_s, "photos_per_s": len(result.latencies_s) / result.wall_s,
            "errors": summary["errors"], "degraded": summary["degraded"], "p50_ms": summary["p50_ms"]}


def serial_predict(listing_paths: list[Path], models: Path, weights: Path, cache_dir: Path) -> dict:
    """`python -m shared predict` over the photos: one process, features on an empty cache."""
    cmd = [sys.executable, "-m", "shared", "predict", "--json", "--models", str(models), "--weights", str(weights),
           *map(str, listing_paths)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**env(), "FEATURE_CACHE_DIR": str(cache_dir)}, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    return {"photos": len(listing_paths), "wall_s": wall, "photos_per_s": len(listing_paths) / wall,
            "returncode": proc.returncode}


@contextmanager
def two_ray_nodes() -> Iterator[str]:
    """A head and a second node on 127.0.0.1, one CPU each: two 1-core machines, on this one."""
    port = 6391
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", "--port", str(port), "--include-dashboard", "false", *common],
                       check=True, env=env(), capture_output=True)
        subprocess.run([str(RAY), "start", "--address", f"127.0.0.1:{port}", *common], check=True, env=env(),
                       capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env(), capture_output=True)


def same_rows(a: Path, b: Path) -> dict:
    from shared.bulk.job import read_output

    x, y = read_output(a), read_output(b)
    same_class = x.column("class_id").to_pylist() == y.column("class_id").to_pylist()
    gap = float(np.nanmax(np.abs(np.array(x.column("proba_stack").to_pylist(), dtype=float)
                                 - np.array(y.column("proba_stack").to_pylist(), dtype=float))))
    return {"rows": [len(x), len(y)], "same_classes": same_class, "max_proba_gap": gap}


def run(args: argparse.Namespace) -> dict:
    settings = Settings.from_env()
    weights = full_size_weights(settings, WORK / "weights")
    models = models_folder(settings, weights)
    work = WORK / "bulk"
    listing = work / "photos.csv"
    paths = photo_listing(settings, args.photos, listing)
    n = len(paths)
    log.info("%d photos; models %s", n, models)
    record: dict = {"machine": {**procs.machine(), "command": "python -m bench.bulk " + " ".join(args.argv),
                                "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                    "photos": n, "settings": {"concurrency": args.concurrency, "part_rows": args.part_rows}}

    def fresh(name: str) -> Path:
        shutil.rmtree(work / name, ignore_errors=True)
        return work / name

    # Spread like the job's photos: the classes differ in text, and OCR's cost with it.
    record["extractor_cpu_s"] = extractor_cpu_s(paths[:: max(1, n // args.cost_photos)], weights, models, settings)
    part_rows = ["--part-rows", str(args.part_rows)]
    log.info("classify-batch, uninterrupted")
    record["batch"] = run_job(classify_cmd(listing, fresh("whole"), models, weights, *part_rows), out=work / "whole")
    log.info("classify-batch, killed at half and resumed")
    killed = run_job(classify_cmd(listing, fresh("resumed"), models, weights, *part_rows), n // 2, work / "resumed")
    killed["rows_at_kill"] = written_rows(work / "resumed")
    resumed = run_job(classify_cmd(listing, work / "resumed", models, weights, *part_rows), out=work / "resumed")
    record["resume"] = {"killed": killed, "resumed": resumed, "same": same_rows(work / "whole", work / "resumed")}
    log.info("classify-batch on two Ray nodes")
    with two_ray_nodes() as address:
        record["two_nodes"] = run_job(classify_cmd(listing, fresh("two-nodes"), models, weights, "--address",
                                                   address, *part_rows), out=work / "two-nodes")
    record["two_nodes"]["same"] = same_rows(work / "whole", work / "two-nodes")
    log.info("the gateway, %d clients", args.concurrency)
    record["gateway"] = gateway_pass(paths[:: args.rate_every], models, weights, args.concurrency)
    log.info("serial predict")
    record["serial"] = serial_predict(paths[:: args.rate_every * 2], models, weights, fresh("predict-cache"))
    return record


def main(argv: list[str] | None = None) -> int:
    from bench.report.bulk import write_section

    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=800, help="photos of grocery train+val, evenly spread; "
                                                                "0 = all (%(default)s)")
    parser.add_argument("--rate-every", type=int, default=4,
                        help="the gateway gets every Nth of them, serial predict every 2Nth: rates (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="gateway clients (%(default)s)")
    parser.add_argument("--part-rows", type=int, default=50, help="rows per Parquet part (%(default)s)")
    parser.add_argument("--cost-photos", type=int, default=80,
                        help="photos (spread over the job's) for each extractor's CPU cost (%(default)s)")
    parser.add_argument("--cost-only", action="store_true",
                        help="measure only the extractors' CPU cost again, into the saved JSON")
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from the saved JSON")
    parser.add_argument("--before", type=Path, default=None, help="an earlier bulk.json to compare with")
    parser.add_argument("--before-label", default="", help="what --before was")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = RESULTS / "bulk.json"
    if args.cost_only:  # the ideal's input again, into the saved record (the jobs' figures stay)
        record = json.loads(out.read_text())
        settings = Settings.from_env()
        paths = photo_listing(settings, record["photos"], WORK / "bulk" / "photos.csv")
        record["extractor_cpu_s"] = extractor_cpu_s(paths[:: max(1, len(paths) // args.cost_photos)],
                                                    full_size_weights(settings, WORK / "weights"),
                                                    models_folder(settings, WORK / "weights"), settings)
        record["cost_recorded_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        out.write_text(json.dumps(record, indent=2))
    elif not args.report_only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(run(args), indent=2))
    before = json.loads(args.before.read_text()) if args.before else None
    print(f"wrote {write_section(json.loads(out.read_text()), MARKDOWN, before, args.before_label)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
