"""Start the real gunicorn services for a benchmark, time them to ready, and stop them again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import httpx

from shared import members
from shared.members import member_names

MEMBERS = member_names()  # the member table's names, in table order
ROOT = Path(__file__).resolve().parent.parent
# The table's ports + 100 (5100-5103): a benchmark never meets a `make serve` or a test run.
BENCH_PORTS = {spec.name: spec.port + 100 for spec in members.services()}


@dataclass
class Service:
    """One running gunicorn (master + workers) and how long it took to become ready."""

    name: str
    url: str
    process: subprocess.Popen
    ready_s: float

    @property
    def pid(self) -> int:
        return self.process.pid


# Speed, not load shedding (bench/resilience.py measures that): every request a load level sends runs, as
# GUNICORN_THREADS (8) did for every service before the per-service limits.
SPEED_LIMITS = {"GATEWAY_RUNNING": "8", "UNBATCHED_RUNNING": "8", "ADMISSION_QUEUE": "16",
                "ADMISSION_WAIT_PREDICTIONS": "0"}


def service_env(models_dir: Path, weights_dir: Path, log_dir: Path, extra: Mapping[str, str] | None = None) -> dict:
    """The environment every benchmarked service gets: loopback ports, our models, quiet history."""
    env = dict(os.environ)
    env.update({
        "BIND_HOST": "127.0.0.1",
        "SERVICE_PORTS": ",".join(f"{name}={port}" for name, port in BENCH_PORTS.items()),
        "MEMBER_URLS": ",".join(f"{name}=http://127.0.0.1:{BENCH_PORTS[name]}" for name in MEMBERS),
        "MODELS_DIR": str(models_dir), "WEIGHTS_DIR": str(weights_dir),
        "HISTORY_DB": str(log_dir / "history.sqlite3"),
        "PYTHONPATH": str(ROOT),
        **SPEED_LIMITS,
    })
    env.update(extra or {})
    return env


def start(name: str, env: Mapping[str, str], log_dir: Path, ready_timeout_s: float = 300.0) -> Service:
    """Start services/<name> under gunicorn and wait until /v2/health/ready answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", f"services/{name}/gunicorn.conf.py"],
        cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{BENCH_PORTS[name]}"
    try:
        _wait_ready(url, process, started + ready_timeout_s)
    except Exception:
        stop_process(process)
        raise
    return Service(name, url, process, time.perf_counter() - started)


def _wait_ready(url: str, process: subprocess.Popen, deadline: float) -> None:
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before it was ready; see its log")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} was not ready in time")


def stop_process(process: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM the gunicorn master (it drains and stops its workers); SIGKILL its group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running(names: list[str], env: Mapping[str, str], log_dir: Path) -> Iterator[dict[str, Service]]:
    """The named services, started one after another (each ready time measured alone), stopped on exit."""
    services: dict[str, Service] = {}
    try:
        for name in names:
            services[name] = start(name, env, log_dir)
        yield services
    finally:
        for service in services.values():
            stop_process(service.process)
