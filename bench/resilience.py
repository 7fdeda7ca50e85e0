"""`python -m bench.resilience` (= `make bench-resilience`): the real local stack under overload, a frozen member
and a soak; writes bench/results/resilience.json and the "Resilience" section of BENCHMARKS.md.

One `python -m shared serve --synthetic` (circus, four gunicorns) for the whole run, with the full-size offline
weights (REAL EasyOCR, SYNTHETIC ViT-B-32 CLIP) and a small model trained on the screenshots dataset:

1. overload: closed-loop clients at concurrency 1, 2, 4, 8, 24 against the gateway; at 24 a separate process
   probes /v2/health/live every 200 ms;
2. breaker: p50 at concurrency 2 with clip_svm SIGSTOPped (master + workers) once its breaker is open, vs normal;
3. soak: concurrency 2 for 5 minutes after a 30 s warm-up, RSS of every service sampled every 10 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import psutil
from tqdm import tqdm

from bench import procs
from bench.services import ROOT
from shared.config import Settings
from shared.members import GATEWAY, member_names, services

MEMBERS = member_names()
SERVICES = [*MEMBERS, GATEWAY]
PORTS = {spec.name: spec.port + 210 for spec in services()}  # the table's + 210 (5210-5213): away from serve/bench
LEVELS = [1, 2, 4, 8, 24]
RESULTS = ROOT / "bench" / "results"
log = logging.getLogger("bench.resilience")


# --- the stack -----------------------------------------------------------------------------------------
@dataclass
class Stack:
    proc: subprocess.Popen
    lines: list[str]
    ready_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PORTS[GATEWAY]}"

    def master(self, name: str) -> psutil.Process | None:
        """The gunicorn master of one service: a child of serve (circus runs in its process)."""
        for child in psutil.Process(self.proc.pid).children():
            try:
                if f"services/{name}/gunicorn.conf.py" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        return None

    def tree(self, name: str) -> list[psutil.Process]:
        master = self.master(name)
        return [master, *master.children(recursive=True)] if master else []

    def signal_tree(self, name: str, sig: int) -> None:
        for proc in self.tree(name):
            proc.send_signal(sig)

    def rss_mib(self) -> dict[str, dict]:
        """Per service: master + workers RSS and the largest process (the worker), MiB."""
        out = {}
        for name in SERVICES:
            sizes = []
            for proc in self.tree(name):
                try:
                    sizes.append(proc.memory_info().rss / 2**20)
                except psutil.Error:
                    continue
            out[name] = {"total_mib": sum(sizes), "largest_mib": max(sizes, default=0.0), "processes": len(sizes)}
        return out


def start_stack(models: Path, weights: Path, log_dir: Path, timeout_s: float = 600.0) -> Stack:
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))}
    env.update(SERVICE_PORTS=",".join(f"{n}={p}" for n, p in PORTS.items()), PYTHONUNBUFFERED="1",
               HISTORY_DB=str(log_dir / "resilience-history.sqlite3"), PYTHONPATH=str(ROOT))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "shared", "serve", "--models", str(models), "--weights",
                             str(weights), "--synthetic"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    ready: queue.Queue = queue.Queue()
    logfile = open(log_dir / "resilience-serve.log", "w")

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            logfile.write(line)
            logfile.flush()
            if "curl --data-binary" in line:
                ready.put(True)
        ready.put(False)

    threading.Thread(target=read, daemon=True).start()
    try:
        ok = ready.get(timeout=timeout_s)
    except queue.Empty:
        ok = False
    if not ok:
        stop_stack(Stack(proc, lines, 0.0))
        raise RuntimeError("serve was not ready:\n" + "".join(lines)[-4000:])
    return Stack(proc, lines, time.monotonic() - started)


def stop_stack(stack: Stack) -> None:
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGINT)
        try:
            stack.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait(10)


# --- load ------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    sent: float  # since the load started
    latency_s: float
    status: int | None  # None: no HTTP answer
    degraded: bool = False
    failed: tuple[str, ...] = ()
    reasons: dict = field(default_factory=dict)
    retry_after: float | None = None


async def _one(client: httpx.AsyncClient, url: str, body: bytes, t_start: float) -> Answer:
    t0 = time.perf_counter()
    try:
        resp = await client.post(url, content=body, headers={"Content-Type": "application/octet-stream"})
    except httpx.HTTPError:
        return Answer(t0 - t_start, time.perf_counter() - t0, None)
    answer = Answer(t0 - t_start, time.perf_counter() - t0, resp.status_code)
    if resp.status_code == 200:
        data = resp.json()
        answer.degraded = bool(data.get("degraded"))
        answer.reasons = data.get("failed") or {}
        answer.failed = tuple(sorted(answer.reasons))
    elif resp.status_code == 503:
        try:
            answer.retry_after = float(resp.headers.get("Retry-After", ""))
        except ValueError:
            answer.retry_after = None
    return answer


async def _closed_loop(url: str, bodies: list[bytes], concurrency: int, until, bar: tqdm | None,
                       honour_retry_after: bool) -> tuple[list[Answer], float]:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    answers: list[Answer] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        t_start = time.perf_counter()
        counter = iter(range(10**9))

        async def worker() -> None:
            while not until(answers, time.perf_counter() - t_start):
                answer = await _one(client, url, bodies[next(counter) % len(bodies)], t_start)
                answers.append(answer)
                if bar is not None:
                    bar.update(1)
                if answer.status == 503 and honour_retry_after:
                    await asyncio.sleep(answer.retry_after or 1.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return answers, time.perf_counter() - t_start


def closed_loop(url: str, bodies: list[bytes], concurrency: int, until, desc: str,
                honour_retry_after: bool = True, total: int | None = None) -> tuple[list[Answer], float]:
    """Keep `concurrency` requests in flight until until(answers, elapsed_s) says stop; every answer recorded."""
    with tqdm(desc=desc, unit="req", total=total, leave=False) as bar:
        return asyncio.run(_closed_loop(url, bodies, concurrency, until, bar, honour_retry_after))


def for_seconds(seconds: float):
    return lambda answers, elapsed: elapsed >= seconds


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def level_summary(concurrency: int, answers: list[Answer], window_s: float, wall_s: float) -> dict:
    ok = [a for a in answers if a.status == 200]
    lat = [a.latency_s for a in ok]
    refused = [a for a in answers if a.status == 503]
    in_window = sum(1 for a in ok if a.sent + a.latency_s <= window_s)
    return {"concurrency": concurrency, "answered": len(ok), "refused_503": len(refused),
            "other": len(answers) - len(ok) - len(refused), "degraded": sum(a.degraded for a in ok),
            "share_503": len(refused) / len(answers) if answers else None,
            "p50_ms": _ms(pct(lat, 50)), "p99_ms": _ms(pct(lat, 99)), "slowest_answer_ms": _ms(max(lat, default=None)),
            "slowest_any_ms": _ms(max((a.latency_s for a in answers), default=None)),
            "slowest_503_ms": _ms(max((a.latency_s for a in refused), default=None)),
            "retry_after_s": sorted({a.retry_after for a in refused if a.retry_after is not None}),
            "throughput_rps": in_window / window_s, "window_s": window_s, "wall_s": wall_s,
            **complete_summary(ok, window_s)}


def complete_summary(ok: list[Answer], window_s: float) -> dict:
    """The complete answers (no member missing) apart: a degraded answer without the slow member is fast, and
    would flatter latency and throughput; and which members were missing, and why (timeout, circuit open, ...)."""
    complete = [a for a in ok if not a.degraded]
    lat = [a.latency_s for a in complete]
    missing: dict[str, dict[str, int]] = {}
    for a in ok:
        for member, reason in a.reasons.items():
            kind = "circuit open" if "circuit open" in str(reason) else "timeout" if "timeout" in str(reason) else "other"
            missing.setdefault(member, {}).setdefault(kind, 0)
            missing[member][kind] += 1
    return {"complete": len(complete), "complete_p50_ms": _ms(pct(lat, 50)), "complete_p99_ms": _ms(pct(lat, 99)),
            "complete_rps": sum(1 for a in complete if a.sent + a.latency_s <= window_s) / window_s,
            "missing_members": missing}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


# --- the health prober, in its own process so the load client's event loop does not delay it ---------------
def _probe(url: str, every_s: float, stop, out) -> None:
    import requests

    latencies, errors = [], 0
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            ok = requests.get(url, timeout=5).status_code == 200  # a fresh connection each time, like a kubelet
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - t0)
        errors += not ok
        time.sleep(max(0.0, every_s - (time.perf_counter() - t0)))
    out.put({"latencies_s": latencies, "errors": errors})


class Prober:
    def __init__(self, url: str, every_s: float = 0.2):
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_probe, args=(url, every_s, self.stop, self.out), daemon=True)

    def __enter__(self) -> "Prober":
        self.proc.start()
        time.sleep(1.0)  # the spawned interpreter's start-up, before the load begins
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.result = self.out.get(timeout=30)
        self.proc.join(10)

    def summary(self) -> dict:
        lat = [s * 1000 for s in self.result["latencies_s"]]
        return {"probes": len(lat), "errors": self.result["errors"], "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                "max_ms": max(lat, default=None), "over_100ms": sum(v >= 100 for v in lat)}


# --- the three parts -------------------------------------------------------------------------------------
def overload(stack: Stack, bodies: list[bytes], levels: list[int], seconds: float) -> dict:
    rows, health = [], None
    for c in tqdm(levels, desc="overload levels", unit="level"):
        if c == max(levels):
            with Prober(stack.url + "/v2/health/live") as prober:
                answers, wall = closed_loop(stack.url + "/", bodies, c, for_seconds(seconds), f"c={c}")
            health = prober.summary()
        else:
            answers, wall = closed_loop(stack.url + "/", bodies, c, for_seconds(seconds), f"c={c}")
        rows.append({**level_summary(c, answers, seconds, wall), "load_average_1m": os.getloadavg()[0]})
        log.info("c=%d: %s", c, {k: rows[-1][k] for k in ("answered", "refused_503", "p50_ms", "p99_ms",
                                                          "slowest_answer_ms", "throughput_rps")})
        time.sleep(2)  # let the admission queues and the members' batches empty
    return {"levels": rows, "health_live_at_max": health, "seconds_per_level": seconds}


def breaker(stack: Stack, bodies: list[bytes], seconds: float) -> dict:
    url = stack.url + "/"
    normal, _ = closed_loop(url, bodies, 2, for_seconds(seconds), "breaker: normal c=2")
    normal_ok = [a.latency_s for a in normal if a.status == 200 and not a.degraded]
    stack.signal_tree("clip_svm", signal.SIGSTOP)
    frozen_at = time.perf_counter()
    try:
        # until the answers say the breaker is open: several in a row without clip_svm, "circuit open"
        def opened(answers: list[Answer], elapsed: float) -> bool:
            tail = answers[-2:]
            return elapsed > 120 or (len(tail) == 2 and all("circuit open" in a.reasons.get("clip_svm", "")
                                                           for a in tail))
        transition, open_after = closed_loop(url, bodies, 2, opened, "breaker: opening")
        frozen, _ = closed_loop(url, bodies, 2, for_seconds(seconds), "breaker: open c=2")
    finally:
        stack.signal_tree("clip_svm", signal.SIGCONT)
    resumed_at = time.perf_counter()
    # back to whole: an answer with every member in it
    back, _ = closed_loop(url, bodies, 1, lambda a, e: e > 120 or bool(a and a[-1].status == 200 and not a[-1].degraded),
                          "breaker: closing")
    frozen_ok = [a.latency_s for a in frozen if a.status == 200]
    p50_normal, p50_open = pct(normal_ok, 50), pct(frozen_ok, 50)
    return {"normal": {"answers": len(normal_ok), "p50_ms": _ms(p50_normal), "p99_ms": _ms(pct(normal_ok, 99))},
            "open": {"answers": len(frozen_ok), "p50_ms": _ms(p50_open), "p99_ms": _ms(pct(frozen_ok, 99)),
                     "without_clip_svm": sum(a.failed == ("clip_svm",) for a in frozen),
                     "non_200": sum(a.status != 200 for a in frozen),
                     "reason_example": next((a.reasons.get("clip_svm") for a in frozen if a.reasons), None)},
            "opening": {"seconds": open_after, "answers": len(transition),
                        "slowest_ms": _ms(max((a.latency_s for a in transition), default=None))},
            "whole_again_s": time.perf_counter() - resumed_at, "whole_again_answers": len(back),
            "frozen_total_s": resumed_at - frozen_at, "concurrency": 2,
            "ratio": p50_open / p50_normal if p50_normal and p50_open else None}


def soak(stack: Stack, bodies: list[bytes], warmup_s: float, seconds: float, every_s: float = 10.0) -> dict:
    samples: list[dict] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append({"t_s": time.perf_counter() - t0, "rss": stack.rss_mib(), "load_1m": os.getloadavg()[0],
                            "pids": {n: (m.pid if (m := stack.master(n)) else None) for n in SERVICES}})
            stop.wait(every_s)

    warm, _ = closed_loop(stack.url + "/", bodies, 2, for_seconds(warmup_s), "soak: warm-up c=2")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answers, wall = closed_loop(stack.url + "/", bodies, 2, for_seconds(seconds), "soak: c=2")
    time.sleep(0.5)
    samples.append({"t_s": wall, "rss": stack.rss_mib(), "load_1m": os.getloadavg()[0],
                    "pids": {n: (m.pid if (m := stack.master(n)) else None) for n in SERVICES}})
    stop.set()
    sampler.join(15)
    first, last = samples[0], samples[-1]
    per_service = {}
    for name in SERVICES:
        start, end = first["rss"][name]["total_mib"], last["rss"][name]["total_mib"]
        per_service[name] = {"start_mib": start, "end_mib": end, "peak_mib": max(s["rss"][name]["total_mib"]
                                                                                for s in samples),
                             "worker_start_mib": first["rss"][name]["largest_mib"],
                             "worker_end_mib": last["rss"][name]["largest_mib"],
                             "growth_pct": (end - start) / start * 100 if start else None,
                             "restarted": first["pids"][name] != last["pids"][name]}
    return {"warmup_s": warmup_s, "seconds": seconds, "every_s": every_s, "concurrency": 2,
            "load": level_summary(2, answers, seconds, wall), "warmup_answers": len(warm),
            "services": per_service, "samples": samples}


# --- bookkeeping -----------------------------------------------------------------------------------------
def photos(settings: Settings, count: int) -> tuple[list[bytes], str]:
    """Bytes of `count` grocery/val photos (never trained on), else screenshots; and which."""
    paths, source = photo_paths(settings, count)
    return [path.read_bytes() for path in paths], source


def photo_paths(settings: Settings, count: int) -> tuple[list[Path], str]:
    """`count` grocery/val photos (never trained on), else screenshots; and which."""
    from shared.learning.data import balanced_subset, folder_records

    for source in ("grocery/val", "screenshots"):
        folder = Path(settings.datasets_dir) / source
        if folder.is_dir():
            records = balanced_subset(folder_records(folder), max(1, count // 3), seed=1)
            if records:
                return [path for path, _ in records[:count]], source
    raise SystemExit(f"no photos under {settings.datasets_dir}/grocery/val or /screenshots (DATASETS_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.resilience", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrencies (default %(default)s)")
    parser.add_argument("--level-seconds", type=float, default=40.0, help="per overload level (%(default)s)")
    parser.add_argument("--breaker-seconds", type=float, default=20.0, help="normal and open windows (%(default)s)")
    parser.add_argument("--soak-seconds", type=float, default=300.0, help="soak after warm-up (%(default)s)")
    parser.add_argument("--soak-warmup", type=float, default=30.0, help="(%(default)s)")
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from the saved JSON")
    parser.add_argument("--before", type=Path, help="a resilience.json of the code before a change: shown beside "
                        "this run's overload levels (measure before and after)")
    parser.add_argument("--before-label", default="before", help="what that run measured, e.g. a commit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "resilience.json"
    if not args.report_only:
        out.write_text(json.dumps({"recorded_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                                   "result": run(args)}, indent=2, default=str))
        log.info("saved %s", out)
    if args.before:
        record = json.loads(out.read_text())
        record["result"]["before"] = before_levels(json.loads(args.before.read_text()), args.before_label)
        out.write_text(json.dumps(record, indent=2, default=str))
    from bench.report.resilience import write_section

    write_section(json.loads(out.read_text()), ROOT / "BENCHMARKS.md", ROOT / "bench" / "resilience.png")
    print(f"wrote the Resilience section of {ROOT / 'BENCHMARKS.md'}")
    return 0


def running_slots(settings: Settings) -> dict[str, int]:
    """Predictions each service runs at once with these settings, as the services themselves work it out."""
    from shared.gateway.runtime import GatewayRuntime
    from shared.serving.learner import LearnerRuntime

    return {"stacking": GatewayRuntime(settings).running_slots(),
            "ocr_nb": LearnerRuntime("ocr_nb", settings).running_slots(),
            "clip": LearnerRuntime("clip_svm", settings).running_slots()}


def before_levels(record: dict, label: str) -> dict:
    """The overload levels and health probes of an earlier run, to set beside this one."""
    res = record["result"]
    return {"label": label, "recorded_utc": record.get("recorded_utc"), "command": res["machine"].get("command"),
            "levels": res["overload"]["levels"],
            "health": res["overload"].get("health_live_at_max"), "running": res["machine"].get("running"),
            "settings": res["machine"]["settings"]}


def run(args: argparse.Namespace) -> dict:
    from bench.resilience_prep import prepare

    began = time.monotonic()
    settings = Settings.from_env()
    weights_dir, models_dir = prepare(settings)
    bodies, source = photos(settings, args.photos)
    levels = [int(c) for c in args.levels.split(",")]
    info = {**procs.machine(), "python": platform.python_version(),
            "command": " ".join(["python -m bench.resilience", *sys.argv[1:]]),
            "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "photos": {"source": source, "count": len(bodies)}, "weights_dir": str(weights_dir),
            "models_dir": str(models_dir), "trained_on": "screenshots (15 per class: camera, screenshots)",
            "settings": {k: getattr(settings, k) for k in ("deadline_s", "member_timeout_s", "breaker_failures",
                                                           "breaker_cooloff_s", "threads", "admission_queue",
                                                           "admission_wait_predictions",
                                                           "workers")},
            "running": running_slots(settings),
            "client": "one asyncio httpx process, closed loop; a 503 is followed by a sleep of its Retry-After",
            "load_average_before": os.getloadavg()}
    stack = start_stack(models_dir, weights_dir, RESULTS / "logs")
    info["ready_s"] = stack.ready_s
    log.info("stack ready in %.0f s", stack.ready_s)
    result: dict = {"machine": info}
    try:
        closed_loop(stack.url + "/", bodies, 1, lambda a, e: len(a) >= 4, "warm-up", total=4)
        result["overload"] = overload(stack, bodies, levels, args.level_seconds)
        result["breaker"] = breaker(stack, bodies, args.breaker_seconds)
        result["soak"] = soak(stack, bodies, args.soak_warmup, args.soak_seconds)
        result["restarts_seen"] = {n: len(re.findall(rf"\b{n} started", "".join(stack.lines))) for n in SERVICES}
    finally:
        info["load_average_after"] = os.getloadavg()
        stop_stack(stack)
        info["wall_s"] = time.monotonic() - began
    return result


if __name__ == "__main__":
    raise SystemExit(main())
