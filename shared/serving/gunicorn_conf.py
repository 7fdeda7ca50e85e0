"""gunicorn settings and hooks shared by the four services; each services/<name>/gunicorn.conf.py adds its app and port.

Kept free of prometheus_client at import time: the multi-process mode is chosen when that library is first
imported, so it must first be imported in the workers, after PROMETHEUS_MULTIPROC_DIR is in their environment.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import SettingsError

# What a services/<name>/gunicorn.conf.py takes with `import *`: gunicorn settings and hooks only.
__all__ = ["worker_class", "workers", "threads", "timeout", "graceful_timeout", "keepalive", "accesslog",
           "control_socket_disable", "raw_env", "on_starting", "on_exit", "child_exit", "post_fork",
           "worker_exit", "bind_for"]

PR_SET_PDEATHSIG = 1  # linux/prctl.h

try:
    _settings = Settings.from_env()
except SettingsError as exc:  # SystemExit passes gunicorn's "Failed to read config file" traceback: the message alone
    sys.exit(f"error: {exc.message}")
_own_metrics_dir = not _settings.metrics_dir
METRICS_DIR = _settings.metrics_dir or tempfile.mkdtemp(prefix="classifier-metrics-")

# gthread (threads let concurrent requests meet in one dynamic batch), plus arrival times and a closing drain.
worker_class = "shared.serving.worker.ServiceWorker"
workers = _settings.workers
# Predictions running, predictions queued for a slot (admission.py), and threads that are never taken by
# predictions, so health probes and metrics answer at once under any load.
HEALTH_THREADS = 4
threads = _settings.threads + _settings.admission_queue + HEALTH_THREADS
timeout = 120  # models load in a background thread, so the heartbeat never waits on them
graceful_timeout = math.ceil(_settings.drain_seconds) + 30  # the not-ready drain, then in-flight requests finish
keepalive = 5
accesslog = None  # the app writes one JSON line per request instead
control_socket_disable = True  # four services on one host would fight over the one default socket path
# By default torch's idle OpenMP threads spin for a few ms; the services share the cores, so that spinning burns
# CPU another service needs (BENCHMARKS.md). libgomp reads the variable when torch loads, in the worker.
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={METRICS_DIR}", f"OMP_WAIT_POLICY={_settings.omp_wait_policy}"]


def bind_for(service: str) -> str:
    """host:port of a service from BIND_HOST and SERVICE_PORTS."""
    return f"{_settings.bind_host}:{_settings.port_map()[service]}"


def on_starting(server: Any) -> None:
    """Start from empty metrics: files left by an earlier run would be summed in. Stop with the parent."""
    path = Path(METRICS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    _stop_with_parent()


def _stop_with_parent() -> None:
    """SIGTERM (the usual drain) to this master when its parent dies: a supervisor killed outright (serve's circus
    by SIGKILL, an OOM kill) must not leave the services running on, orphaned, holding its sockets. (The kernel
    watches the parent thread that started us: circus and the tests start services from their main thread.)"""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        failed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0
        reason = os.strerror(ctypes.get_errno()) if failed else ""
    except (OSError, AttributeError) as exc:  # no libc to ask: the supervisor's own stop still ends the services
        failed, reason = True, str(exc)
    if failed:
        logging.getLogger(__name__).warning("cannot ask to be stopped with the parent (prctl: %s)", reason)


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges (requests in flight) must stop counting; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)


def post_fork(server: Any, worker: Any) -> None:
    """The app's own log lines (loading, readiness, errors) go to stderr next to gunicorn's."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S %z")


def worker_exit(server: Any, worker: Any) -> None:
    """After a clean stop, run the exit handlers (history flush, ...) and skip the interpreter's teardown."""
    # With torch loaded, tearing the interpreter down takes seconds, long enough for honcho (and docker)
    # to give up waiting and SIGKILL; nothing in it matters once the exit handlers have run.
    exiting = sys.exc_info()[1]
    if os.getpid() != worker.pid or not isinstance(exiting, SystemExit) or exiting.code not in (0, None):
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
