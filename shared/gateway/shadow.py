"""Shadow traffic: a copy of a share of the live requests goes to a candidate version, off the response path.

The live answer is made first and never waits for, or fails with, the shadow: `offer` only queues the copy (a full
queue drops it, counted). A small pool of threads asks every member for the candidate version, through a member
client of its own, and stacks the answers with its meta-models; what it answered is recorded apart (the history's
shadow_answers), beside the live answer's label, for `GET /v1/versions/compare`.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

from flask import Flask, current_app
from prometheus_client import Counter

from shared.config import Settings
from shared.gateway.client import MemberClient
from shared.gateway.runtime import GatewayRuntime
from shared.serving import auth, observability

log = logging.getLogger(__name__)

_EXTENSION = "shadow"
SHADOW_CALLS = Counter("classifier_shadow_requests", "Copies of live requests for the shadow version, by outcome",
                       ["outcome"])  # answered | failed | dropped


class ShadowSender:
    """Queues copies for the shadow version and answers them on its own threads."""

    def __init__(self, runtime: GatewayRuntime, client: MemberClient, settings: Settings, record):
        self.runtime, self.client, self.record = runtime, client, record
        self.deadline_s = settings.deadline_s
        self.pool = ThreadPoolExecutor(max_workers=max(1, settings.shadow_workers), thread_name_prefix="shadow")
        self.room = threading.BoundedSemaphore(max(1, settings.shadow_queue))

    def offer(self, data: bytes, live: Mapping, headers: Mapping[str, str]) -> bool:
        """Queue a copy of this request for the shadow version when there is one and this request is in its
        share; never blocks. True when queued."""
        shadow = self.runtime.serving.shadow
        if shadow is None or random.random() * 100.0 >= shadow.percent:
            return False
        if shadow.version not in self.runtime.candidates_ready or shadow.version == live.get("model_version"):
            return False
        if not self.room.acquire(blocking=False):
            SHADOW_CALLS.labels("dropped").inc()
            return False
        self.pool.submit(self._answer, shadow.version, data, dict(live), dict(headers))
        return True

    def _answer(self, version: str, data: bytes, live: dict, headers: dict) -> None:
        started = time.perf_counter()
        try:
            stack = self.runtime.require_stack(version)
            answers = self.client.fan_out(data, headers, stack.classes, time.monotonic() + self.deadline_s,
                                          version=version)
            answered = {name: a.body["probas"] for name, a in answers.items() if a.ok}
            if not answered:
                SHADOW_CALLS.labels("failed").inc()
                return
            proba = stack.combine(answered)
            k = int(proba.argmax())
            self.record({"ts": time.time(), "request_id": live.get("request_id"), "model_version": version,
                         "live_version": live.get("model_version"), "class_id": k, "label": stack.classes[k],
                         "proba": float(proba[k]), "probas": dict(zip(stack.classes, map(float, proba))),
                         "live_label": live.get("label"), "degraded": len(answered) < len(answers),
                         "latency_ms": round((time.perf_counter() - started) * 1000, 1)})
            SHADOW_CALLS.labels("answered").inc()
            observability.VERSION_ANSWERS.labels(version, "shadow").inc()
        except Exception:  # noqa: BLE001 - the shadow never affects the live path; it is counted and logged
            SHADOW_CALLS.labels("failed").inc()
            log.exception("shadow request for version %s failed", version)
        finally:
            self.room.release()


def init_app(app: Flask, runtime: GatewayRuntime, record) -> ShadowSender:
    """The shadow's sender, with a member client of its own: its own threads and connections, and its own breaker
    state, so a slow shadow version neither queues live calls nor ejects the replicas they need."""
    settings = app.config["SETTINGS"]
    client = MemberClient.from_settings(settings.replace(threads=settings.shadow_workers))
    client.session.headers.update(auth.outgoing_headers(settings))
    sender = ShadowSender(runtime, client, settings, record)
    app.extensions[_EXTENSION] = sender
    return sender


def current_shadow() -> ShadowSender:
    return current_app.extensions[_EXTENSION]
