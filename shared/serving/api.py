"""The HTTP contract every service shares: reading the image body, the prediction body, errors as JSON."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
from flask import Flask, Request, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.config import Settings
from shared.errors import BadRequest, ClassifierError, PayloadTooLarge

log = logging.getLogger(__name__)

FILE_FIELD = "file"
# Gateway -> member: how long (ms) the member may hold the request for batch company; member -> gateway: how
# long it did.
SLACK_HEADER = "X-Batch-Slack-Ms"
BATCH_WAIT_HEADER = "X-Batch-Wait-Ms"
# Caller -> service: how long (ms) the caller will wait for this answer (Envoy's x-envoy-expected-rq-timeout-ms).
# The service's own deadline shrinks to it, so it never queues work its caller has given up on.
EXPECTED_TIMEOUT_HEADER = "X-Expected-Timeout-Ms"
# Caller -> service: answer with this model version or refuse (409); the gateway names it on every member call.
# Service -> caller: the version that answered.
MODEL_VERSION_HEADER = "X-Model-Version"


def settings_from_config(config: Mapping[str, Any] | None) -> Settings:
    """Settings from the environment; a config dict overrides any field by its upper-case name (or "SETTINGS")."""
    config = dict(config or {})
    base = config.get("SETTINGS") or Settings.from_env()
    names = {name.upper(): name for name in Settings.env_names()}
    return base.replace(**{names[key]: value for key, value in config.items() if key in names})


def requested_version(request: Request) -> str | None:
    """The version the request pins in X-Model-Version, or None (the active one answers)."""
    value = (request.headers.get(MODEL_VERSION_HEADER) or "").strip()
    if not value:
        return None
    if len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        raise BadRequest(f"{MODEL_VERSION_HEADER} must be a model version (letters, digits, - _ .); got {value[:40]!r}")
    return value


def read_image_bytes(request: Request) -> bytes:
    """The image: the raw body whatever its Content-Type, or the `file` field of a multipart form."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get(FILE_FIELD)
        if upload is None:
            fields = sorted(set(request.files) | set(request.form)) or ["none"]
            raise BadRequest(
                f"A multipart body needs the image in a field named {FILE_FIELD!r}; got fields: {', '.join(fields)}.",
                code="missing_file_field",
            )
        return upload.read()
    # parse_form_data=False: a urlencoded Content-Type must not swallow the bytes into request.form
    data = request.get_data(cache=False, parse_form_data=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        # A chunked body is cut at the limit without an error: reaching it means it was (at least) that big.
        raise PayloadTooLarge(f"The chunked body reached the limit of {limit} bytes; send a smaller image.")
    return data


def prediction_body(proba: Sequence[float], classes: Sequence[str], *, model: str, model_version: str,
                    weights: Mapping[str, str] | None = None) -> dict:
    """The response contract: seed's class_id + proba, then label, every class by name, model and version.

    `weights`: {part: "real"|"synthetic"} of the weights behind this answer; `synthetic_weights: true` appears
    only when one of them is synthetic.
    """
    proba = np.asarray(proba, dtype=float)
    k = int(np.argmax(proba))
    body = {
        "class_id": [k],
        "proba": float(proba[k]),
        "label": classes[k],
        "probas": {label: float(p) for label, p in zip(classes, proba)},
        "model": model,
        "model_version": model_version,
    }
    if weights is not None:
        body["weights"] = dict(weights)
    if "synthetic" in (weights or {}).values():
        body["synthetic_weights"] = True
    return body


# A body over the limit is still read and thrown away, up to these bounds, before the 413 is sent (a lingering
# close, as nginx does): a client that sends it all before reading (urllib) would otherwise get a reset.
LINGER_MAX_BYTES, LINGER_MAX_S = 256 * 1024 * 1024, 10.0


def error_response(error: ClassifierError) -> tuple[Response, int]:
    if error.status == 413:
        _discard_rest_of_body()
    response = jsonify(error_body(error.to_dict()))
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    response.headers.update(getattr(error, "headers", {}))
    return response, error.status


def _discard_rest_of_body() -> None:
    """Read what is left of the request body (bounded in bytes and time), then close the connection."""
    import time

    from flask import has_request_context, request

    from shared.serving.worker import CLOSE_CONNECTION

    if not has_request_context():
        return
    request.environ[CLOSE_CONNECTION] = True
    stream, left = request.environ.get("wsgi.input"), request.content_length
    if stream is None or not left:
        return
    deadline, read = time.monotonic() + LINGER_MAX_S, 0
    try:
        while read < min(left, LINGER_MAX_BYTES) and time.monotonic() < deadline:
            chunk = stream.read(min(1024 * 1024, left - read))
            if not chunk:
                return
            read += len(chunk)
    except OSError:  # the client went away: nothing left to answer
        return


def error_body(body: dict) -> dict:
    """The error body; on the Open Inference Protocol's routes its flat `{"error": "<message>"}`."""
    from flask import has_request_context, request

    error = body.get("error")
    if has_request_context() and request.blueprint == "oip" and isinstance(error, dict):
        return {"error": error.get("message", "")}
    return body


def install_error_handlers(app: Flask) -> None:
    """The one place errors become HTTP: typed errors keep their status, everything else is a JSON 500."""
    app.register_error_handler(ClassifierError, error_response)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def _too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
    from flask import request

    limit = request.max_content_length
    size = request.content_length
    received = f"The body is {size} bytes" if size is not None else "The body is larger than the limit"
    return error_response(PayloadTooLarge(f"{received}; the limit is {limit} bytes. Send a smaller image."))


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "http_error").lower().replace(" ", "_")
    response = jsonify(error_body({"error": {"code": code, "message": exc.description}}))
    response.status_code = exc.code or 500
    for name, value in exc.get_headers():  # e.g. Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unexpected error while handling the request")
    return error_response(ClassifierError(f"Internal error ({type(exc).__name__}); see the service log."))
