"""Supervisor: the local stack's process manager, circus (https://circus.readthedocs.io) in this process.

- circus owns each service's listening socket and hands it to gunicorn (`--bind fd://N`), to that service only:
  the sockets are not inheritable, and a service's process is started with its own made inheritable for just that
  spawn, so "who listens on 5001?" names clip_svm's master and workers and this process, no other service.
  A service that exits is respawned on the same socket: connections that arrive meanwhile wait in its backlog
  instead of being refused, so a restart drops nothing.
- Restarts are throttled by circus's flapping plugin (FLAPPING: so many exits within a window pause the service
  before the next try); a service that exits GIVE_UP times within its window stops the stack, with a line naming
  it and its last exit code, rather than crash-looping unseen.
- Stop (Ctrl-C, SIGTERM): the gateway first, then the members together, each with SIGTERM and a grace period
  longer than its drain plus its longest request, so the gateway's last fan-outs still find the members.
  As each is told to stop, this process closes its copy of the service's socket: the service's own processes still
  hold it and answer what they accept during their drain, and once they let it go the port refuses new
  connections (a clean connect error, safe to retry elsewhere) instead of queuing them for a reset at exit.
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
from circus.exc import ConflictError
from circus.process import Process
from circus.sockets import CircusSocket
from circus.watcher import Watcher
from tornado import gen

from shared.config import Settings
from shared.members import GATEWAY

# So many exits within the window pause a service for retry_in seconds before it is started again.
FLAPPING = {"attempts": 3, "window": 60, "retry_in": 10, "max_retry": -1}
# So many exits within window_s and the stack is stopped: the service cannot be kept up.
GIVE_UP = {"exits": 8, "window_s": 300}
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


class _OwnSocketProcess(Process):
    """A service's process that inherits its own service's socket only (circus passes every socket it has)."""

    def spawn(self):  # noqa: ANN201 - circus's API
        own = (self.watcher.sockets or {}).get(self.name) if self.watcher is not None else None
        if own is None:
            return super().spawn()
        own.set_inheritable(True)  # circus spawns from its one loop thread, so no other child sees it meanwhile
        try:
            return super().spawn()
        finally:
            own.set_inheritable(False)


class _ServiceWatcher(Watcher):
    """A circus watcher that says when its service starts and exits, with the pid and exit code; its processes
    inherit only its own socket."""

    @property
    def _process_class(self):  # noqa: ANN202 - circus's API
        return _OwnSocketProcess

    on_exit: Callable[[str, int | None], None] = staticmethod(lambda name, code: None)

    def notify_event(self, topic, msg):  # noqa: ANN001 - circus's API
        if topic == "spawn":
            _say(f"{self.name} started (pid={msg.get('process_pid')})")
        elif topic == "reap":
            code = msg.get("exit_code")
            unexpected = not (self.is_stopping() or self.is_stopped())
            again = "; restarting it on the same socket" if unexpected else ""
            _say(f"{self.name} exited (pid={msg.get('process_pid')}, rc={code}){again}")
            if unexpected:
                self.on_exit(self.name, code)
        super().notify_event(topic, msg)


class _OrderedArbiter(Arbiter):
    """circus stops all watchers at once; here the highest priority (the gateway) stops first, then the rest."""

    @gen.coroutine
    def _stop_watchers(self, close_output_streams=False, watcher_iter_func=None):  # noqa: ANN001 - circus's API
        ranks = sorted({w.priority for w in self.watchers}, reverse=True)
        for rank in ranks:
            stopping = [w for w in self.watchers if w.priority == rank]
            if self._stopping:  # for good: the port refuses once the service's own processes let it go
                for watcher in stopping:
                    self._close_socket(watcher.name)
            yield gen.multi([w._stop(close_output_streams) for w in stopping])

    def _close_socket(self, name: str) -> None:
        """Close this process's copy of a service's socket (its processes keep theirs until they stop accepting)."""
        sock = self.sockets.get(name)
        if sock is not None:
            sock.close()

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
        for watcher in watchers:
            watcher.on_exit = self._exited
        self._exits: dict[str, list[float]] = {}
        sockets = [CircusSocket(name=s.name, host=s.host, port=s.port) for s in services]
        for sock in sockets:
            sock.set_inheritable(False)  # circus makes each one inheritable by every child; see _OwnSocketProcess
        endpoint = f"ipc://{self._rundir}/control"
        plugins = [{"use": "circus.plugins.flapping.Flapping", **{k: str(v) for k, v in FLAPPING.items()}}]
        self.arbiter = _OrderedArbiter(watchers, endpoint, f"ipc://{self._rundir}/events", check_delay=1.0,
                                       sockets=sockets, plugins=plugins, multicast_endpoint=None,
                                       proc_name="classifier-serve")

    def run(self, on_started: Callable[[], None] = lambda: None) -> int:
        """Start every service and supervise them until stop() or Ctrl-C; returns the exit code."""
        _quiet_circus()
        self.arbiter.start(cb=lambda _arbiter: on_started())
        return self.exit_code

    def stop(self, code: int = 0, cause: str = "") -> None:
        """Stop the stack (from any thread): the gateway first, then the members."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.exit_code, self.cause = code, cause
        if self.arbiter.loop is not None:  # None only before run(): nothing to stop yet
            self.arbiter.loop.add_callback(self._stop_arbiter)

    @gen.coroutine
    def _stop_arbiter(self):  # noqa: ANN202 - a tornado coroutine
        """arbiter.stop(), once circus's own periodic check (which refuses a concurrent command) is done."""
        while True:
            try:
                yield self.arbiter.stop()
                return
            except ConflictError:
                yield gen.sleep(0.2)

    def pids(self) -> dict[str, list[int]]:
        """{service: pids of its gunicorn master} now (for tests and the chaos suite)."""
        return {w.name: sorted(w.processes) for w in self.arbiter.watchers if w.name in self.names}

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.services}

    def _exited(self, name: str, code: int | None) -> None:
        """An unexpected exit (circus restarts it); too many within the window stop the stack, naming it."""
        now = time.monotonic()
        recent = [t for t in self._exits.get(name, []) if now - t <= GIVE_UP["window_s"]] + [now]
        self._exits[name] = recent
        if len(recent) >= GIVE_UP["exits"]:
            self.stop(1, f"{name} exited {len(recent)} times within {GIVE_UP['window_s']} s (last exit code {code}); "
                         "its log lines above say why")


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
