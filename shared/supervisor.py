"""Supervisor: the local stack's process manager, circus (https://circus.readthedocs.io) in this process.

- circus owns each service's listening socket and hands it to gunicorn (`--bind fd://N`). A service that exits
  is respawned on the same socket: connections that arrive meanwhile wait in its backlog instead of being
  refused, so a restart drops nothing.
- Restarts are throttled by circus's flapping plugin (FLAPPING: so many exits within a window pause the service,
  then retry, a few times); a service it gives up on stops the stack with a line naming it.
- Stop (Ctrl-C, SIGTERM): the gateway first, then the members together, each with SIGTERM and a grace period
  longer than its drain plus its longest request, so the gateway's last fan-outs still find the members.
"""
from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from circus.arbiter import Arbiter
from circus.sockets import CircusSocket
from circus.watcher import Watcher
from tornado import gen

from shared.config import Settings
from shared.members import GATEWAY

# So many exits within the window pause a service for retry_in seconds; after max_retry pauses it is given up.
FLAPPING = {"attempts": 3, "window": 60, "retry_in": 10, "max_retry": 3}
# How long circus waits after SIGTERM before SIGKILL, beyond gunicorn's own graceful_timeout (gunicorn_conf.py).
STOP_MARGIN_S = 10


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    command: str  # with {fd}: the socket's file descriptor


def gunicorn_command(name: str) -> str:
    """gunicorn with services/<name>/gunicorn.conf.py in this interpreter, on the socket circus passes it."""
    return (f"{shlex.quote(sys.executable)} -m gunicorn -c services/{name}/gunicorn.conf.py "
            f"--bind fd://$(circus.sockets.{name})")


def stop_grace_s(settings: Settings) -> int:
    """Seconds between SIGTERM and SIGKILL: gunicorn's graceful_timeout (drain + 30 s) plus a margin."""
    return math.ceil(settings.drain_seconds) + 30 + STOP_MARGIN_S


class _ServiceWatcher(Watcher):
    """A circus watcher that says when its service starts and exits, with the pid and exit code."""

    def notify_event(self, topic, msg):  # noqa: ANN001 - circus's API
        if topic == "spawn":
            _say(f"{self.name} started (pid={msg.get('process_pid')})")
        elif topic == "reap":
            code = msg.get("exit_code")
            again = "" if self.is_stopping() or self.is_stopped() else "; restarting it on the same socket"
            _say(f"{self.name} exited (pid={msg.get('process_pid')}, rc={code}){again}")
        super().notify_event(topic, msg)


class _OrderedArbiter(Arbiter):
    """circus stops all watchers at once; here the highest priority (the gateway) stops first, then the rest."""

    @gen.coroutine
    def _stop_watchers(self, close_output_streams=False, watcher_iter_func=None):  # noqa: ANN001 - circus's API
        ranks = sorted({w.priority for w in self.watchers}, reverse=True)
        for rank in ranks:
            yield gen.multi([w._stop(close_output_streams) for w in self.watchers if w.priority == rank])

    def manage_watchers(self):  # noqa: ANN201 - circus's API
        # Its periodic check would otherwise collide with the (longer, ordered) stop and log a ConflictError.
        if self._stopping:
            return None
        return super().manage_watchers()


class Supervisor:
    """The four gunicorns under circus, run in the calling (main) thread until stopped."""

    def __init__(self, services: list[Service], env: dict[str, str], cwd: Path, settings: Settings):
        self.services = services
        self.exit_code = 0
        self.cause = ""
        self._stopping = threading.Event()
        self._rundir = tempfile.mkdtemp(prefix="classifier-circus-")
        grace = stop_grace_s(settings)
        watchers = [
            _ServiceWatcher(s.name, s.command, use_sockets=True, env=env, working_dir=str(cwd), copy_env=False,
                    graceful_timeout=grace, stop_signal=signal.SIGTERM, stop_children=False,
                    priority=10 if s.name == GATEWAY else 0, close_child_stdin=True)
            for s in services
        ]
        sockets = [CircusSocket(name=s.name, host=s.host, port=s.port) for s in services]
        endpoint = f"ipc://{self._rundir}/control"
        plugins = [{"use": "circus.plugins.flapping.Flapping", **{k: str(v) for k, v in FLAPPING.items()}}]
        self.arbiter = _OrderedArbiter(watchers, endpoint, f"ipc://{self._rundir}/events", check_delay=1.0,
                                       sockets=sockets, plugins=plugins, multicast_endpoint=None,
                                       proc_name="classifier-serve")

    def run(self, on_started: Callable[[], None] = lambda: None) -> int:
        """Start every service and supervise them until stop() or Ctrl-C; returns the exit code."""
        _quiet_circus()
        threading.Thread(target=self._watch_for_given_up, name="given-up", daemon=True).start()
        self.arbiter.start(cb=lambda _arbiter: on_started())
        return self.exit_code

    def stop(self, code: int = 0, cause: str = "") -> None:
        """Stop the stack (from any thread): the gateway first, then the members."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.exit_code, self.cause = code, cause
        if self.arbiter.loop is not None:  # None only before run(): nothing to stop yet
            self.arbiter.loop.add_callback(self.arbiter.stop)

    def pids(self) -> dict[str, list[int]]:
        """{service: pids of its gunicorn master} now (for tests and the chaos suite)."""
        return {w.name: sorted(w.processes) for w in self.arbiter.watchers if w.name in self.names}

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.services}

    def _watch_for_given_up(self) -> None:
        """A service stopped for longer than a flapping pause was given up on: stop all, naming it."""
        stopped_since: dict[str, float] = {}
        patience = FLAPPING["retry_in"] + 5
        while not self._stopping.wait(1.0):
            if self.arbiter._stopping:  # Ctrl-C or SIGTERM to serve: circus is stopping everything
                return
            now = time.monotonic()
            for watcher in list(self.arbiter.watchers):
                if watcher.name not in self.names:
                    continue
                if watcher.is_stopped():
                    since = stopped_since.setdefault(watcher.name, now)
                    if now - since > patience:
                        self.stop(1, f"{watcher.name} kept exiting ({FLAPPING['attempts']} exits within "
                                     f"{FLAPPING['window']} s, {FLAPPING['max_retry']} times); its log lines above "
                                     "say why")
                        return
                else:
                    stopped_since.pop(watcher.name, None)


def _say(message: str) -> None:
    print(f"[serve] {message}", flush=True)


def _quiet_circus() -> None:
    """circus's own warnings on stderr, prefixed; its routine lines repeat ours (_ServiceWatcher), so they are off."""
    log = logging.getLogger("circus")
    if not any(getattr(h, "_classifier", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[serve] circus: %(message)s"))
        handler._classifier = True  # type: ignore[attr-defined]
        log.handlers = [handler]
        log.propagate = False
    log.setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
