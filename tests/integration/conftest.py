"""Real gunicorn processes on 127.0.0.1 at free ports: the `stack` fixture (all four services) and its helpers.

Use `stack` (session-wide, shared; never break it) for anything that only sends requests:
    def test_x(stack): requests.post(stack.gateway_url, data=jpeg)
Use `start_service` for a private process you may stop, kill or SIGSTOP: it is cleaned up after the test.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest
import requests
from PIL import Image

from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order
REPO = Path(__file__).resolve().parents[2]
SERVICES = (*MEMBERS, GATEWAY)
READY_TIMEOUT_S = 300.0
# Small enough that the oversize test sends little, large enough for every test image.
TEST_MAX_IMAGE_BYTES = 2 * 1024 * 1024


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (a gunicorn master's workers), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may contain spaces; the ppid is the 2nd field after its ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def jpeg_bytes(size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (30, 140, 60)) -> bytes:
    """A small real JPEG with some texture (a plain colour would make every member answer alike)."""
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 6):
        for y in range(size[1]):
            img.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Service:
    """One gunicorn (master + workers) started by the tests; stdout+stderr go to `log_path`."""

    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    metrics_dir: Path
    env: dict = field(repr=False, default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return child_pids(self.proc.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> requests.Response:
        return requests.get(self.url + "/v2/health/ready", timeout=5)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll /v2/health/ready until 200; fail with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                resp = self.ready()
                if resp.status_code == 200:
                    return
                last = resp.text
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.25)
        pytest.fail(f"{self.name} not ready after {timeout:.0f} s ({last}):\n{self.log_text()[-3000:]}")

    def signal(self, sig: int, *, workers_too: bool = False) -> None:
        pids = [self.proc.pid] + (self.workers() if workers_too else [])
        for pid in pids:
            os.kill(pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful, drains), then SIGKILL if it has not exited in time; returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT, workers_too=True)  # a test may have left it SIGSTOPped
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in self.workers():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@dataclass
class Stack:
    """The four services; `urls[name]`, `gateway_url` and `services[name]` for signals and logs."""

    services: dict[str, Service]

    @property
    def urls(self) -> dict[str, str]:
        return {name: svc.url for name, svc in self.services.items()}

    @property
    def gateway_url(self) -> str:
        return self.services[GATEWAY].url

    def member_urls(self) -> str:
        """The MEMBER_URLS value that points a gateway at these members."""
        return ",".join(f"{name}={self.services[name].url}" for name in MEMBERS if name in self.services)


def wait_for_records(url: str, n: int, headers: dict | None = None, timeout: float = 20.0) -> list[dict]:
    """The history's newest items once it holds n records (the writer records in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        items = requests.get(url + "/v1/history", params={"limit": 500}, headers=headers, timeout=10).json()["items"]
        if len(items) >= n or time.monotonic() > deadline:
            return items
        time.sleep(0.1)


def wait_for_metric(url: str, sample: str, timeout: float = 20.0) -> bool:
    """True once the service's /metrics shows `sample` (a name with its labels)."""
    deadline = time.monotonic() + timeout
    while sample not in requests.get(url + "/metrics", timeout=10).text:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def base_env(models_dir: Path, weights_dir: Path, run_dir: Path) -> dict[str, str]:
    """Environment for test services: tiny limits, one torch thread, private history and metrics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))}
    env.update(
        PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TORCH_THREADS="1",
        MODELS_DIR=str(models_dir), WEIGHTS_DIR=str(weights_dir), FEATURE_CACHE_DIR=str(run_dir / "cache"),
        HISTORY_DB=str(run_dir / "history.sqlite3"), MAX_IMAGE_BYTES=str(TEST_MAX_IMAGE_BYTES),
        DRAIN_SECONDS="1", GUNICORN_THREADS="4", WEB_CONCURRENCY="1",
        MEMBER_TIMEOUT_S="20", GATEWAY_DEADLINE_S="25",
        # Not the host's cores (2 on CI): these tests send a few requests at once and check answers, not load
        # shedding (tests/chaos does that, with the defaults).
        GATEWAY_RUNNING="4", UNBATCHED_RUNNING="4",
    )
    return env


def launch(name: str, env: Mapping[str, str], run_dir: Path, *, port: int | None = None,
           workers: int = 1, extra_env: Mapping[str, str] | None = None) -> Service:
    """Start `gunicorn -c services/<name>/gunicorn.conf.py` on 127.0.0.1:<free port> (does not wait)."""
    port = port or free_port()
    tag = f"{name}-{port}"
    metrics_dir = run_dir / f"metrics-{tag}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "WEB_CONCURRENCY": str(workers), **(extra_env or {})}
    log_path = run_dir / f"{tag}.log"
    cmd = [sys.executable, "-m", "gunicorn", "-c", f"services/{name}/gunicorn.conf.py",
           "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Service(name, port, proc, log_path, metrics_dir, env)


def start_stack(models_dir: Path, weights_dir: Path, run_dir: Path,
                extra_env: Mapping[str, str] | None = None) -> Stack:
    """All four services on free ports, the gateway pointed at the members; waits until all are ready."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**base_env(models_dir, weights_dir, run_dir), **(extra_env or {})}
    members = {name: launch(name, env, run_dir) for name in MEMBERS}
    member_urls = ",".join(f"{name}={svc.url}" for name, svc in members.items())
    services = {**members, GATEWAY: launch(GATEWAY, {**env, "MEMBER_URLS": member_urls}, run_dir)}
    stack = Stack(services)
    try:
        for svc in services.values():
            svc.wait_ready()
    except BaseException:
        stop_all(services.values())
        raise
    return stack


def private_gateway(stack: Stack, run_dir: Path, **extra: str) -> Service:
    """A gateway of the test's own (its own history unless HISTORY_DB says otherwise) over the session's members."""
    served = stack.services[GATEWAY]
    env = {**base_env(served.env["MODELS_DIR"], served.env["WEIGHTS_DIR"], run_dir), "MEMBER_URLS": stack.member_urls(),
           **extra}
    svc = launch(GATEWAY, env, run_dir)
    try:
        svc.wait_ready()
    except BaseException:
        stop_all([svc])
        raise
    return svc


def stop_all(services) -> None:
    for svc in services:
        try:
            svc.stop()
        except Exception:  # noqa: BLE001 - clean up the rest whatever happened to one
            pass


@pytest.fixture(scope="session")
def stack(trained_models: Path, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All four services (real gunicorns, free ports, trained_models + tiny synthetic weights), shared by tests."""
    started = start_stack(trained_models, tiny_weights, tmp_path_factory.mktemp("stack"))
    yield started
    stop_all(started.services.values())


@pytest.fixture
def start_service(trained_models: Path, tiny_weights: Path, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Factory for private services this test may break: start_service(name, workers=1, **env) -> Service."""
    started: list[Service] = []

    def start(name: str, *, workers: int = 1, wait: bool = True, **extra_env: str) -> Service:
        env = base_env(trained_models, tiny_weights, tmp_path)
        svc = launch(name, env, tmp_path, workers=workers, extra_env={k: str(v) for k, v in extra_env.items()})
        started.append(svc)
        if wait:
            svc.wait_ready()
        return svc

    yield start
    stop_all(started)


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    return jpeg_bytes()
