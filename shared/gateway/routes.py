"""The gateway's routes: fan the image out to the members, stack what answers, record it in the history."""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Mapping

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from shared.config import Settings
from shared.errors import ClassifierError, DeadlineExceeded, MembersUnavailable, Overloaded, VersionNotLoaded
from shared.gateway.cache import current_cache, mark as cache_mark
from shared.gateway.client import MemberAnswer, Outcome, current_member_client
from shared.gateway.runtime import GatewayRuntime, LoadedStack
from shared.gateway.shadow import current_shadow
from shared.images import ImageLimits, probe_image, sha256_hex
from shared.members import GATEWAY
from shared.history import current_history
from shared.serving import admission, api, observability
from shared.serving.runtime import current_runtime
from shared.weights import combine_parts

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Source"
ANSWER_MARGIN_S = 0.25
SOURCES = ("api", "ui")
bp = Blueprint("gateway", __name__)


def init_app(app: Flask) -> None:
    """Register the prediction routes (the members' client is client.init_app's)."""
    app.register_blueprint(bp)


@bp.post("/")
@bp.post("/predict")
def predict() -> Response:
    """Stack the members' answers for one image; a bad input gets the member's own 4xx.
    ---
    post:
      summary: Classify one image (raw bytes or multipart `file`)
      tags: [predict]
      requestBody: Image
      responses:
        "200":
          description: The prediction
          content: {application/json: {schema: Prediction}}
          headers:
            X-Cache:
              description: hit or miss, when the response cache is on (CACHE_MAX_ENTRIES)
              schema: {type: string, enum: [hit, miss]}
        "400": BadInput
        "413": TooLarge
        "415": NotAnImage
        "422": Rejected
        "503": NotReady
        "504": TimedOut
    """
    return jsonify(classify(api.read_image_bytes(request)))


class MemberRejected(ClassifierError):
    """A member refused the input (4xx): the client gets that member's own status and error body."""

    def __init__(self, answer: MemberAnswer):
        super().__init__(str(answer.error), status=answer.status)
        self.body = answer.body

    def to_dict(self) -> dict:
        return self.body


def classify(data: bytes, version: str | None = None) -> dict:
    """One image's bytes -> the stacked prediction body (the raw POST's and the inference protocol's one path).

    One model version answers the whole request: the pinned one (`version`, else X-Model-Version), else the canary
    for the clients in its share, else the active one. Every member is asked for that version, and only answers
    of it are stacked, by that version's meta-models."""
    started = time.perf_counter()
    settings: Settings = current_app.config["SETTINGS"]
    runtime = current_runtime(GatewayRuntime)
    probe_image(data, ImageLimits(settings.max_image_bytes, settings.max_image_pixels))
    version, route, stack = choose_version(runtime, version or api.requested_version(request))
    sha, cache = sha256_hex(data), current_cache()
    hit = cache.get(sha, version)
    if hit is not None:  # the stored answer as it was; the history still records this request, as a hit
        cache_mark("hit")
        _record_history(stack, data, sha, {**hit, "request_id": observability.request_id(),
                                           "latency_ms": _ms_since(started)}, cached=True)
        return hit
    if cache.enabled:
        cache_mark("miss")
    deadline_at = _deadline_or_refuse()
    # The members get the deadline less a margin for stacking, recording and sending the answer.
    answers = current_member_client().fan_out(data, _member_headers(), stack.classes,
                                             deadline_at - ANSWER_MARGIN_S, version=version)
    if _all_refused_the_version(answers):
        if route == PINNED:
            raise VersionNotLoaded(f"No member holds version {version} loaded (it is being loaded or dropped).")
        # This worker has not seen serving.json change yet (members dropped the version): ask again with what the
        # ensemble answers with now.
        runtime.sync()
        version, route, stack = choose_version(runtime, None)
        answers = current_member_client().fan_out(data, _member_headers(), stack.classes,
                                                 deadline_at - ANSWER_MARGIN_S, version=version)
    _log_members(answers)
    rejected = [a for a in answers.values() if a.rejected]
    if rejected:  # the input is bad: the client gets the member's own 4xx and error body
        raise MemberRejected(rejected[0])
    answered = {name: a for name, a in answers.items() if a.ok}
    if not answered:
        raise _nobody_answered(answers)
    body = _stack_body(stack, answers, answered, _ms_since(started))
    if route == CANARY:
        body["canary"] = True
    observability.VERSION_ANSWERS.labels(version, route).inc()
    cache.put(sha, version, body)
    _record_history(stack, data, sha, body)
    if route == ACTIVE:  # a copy for the shadow version, if any, after the live answer is made; never waited for
        current_shadow().offer(data, body, {**_member_headers(), observability.REQUEST_ID_HEADER:
                                            f"{observability.request_id()}.shadow"})
    return body


ACTIVE, PINNED, CANARY = "active", "pinned", "canary"
CLIENT_HEADER = "X-Client-Id"


def choose_version(runtime: GatewayRuntime, pinned: str | None) -> tuple[str, str, LoadedStack]:
    """(version, how it was chosen, its stack): pinned, else the canary when this client falls in its share and
    every member holds it, else the active one."""
    if pinned is not None:
        return pinned, PINNED, runtime.require_stack(pinned)
    runtime.require_loaded()
    canary = runtime.serving.canary
    if canary is not None and canary.version in runtime.candidates_ready and \
            _bucket(_client_key(), canary.version) < canary.percent:
        version, stack = runtime.model_for(canary.version)
        return version, CANARY, stack
    version, stack = runtime.model_for(None)
    return version, ACTIVE, stack


