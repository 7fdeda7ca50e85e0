"""Bounded admission: at most `running` predictions at once and `waiting` more queued for a slot, per worker.

Past that a prediction is refused at once with 503 and Retry-After, never queued without bound; a queued one
waits in turn, at most ADMISSION_WAIT_PREDICTIONS typical predictions' time (at least 1 s), and only as long as
its deadline (counted from its arrival in the worker, or shortened by its caller's X-Expected-Timeout-Ms) allows.
Health, metrics and pages are not predictions: they never wait here, and the worker has threads to spare for them
(gunicorn_conf.threads).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

from flask import Flask, Response, current_app, g, request

from shared.config import Settings
from shared.errors import Overloaded
from shared.serving import observability
from shared.serving.api import EXPECTED_TIMEOUT_HEADER
from shared.serving.worker import ARRIVED_AT

_EXTENSION = "admission"  # this app's Admission, in app.extensions
PREDICTION_ENDPOINTS = ("gateway.predict", "member.predict", "oip.infer")


class Admission:
    """`running` slots handed out in arrival order; at most `waiting` predictions queue for one."""

    # The bound on a queued prediction's wait is never less than this: when predictions take milliseconds, a bound
    # of a few would turn scheduling jitter into 503s while a slot is about to come free.
    WAIT_FLOOR_S = 1.0

    def __init__(self, running: int, waiting: int, wait_predictions: float = 1.0):
        self.running, self.waiting = max(1, running), max(0, waiting)
        self.wait_predictions = wait_predictions  # typical predictions a queued one may wait; 0 = deadline only
        self._lock = threading.Lock()
        self._free = self.running
        self._queue: deque[threading.Event] = deque()  # FIFO: a freed slot goes to the oldest waiter, never barged
        self.admitted = 0  # running + waiting
        self.typical_s = 0.0  # a smoothed prediction time (0 until one finished): for Retry-After and deadlines

    def enter(self, deadline_at: float) -> None:
        """Take a slot, waiting (in turn) at most max_wait_s; Overloaded (503) at once when the queue is full."""
        with self._lock:
            if self.admitted >= self.running + self.waiting:
                raise Overloaded(f"Too busy: {self.running} predictions running and {self.waiting} waiting. "
                                 "Retry shortly.", retry_after=self.retry_after())
            self.admitted += 1
            if self._free and not self._queue:
                self._free -= 1
                return
            turn = threading.Event()
            self._queue.append(turn)
        if turn.wait(self.max_wait_s(deadline_at)):
            return
        with self._lock:
            if turn.is_set():  # handed a slot just as the wait ran out: it is ours
                return
            self._queue.remove(turn)
            self.admitted -= 1
        raise Overloaded("Too busy: no prediction slot came free in time (within a prediction's time, before the "
                         "request's deadline). Retry shortly.",
                         retry_after=self.retry_after(), code=Overloaded.IN_QUEUE)

    def max_wait_s(self, deadline_at: float) -> float:
        """How long a prediction may wait for a slot: `wait_predictions` typical predictions, at least WAIT_FLOOR_S
        (no typical time yet, or 0: no such bound), and never so long that it could not finish by deadline_at."""
        in_time = max(0.0, deadline_at - self.typical_s - time.monotonic())
        if not self.typical_s or not self.wait_predictions:
            return in_time
        return min(in_time, max(self.WAIT_FLOOR_S, self.wait_predictions * self.typical_s))

    def leave(self, seconds: float | None) -> None:
        """A prediction finished (`seconds`: how long it ran; None when it was no answer, e.g. a rejected input,
        which says nothing of how long a prediction takes): its slot goes straight to the oldest waiter, if any."""
        with self._lock:
            self.admitted -= 1
            if seconds is not None:
                self.typical_s = seconds if not self.typical_s else 0.9 * self.typical_s + 0.1 * seconds
            if self._queue:
                self._queue.popleft().set()
            else:
                self._free += 1

    def retry_after(self) -> int:
        """Whole seconds until a queue's worth of predictions has likely gone through (at least 1)."""
        return max(1, math.ceil(max(self.typical_s, 0.5) * (self.waiting + 1) / self.running))


def arrived_at() -> float:
    """time.monotonic() when this request reached the worker (now, outside gunicorn)."""
    return request.environ.get(ARRIVED_AT) or g.get("arrived_at_fallback") or time.monotonic()


def deadline_at() -> float:
    """When this request's deadline ends: GATEWAY_DEADLINE_S after its arrival, or sooner when its caller says it
    waits less (X-Expected-Timeout-Ms: the gateway sends its member timeout)."""
    settings: Settings = current_app.config["SETTINGS"]
    return arrived_at() + min(settings.deadline_s, caller_timeout_s(request.headers.get(EXPECTED_TIMEOUT_HEADER)))


def caller_timeout_s(header: str | None) -> float:
    """Seconds from X-Expected-Timeout-Ms; infinite when absent or not a positive number (then it is ignored)."""
    try:
        value = float(header) / 1000.0 if header else math.inf
    except ValueError:
        return math.inf
    return value if value > 0 and math.isfinite(value) else math.inf


def init_app(app: Flask, settings: Settings, running: int) -> Admission:
    """Admit predictions through an Admission of `running` slots (read back with current_admission)."""
    admission = Admission(running, settings.admission_queue, settings.admission_wait_predictions)
    app.extensions[_EXTENSION] = admission

    @app.before_request
    def _admit() -> None:
        g.arrived_at_fallback = time.monotonic()
        if request.method != "POST" or request.endpoint not in PREDICTION_ENDPOINTS:
            return
        # A restarted service gets requests from its socket's backlog before its model is loaded: they wait for
        # it (within their deadline) instead of being turned away.
        observability.current_health().wait_settled(deadline_at() - time.monotonic())
        try:
            admission.enter(deadline_at())
        except Overloaded:
            observability.ADMISSION_REJECTED.labels(current_app.config["SERVICE"]).inc()
            raise
        g.admitted_at = time.monotonic()

    @app.after_request
    def _note_answer(response: Response) -> Response:
        g.answered = response.status_code < 400
        return response

    @app.teardown_request
    def _release(_exc: BaseException | None) -> None:
        started = g.pop("admitted_at", None)
        if started is not None:
            admission.leave(time.monotonic() - started if g.pop("answered", False) else None)

    return admission


def current_admission() -> Admission:
    """The current app's Admission (its slots, queue and typical prediction time)."""
    return current_app.extensions[_EXTENSION]
