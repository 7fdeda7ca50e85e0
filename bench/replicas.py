"""One ocr_nb replica against two (and three) on this machine: the Swarm stack under a closed loop, per count.

`make bench-replicas` (= python -m bench.replicas). Deploys deploy/swarm/stack.yml on a single-node swarm (joined or
made on 127.0.0.1, left again) with the resilience bench's models (REAL OCR, SYNTHETIC ViT-B-32 CLIP) and the
stack's default limits (each member task: 1 CPU, TORCH_THREADS=1). For each replica count: scale ocr_nb, wait until
every task is healthy, warm up, then measure a closed-loop client (one requests.Session per thread) for a fixed
window. Writes bench/results/replicas.json and the "Replicas" section of BENCHMARKS.md. Uses the images
docker-compose builds (built when missing) and the swarm helpers of tests/swarm_check.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from bench import procs
from shared.config import Settings
from tests import swarm_check as swarm
from tests.compose_check import Clock

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / ".cache" / "bench" / "replicas"
STACK = "classifier_bench"
MEMBER = swarm.SCALED
log = logging.getLogger("bench.replicas")


def models_folder(settings: Settings) -> Path:
    """The resilience bench's trained models with their weights inside (what MODELS_PATH mounts), hard links."""
    from bench.resilience_prep import prepare

    weights_dir, models_dir = prepare(settings)
    out = WORK / "models"
    if not (out / "manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(models_dir, out, copy_function=os.link)
        shutil.copytree(weights_dir, out / "weights", copy_function=os.link, dirs_exist_ok=True)
    for path in [out, *out.rglob("*")]:  # the containers run as uid 10001
        path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
    return out


def measure(stack: swarm.SwarmStack, photos: list[Path], threads: int, warmup_s: float, seconds: float) -> dict:
    """A closed loop of `threads` clients: warm-up, then a window of `seconds`; its answers and the replicas' share."""
    load = swarm.Load(stack.url, photos, threads)
    load.start()
    try:
        time.sleep(warmup_s)
        calls_before, begun = swarm.replica_calls(stack, MEMBER), time.monotonic()
        for _ in tqdm(range(int(seconds)), desc=f"{threads} clients", unit="s", leave=False):
            time.sleep(1)
        ended = time.monotonic()
        calls = swarm.replica_calls(stack, MEMBER) - calls_before
    finally:
        load.stop()
    window = load.window(begun, ended)
    kinds = Counter(r.kind for r in window)
    answered = [r.latency_s for r in window if r.kind != "failed"]
    complete = [r.latency_s for r in window if r.kind == "ok"]
    per_replica: Counter = Counter()
    for (replica, outcome), n in calls.items():
        if outcome == "ok":
            per_replica[replica] += int(n)
    return {"seconds": ended - begun, "threads": threads, "ok": kinds["ok"], "degraded": kinds["degraded"],
            "failed": kinds["failed"], "answers_per_s": len(answered) / (ended - begun),
            "complete_per_s": len(complete) / (ended - begun),
            "p50_ms": _pct(complete, 50), "p99_ms": _pct(complete, 99),
            "ocr_answers_per_replica": dict(per_replica), "load_average_after": os.getloadavg()[0]}


def _pct(values: list[float], q: float) -> float | None:
    if len(values) < 2:
        return values[0] * 1000 if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def run(args: argparse.Namespace) -> dict:
    from bench.resilience import photo_paths

    settings, clock = Settings.from_env(), Clock(log=swarm.say)
    photos, source = photo_paths(settings, args.photos)
    swarm.LOG_DIR.mkdir(parents=True, exist_ok=True)
    swarm.ensure_images("latest", skip_build=False, clock=clock, rebuild=args.build)
    models = models_folder(settings)
    gwbridge_before = swarm.network_exists("docker_gwbridge")
    created = swarm.join_swarm()
    counts = [int(n) for n in args.replicas.split(",")]
    stack = swarm.SwarmStack(STACK, {}, swarm.pick_port(None))
    stack.env = dict(os.environ, MODELS_PATH=str(models), STACKING_PORT=str(stack.port), IMAGE_TAG="latest",
                     OCR_NB_REPLICAS=str(counts[0]))
    rows = []
    info = {**procs.machine(), "command": "python -m bench.replicas " + " ".join(args.argv),
            "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "photos": len(photos),
            "photo_source": source,
            "models": "resilience bench's (trained on screenshots, 15 per class)",
            "load_average_before": os.getloadavg()[0]}
    try:
        if swarm.network_exists(stack.network):
            stack.remove()
        with clock.step("deploy"):
            stack.deploy()
            swarm.wait_healthy(stack, swarm.SERVICES, swarm.DEPLOY_TIMEOUT_S)
            swarm.wait_gateway_ready(stack, 120)
        for n in tqdm(counts, desc="replica counts", unit="count"):
            with clock.step(f"{MEMBER} x {n}"):
                swarm.docker("service", "scale", "--detach", f"{stack.service(MEMBER)}={n}", timeout=60)
                swarm.wait_healthy(stack, (MEMBER,), swarm.REPLACE_TIMEOUT_S)
                row = {"replicas": n, **measure(stack, photos, args.threads, args.warmup, args.seconds)}
                log.info("%s x %d: %s", MEMBER, n, row)
                rows.append(row)
    finally:
        with clock.step("clean up"):
            stack.remove()
            swarm.leave_swarm(created, gwbridge_before)
        info["load_average_after"] = os.getloadavg()[0]
    return {"machine": info, "rows": rows, "settings": {"threads": args.threads, "seconds": args.seconds,
                                                         "warmup_s": args.warmup}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", default="1,2,3", help="ocr_nb replica counts, in order (%(default)s)")
    parser.add_argument("--threads", type=int, default=4, help="closed-loop clients (%(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per count (%(default)s)")
    parser.add_argument("--warmup", type=float, default=15.0, help="load before each window (%(default)s)")
    parser.add_argument("--photos", type=int, default=24, help="distinct photos, sent round robin (%(default)s)")
    parser.add_argument("--build", action="store_true", help="build the images again (after a code change)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from the saved JSON")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = RESULTS / "replicas.json"
    if not args.report_only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(run(args), indent=2))
    from bench.report.replicas import write_section

    write_section(json.loads(out.read_text()), ROOT / "BENCHMARKS.md")
    print(f"wrote the Replicas section of {ROOT / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
