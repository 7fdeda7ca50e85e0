"""Prometheus metrics (multi-process safe), one JSON log line per request, liveness and readiness."""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes are counted in the metrics but not logged: they would drown the request log.
QUIET_ENDPOINTS = ("observability.live", "observability.ready", "observability.metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)

REQUESTS = Counter("classifier_requests_total", "HTTP requests handled, by endpoint and status",
                   ["service", "endpoint", "method", "status"])
LATENCY = Histogram("classifier_request_duration_seconds", "Time to answer an HTTP request",
                    ["service", "endpoint"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("classifier_requests_in_flight", "Requests being handled right now",
                  ["service"], multiprocess_mode="livesum")
BATCH_SIZE = Histogram("classifier_batch_size", "Images per forward pass (dynamic batching)",
                       ["service"], buckets=(1, 2, 4, 8, 16, 32, 64))
MEMBER_CALLS = Counter("classifier_member_calls_total", "Gateway calls to members, by outcome",
                       ["member", "outcome"])
MEMBER_LATENCY = Histogram("classifier_member_duration_seconds", "Gateway: time for a member to answer",
                           ["member"], buckets=LATENCY_BUCKETS)

REPLICA_CALLS = Counter("classifier_replica_calls_total", "Gateway: attempts on each member replica, by outcome",
                        ["member", "replica", "outcome"])
REPLICA_EJECTIONS = Counter("classifier_replica_ejections_total",
                            "Gateway: times a member replica was ejected (its breaker opened)", ["member", "replica"])
REPLICA_STATE = Gauge("classifier_replica_state", "Gateway: a replica's breaker, 0 closed, 1 half-open, 2 open "
                      "(the worst over workers)", ["member", "replica"], multiprocess_mode="max")
MEMBER_BREAKER_SKIPS = Counter("classifier_member_breaker_skips_total",
                               "Gateway: requests answered without a member because its breaker was open", ["member"])
ADMISSION_REJECTED = Counter("classifier_admission_rejected_total",
                             "Requests refused at once with 503 + Retry-After: too many in flight and waiting",
                             ["service"])
DEADLINE_REFUSED = Counter("classifier_deadline_refused_total",
                           "Gateway: requests refused before any fan-out, their deadline spent waiting", ["service"])
VERSION_REFUSALS = Counter("classifier_version_refusals_total",
                           "Requests refused because the model version they named is not loaded here", ["service"])
VERSION_SWITCHES = Counter("classifier_version_switches_total",
                           "Times a service began answering with another active model version", ["service"])
VERSION_ANSWERS = Counter("classifier_version_answers_total",
                          "Gateway: answers by model version and route (active, pinned, canary, shadow)",
                          ["version", "route"])

request_log = logging.getLogger("classifier.requests")
_EXTENSION = "health"  # this app's Health, in app.extensions
bp = Blueprint("observability", __name__)


class Health:
    """Readiness as flags: models loaded, one warm-up inference done, not draining; a load error is kept."""

    def __init__(self) -> None:
        self.loaded = False
        self.warmed_up = False
        self.draining = False
        self.error: str | None = None
        self._lock = threading.Lock()
        self._settled = threading.Event()  # warmed up, or failed: nothing more to wait for

    @property
    def ready(self) -> bool:
        return self.loaded and self.warmed_up and not self.draining

    def mark_loaded(self) -> None:
        with self._lock:
            self.loaded = True

    def mark_warmed_up(self) -> None:
        with self._lock:
            self.warmed_up = True
        self._settled.set()

    def mark_recovered(self) -> None:
        """A model serves after all (another version, after the first failed to load): ready, the error cleared."""
        with self._lock:
            self.loaded, self.warmed_up, self.error = True, True, None
        self._settled.set()

    def mark_failed(self, message: str) -> None:
        with self._lock:
            self.error = message
        self._settled.set()

    def wait_settled(self, timeout: float) -> bool:
        """Wait (at most timeout s) until the model is loaded and warm, or failed to load."""
        return self._settled.wait(max(0.0, timeout))

    def start_draining(self) -> None:
        with self._lock:
            self.draining = True

    def status(self) -> dict:
        """The readiness body: the flags, a reason when not ready."""
        body: dict[str, Any] = {"ready": self.ready, "loaded": self.loaded, "warmed_up": self.warmed_up,
                                "draining": self.draining}
        if self.error:
            body["error"] = self.error
        return body


def init_app(app: Flask, service: str, health: Health) -> None:
    """Health endpoints, /metrics, request ids, request metrics and the JSON request log for `service`."""
    app.extensions[_EXTENSION] = health
    app.config["SERVICE"] = service
    _configure_request_log()
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_leave_request)
    app.register_blueprint(bp)


def current_health() -> Health:
    """The current app's Health (its readiness flags)."""
    return current_app.extensions[_EXTENSION]


@bp.get("/v2/health/live")
def live() -> Response:
    """Liveness.
    ---
    get:
      summary: Liveness
      tags: [health]
      responses:
        "200": {description: The process is up}
    """
    return jsonify({"live": True, "service": current_app.config["SERVICE"]})


@bp.get("/v2/health/ready")
def ready() -> tuple[Response, int]:
    """Readiness: loaded, warmed up, not draining.
    ---
    get:
      summary: Readiness (loaded, warmed up, not draining)
      tags: [health]
      responses:
        "200": {description: Ready, content: {application/json: {schema: Health}}}
        "503": {description: Not ready, content: {application/json: {schema: Health}}}
    """
    health = current_health()
    body = {"service": current_app.config["SERVICE"], "pid": os.getpid(), **health.status()}
    return jsonify(body), 200 if health.ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every worker.
    ---
    get:
      summary: Prometheus metrics
      tags: [health]
      responses:
        "200": {description: Prometheus text format, content: {text/plain: {schema: {type: string}}}}
    """
    extra = current_app.extensions.get(_SCRAPE_COLLECTORS)
    body = generate_latest(metrics_registry()) + (generate_latest(extra) if extra is not None else b"")
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


_SCRAPE_COLLECTORS = "scrape_collectors"  # app.extensions: a registry of collectors computed per scrape


def add_scrape_collector(app: Flask, collector: Any) -> None:
    """Add a collector whose `collect()` runs during each /metrics request (in the app), after the counters:
    for figures computed from stored data (live quality, drift) rather than counted as requests pass."""
    registry = app.extensions.setdefault(_SCRAPE_COLLECTORS, CollectorRegistry(auto_describe=False))
    registry.register(collector)


def metrics_registry() -> CollectorRegistry:
    """Every worker's metrics summed when PROMETHEUS_MULTIPROC_DIR is set, else this process's own."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def request_id() -> str:
    """This request's id: the caller's X-Request-ID, or one generated for it."""
    return g.request_id


def add_log_fields(**fields: Any) -> None:
    """Add fields to this request's one log line."""
    g.log_fields.update(fields)


def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = _incoming_request_id()
    g.log_fields = {}
    IN_FLIGHT.labels(current_app.config["SERVICE"]).inc()
    g.in_flight = True


def _incoming_request_id() -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    # Bounded and printable, so a caller cannot inject lines into the log or a huge label.
    if given and len(given) <= 128 and given.isprintable():
        return given
    return uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    service = current_app.config["SERVICE"]
    endpoint = request.url_rule.endpoint if request.url_rule else "unmatched"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    REQUESTS.labels(service, endpoint, request.method, str(response.status_code)).inc()
    LATENCY.labels(service, endpoint).observe(elapsed)
    rid = g.get("request_id") or _incoming_request_id()
    response.headers[REQUEST_ID_HEADER] = rid
    line = {"ts": round(time.time(), 3), "service": service, "pid": os.getpid(), "request_id": rid,
            "method": request.method,
            "path": request.path, "status": response.status_code, "latency_ms": round(elapsed * 1000, 1),
            **g.get("log_fields", {})}
    request_log.log(logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO, json.dumps(line))
    return response


def _leave_request(_exc: BaseException | None) -> None:
    if g.pop("in_flight", False):
        IN_FLIGHT.labels(current_app.config["SERVICE"]).dec()


def _configure_request_log() -> None:
    # The log line is the JSON itself: no prefix, one line, on stderr (gunicorn and docker collect it).
    if request_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False
