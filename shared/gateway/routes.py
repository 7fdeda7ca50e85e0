"""The gateway's routes: fan the image out to the members, stack what answers, record it in the history."""
from __future__ import annotations

import logging
import time
from typing import Mapping

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from shared.config import Settings
from shared.errors import DeadlineExceeded, MembersUnavailable, NotFound
from shared.gateway.client import MemberAnswer, MemberClient, Outcome
from shared.gateway.runtime import GatewayRuntime
from shared.images import ImageLimits, probe_image, sha256_hex
from shared.members import GATEWAY
from shared.serving import api, observability

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Source"
SOURCES = ("api", "ui")
bp = Blueprint("gateway", __name__)


def init_app(app: Flask, settings: Settings) -> MemberClient:
    """Register the prediction and metadata routes, with a client for the members as app.extensions["members"]."""
    client = MemberClient.from_settings(settings)
    app.extensions["members"] = client
    app.register_blueprint(bp)
    return client


@bp.post("/")
@bp.post("/predict")
def predict() -> tuple[Response, int] | Response:
    """Stack the members' answers for one image; a bad input gets the member's own 4xx."""
    started = time.perf_counter()
    settings: Settings = current_app.config["SETTINGS"]
    runtime: GatewayRuntime = current_app.extensions["runtime"]
    data = api.read_image_bytes(request)
    probe_image(data, ImageLimits(settings.max_image_bytes, settings.max_image_pixels))
    classes = runtime.require_loaded().classes
    answers = current_app.extensions["members"].fan_out(data, _member_headers(), classes)
    _log_members(answers)
    rejected = [a for a in answers.values() if a.rejected]
    if rejected:  # the input is bad: the client gets the member's own 4xx and error body
        return jsonify(rejected[0].body), rejected[0].status
    answered = {name: a for name, a in answers.items() if a.ok}
    if not answered:
        raise _nobody_answered(answers)
    body = _stack_body(runtime, answers, answered, _ms_since(started))
    _record_history(data, body, answers)
    return jsonify(body)


@bp.get("/v2/models/<name>")
def model_metadata(name: str) -> Response:
    """The gateway's metadata; a member's name is a 404 pointing at that member."""
    if name != GATEWAY:
        raise NotFound(f"This service serves the model {GATEWAY!r}, not {name!r}; "
                       "ask each member at its own /v2/models/<name>.")
    return jsonify(current_app.extensions["runtime"].metadata())


def _member_headers() -> dict[str, str]:
    return {observability.REQUEST_ID_HEADER: observability.request_id(), "Content-Type": "application/octet-stream"}


def _stack_body(runtime: GatewayRuntime, answers: Mapping[str, MemberAnswer], answered: Mapping[str, MemberAnswer],
                latency_ms: float) -> dict:
    """The member response contract for the stacked probabilities, plus every member's outcome."""
    synthetic = any(a.body.get("synthetic_weights") for a in answered.values()) or runtime.synthetic
    proba = runtime.predict({name: a.body["probas"] for name, a in answered.items()})
    body = api.prediction_body(proba, runtime.require_loaded().classes, model=GATEWAY,
                               model_version=runtime.model_version, synthetic=synthetic)
    failed = {name: a.error for name, a in answers.items() if not a.ok}
    body.update(members={name: a.summary() for name, a in answers.items()}, degraded=bool(failed), failed=failed,
                latency_ms=round(latency_ms, 1), request_id=observability.request_id())
    observability.add_log_fields(label=body["label"], degraded=body["degraded"])
    return body


def _nobody_answered(answers: Mapping[str, MemberAnswer]) -> Exception:
    """504 if every member ran out of time, else 503; the message names each member's reason."""
    reasons = "; ".join(f"{name}: {a.error}" for name, a in answers.items())
    if all(a.outcome in (Outcome.TIMEOUT, Outcome.DEADLINE) for a in answers.values()):
        return DeadlineExceeded(f"No member answered in time ({reasons}).")
    return MembersUnavailable(f"No member could answer ({reasons}).")


def _log_members(answers: Mapping[str, MemberAnswer]) -> None:
    for name, a in answers.items():
        observability.MEMBER_CALLS.labels(name, a.outcome.value).inc()
        observability.MEMBER_LATENCY.labels(name).observe(a.latency_ms / 1000)
    observability.add_log_fields(
        members={name: {"outcome": a.outcome.value, "latency_ms": a.latency_ms} for name, a in answers.items()})


def _record_history(data: bytes, body: dict, answers: Mapping[str, MemberAnswer]) -> None:
    """Hand the prediction to the history store, which writes it in the background; never fails the request."""
    source = request.headers.get(SOURCE_HEADER, "api").lower()
    try:
        current_app.extensions["history"].record({
            "ts": time.time(), "request_id": body["request_id"], "sha256": sha256_hex(data),
            "size_bytes": len(data), "image": data, "class_id": body["class_id"][0], "label": body["label"],
            "proba": body["proba"], "members": {name: a.summary() for name, a in answers.items()},
            "latency_ms": body["latency_ms"], "degraded": body["degraded"],
            "synthetic_weights": bool(body.get("synthetic_weights")),
            "source": source if source in SOURCES else "api",
        })
    except Exception:  # noqa: BLE001 - history is a side channel; the client still gets its answer
        log.exception("could not record the prediction in the history")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