def _all_refused_the_version(answers: Mapping[str, MemberAnswer]) -> bool:
    return all(a.outcome == Outcome.WRONG_VERSION for a in answers.values())


def _client_key() -> str:
    """Who the canary sticks to: the API key, else the caller's X-Client-Id, else its address."""
    from shared.serving.auth import caller_id

    caller = caller_id()
    if caller != "anonymous":
        return caller
    return request.headers.get(CLIENT_HEADER) or request.remote_addr or ""


def _bucket(client: str, version: str) -> float:
    """A stable number in [0, 100) per client and candidate: the same client always gets the same answer."""
    digest = hashlib.sha256(f"{version}:{client}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100.0


def _deadline_or_refuse() -> float:
    """The deadline (from the request's arrival); refused before any fan-out when what is left of it is less
    than a typical prediction takes: it would only come back late, after using the members."""
    deadline_at = admission.deadline_at()
    remaining = deadline_at - time.monotonic()
    typical = admission.current_admission().typical_s
    if remaining < max(typical, 0.05):
        observability.DEADLINE_REFUSED.labels(GATEWAY).inc()
        raise Overloaded(f"Refused before asking the members: {remaining:.2f} s of the "
                         f"{current_app.config['SETTINGS'].deadline_s:g} s deadline were left after queueing, and a "
                         f"prediction takes about {typical:.2f} s. Retry shortly.", code=Overloaded.IN_QUEUE)
    return deadline_at


def _member_headers() -> dict[str, str]:
    return {observability.REQUEST_ID_HEADER: observability.request_id(), "Content-Type": "application/octet-stream"}


def _stack_body(stack: LoadedStack, answers: Mapping[str, MemberAnswer], answered: Mapping[str, MemberAnswer],
                latency_ms: float) -> dict:
    """The member response contract for the stacked probabilities, plus every member's outcome."""
    parts = {name: _member_weights(stack, name, a) for name, a in answered.items()}
    proba = stack.combine({name: a.body["probas"] for name, a in answered.items()})
    body = api.prediction_body(proba, stack.classes, model=GATEWAY,
                               model_version=stack.model_version, weights=combine_parts(parts.values()))
    failed = {name: a.error for name, a in answers.items() if not a.ok}
    members = {name: a.summary() for name, a in answers.items()}
    for name, member_parts in parts.items():
        members[name]["weights"] = member_parts
    body.update(members=members, degraded=bool(failed), failed=failed,
                latency_ms=round(latency_ms, 1), request_id=observability.request_id())
    observability.add_log_fields(label=body["label"], degraded=body["degraded"])
    return body


def _member_weights(stack: LoadedStack, name: str, answer: MemberAnswer) -> dict[str, str]:
    """The parts behind one member's answer: as its body says, else as the manifest records them."""
    own = answer.body.get("weights")
    return dict(own) if isinstance(own, dict) else stack.member_weights(name)


def _nobody_answered(answers: Mapping[str, MemberAnswer]) -> Exception:
    """504 if every member ran out of time, 503 + Retry-After if every one was full, else 503; the message names
    each member's reason."""
    reasons = "; ".join(f"{name}: {a.error}" for name, a in answers.items())
    if all(a.outcome in (Outcome.TIMEOUT, Outcome.DEADLINE) for a in answers.values()):
        return DeadlineExceeded(f"No member answered in time ({reasons}).")
    if all(a.outcome == Outcome.OVERLOADED for a in answers.values()):
        return Overloaded(f"Every member is too busy ({reasons}). Retry shortly.",
                          retry_after=max(a.retry_after or 1 for a in answers.values()))
    return MembersUnavailable(f"No member could answer ({reasons}).")


def _log_members(answers: Mapping[str, MemberAnswer]) -> None:
    for name, a in answers.items():
        observability.MEMBER_CALLS.labels(name, a.outcome.value).inc()
        observability.MEMBER_LATENCY.labels(name).observe(a.latency_ms / 1000)
    observability.add_log_fields(
        members={name: {"outcome": a.outcome.value, "latency_ms": a.latency_ms} for name, a in answers.items()})


def _record_history(stack: LoadedStack, data: bytes, sha: str, body: dict, cached: bool = False) -> None:
    """Hand the prediction to the history store, which writes it in the background; never fails the request."""
    source = request.headers.get(SOURCE_HEADER, "api").lower()
    try:
        current_history().record({
            "ts": time.time(), "request_id": body["request_id"], "sha256": sha,
            "size_bytes": len(data), "image": data, "class_id": body["class_id"][0], "label": body["label"],
            "proba": body["proba"], "probas": body["probas"], "members": body["members"],
            "model_version": body["model_version"], "in_training": stack.seen_in_training(sha),
            "latency_ms": body["latency_ms"], "degraded": body["degraded"],
            "synthetic_weights": bool(body.get("synthetic_weights")), "weights": body.get("weights", {}),
            "source": source if source in SOURCES else "api", "cached": cached,
        })
    except Exception:  # noqa: BLE001 - history is a side channel; the client still gets its answer
        log.exception("could not record the prediction in the history")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
