"""Bounded admission: at most `running` predictions at once and `waiting` more queued for a slot, per worker.

Past that a prediction is refused at once with 503 and Retry-After, never queued without bound; a queued one
waits only as long as its deadline (counted from its arrival in the worker) allows. Health, metrics and pages are
not predictions: they never wait here, and the worker has threads to spare for them (gunicorn_conf.threads).
"""
from __future__ import annotations

import math
import threading
import time

from flask import Flask, current_app, g, request

from shared.config import Settings
from shared.errors import Overloaded
from shared.serving import observability
from shared.serving.worker import ARRIVED_AT

PREDICTION_ENDPOINTS = ("gateway.predict", "member.predict", "oip.infer")


class Admission:
    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = max(1, running), max(0, waiting)
        self._slots = threading.BoundedSemaphore(self.running)
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting
        self.typical_s = 0.0  # a smoothed prediction time (0 until one finished): for Retry-After and deadlines

    def enter(self, deadline_at: float) -> None:
        """Take a slot, waiting at most until deadline_at; Overloaded (503) at once when the queue is full."""
        with self._lock:
            if self.admitted >= self.running + self.waiting:
                raise Overloaded(f"Too busy: {self.running} predictions running and {self.waiting} waiting. "
                                 "Retry shortly.", retry_after=self.retry_after())
            self.admitted += 1
        # Wait only while a prediction started then could still finish in time: else refuse now, not at the end.
        if not self._slots.acquire(timeout=max(0.0, deadline_at - self.typical_s - time.monotonic())):
            with self._lock:
                self.admitted -= 1
            raise Overloaded("Too busy: no prediction slot came free before the request's deadline. Retry shortly.",
                             retry_after=self.retry_after(), code="deadline_in_queue")

    def leave(self, seconds: float) -> None:
        self._slots.release()
        with self._lock:
            self.admitted -= 1
            self.typical_s = seconds if not self.typical_s else 0.9 * self.typical_s + 0.1 * seconds

    def retry_after(self) -> int:
        """Whole seconds until a queue's worth of predictions has likely gone through (at least 1)."""
        return max(1, math.ceil(max(self.typical_s, 0.5) * (self.waiting + 1) / self.running))


def arrived_at() -> float:
    """time.monotonic() when this request reached the worker (now, outside gunicorn)."""
    return request.environ.get(ARRIVED_AT) or g.get("arrived_at_fallback") or time.monotonic()


def deadline_at() -> float:
    """When this request's deadline ends: GATEWAY_DEADLINE_S after its arrival."""
    settings: Settings = current_app.config["SETTINGS"]
    return arrived_at() + settings.deadline_s


def init_app(app: Flask, settings: Settings) -> Admission:
    admission = Admission(settings.threads, settings.admission_queue)
    app.extensions["admission"] = admission

    @app.before_request
    def _admit() -> None:
        g.arrived_at_fallback = time.monotonic()
        if request.method != "POST" or request.endpoint not in PREDICTION_ENDPOINTS:
            return
        # A restarted service gets requests from its socket's backlog before its model is loaded: they wait for
        # it (within their deadline) instead of being turned away.
        current_app.extensions["health"].wait_settled(deadline_at() - time.monotonic())
        try:
            admission.enter(deadline_at())
        except Overloaded:
            observability.ADMISSION_REJECTED.labels(current_app.config["SERVICE"]).inc()
            raise
        g.admitted_at = time.monotonic()

    @app.teardown_request
    def _release(_exc: BaseException | None) -> None:
        started = g.pop("admitted_at", None)
        if started is not None:
            admission.leave(time.monotonic() - started)

    return admission
