"""Open Inference Protocol v2 REST routes of every service: a thin layer over the raw POST's prediction path.

`GET /v2`, `GET /v2/models/<name>`, `GET /v2/models/<name>/ready`, `POST /v2/models/<name>/infer`. Each image of
an infer request goes through the service's `classify(bytes) -> prediction body` (the same function as `POST /`),
concurrently, so a batch of N shares the member's dynamic batcher. Errors are OIP's `{"error": "..."}`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

import shared
from shared.errors import NotFound, NotReady
from shared.serving import observability, oip_codec
from shared.serving.oip_codec import Tensor
from shared.serving.runtime import ModelRuntime, current_runtime
from shared.serving.versions import VersionedRuntime

BLUEPRINT = "oip"
# The prediction body's fields that become output tensors; every other field goes to the response's parameters.
OUTPUT_FIELDS = ("class_id", "proba", "label", "probas", "model", "model_version")
OUTPUTS = ("probas", "class_id", "label")
EXTENSIONS = ["binary_tensor_data"]
BODY_LIMIT_FACTOR = 2
_CLASSIFY = "classify"  # the service's classify(bytes), in app.extensions

bp = Blueprint(BLUEPRINT, __name__)
Classify = Callable[..., dict]  # (image bytes, version=None) -> the raw path's prediction body


def init_app(app: Flask, classify: Classify) -> None:
    """Serve the protocol; `classify` turns one image's bytes into the raw path's prediction body."""
    app.extensions[_CLASSIFY] = classify
    app.register_blueprint(bp)


def is_oip_request() -> bool:
    """The request is one of this protocol's routes (its errors are `{"error": "..."}`)."""
    return request.blueprint == BLUEPRINT


@bp.get("/v2")
@bp.get("/v2/")
def server_metadata() -> Response:
    """The inference protocol's server metadata.
    ---
    get:
      summary: Server metadata (Open Inference Protocol)
      tags: [inference protocol]
      responses:
        "200": {description: Metadata, content: {application/json: {schema: ServerMetadata}}}
    """
    return jsonify(name=_runtime().name, version=shared.__version__, extensions=EXTENSIONS)


@bp.get("/v2/models/<name>")
@bp.get("/v2/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    """OIP model metadata; this service's own metadata (classes, artifacts, ...) under `parameters`.
    ---
    get:
      summary: Model metadata (Open Inference Protocol)
      tags: [inference protocol]
      responses:
        "200": {description: Metadata, content: {application/json: {schema: ModelMetadata}}}
        "404": OipNotFound
        "503": OipNotReady
    """
    runtime = _runtime_for(name, version)
    meta = runtime.metadata()
    k = len(meta["classes"])
    return jsonify({
        "name": runtime.name,
        "versions": _versions(runtime),
        "platform": "sklearn",
        "inputs": [{"name": oip_codec.INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probas", "datatype": "FP32", "shape": [-1, k]},
                    {"name": "class_id", "datatype": "INT64", "shape": [-1]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}],
        "parameters": meta,
    })


@bp.get("/v2/models/<name>/ready")
@bp.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> tuple[Response, int]:
    """The model's readiness (200 ready, 503 not).
    ---
    get:
      summary: Model readiness
      tags: [inference protocol]
      responses:
        "200": {description: Ready, content: {application/json: {schema: ModelReady}}}
        "503": {description: Not ready, content: {application/json: {schema: ModelReady}}}
        "404": OipNotFound
    """
    runtime = _runtime(name)
    ready = runtime.ready
    if ready and version is not None:
        _runtime_for(name, version)
    return jsonify(name=runtime.name, ready=ready), 200 if ready else 503


@bp.post("/v2/models/<name>/infer")
@bp.post("/v2/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    """Classify the request's images with the raw path's function, and answer with OIP output tensors.
    ---
    post:
      summary: Classify one or more images (a BYTES tensor; JSON or Triton's binary tensor extension)
      tags: [inference protocol]
      requestBody:
        required: true
        content:
          application/json: {schema: InferRequest}
          application/octet-stream:
            schema: {type: string, format: binary}
            description: JSON header + binary tensors; needs the Inference-Header-Content-Length header
      responses:
        "200":
          description: Output tensors
          content:
            application/json: {schema: InferResponse}
            application/octet-stream: {schema: {type: string, format: binary}}
        "400": OipBadInput
        "404": OipNotFound
        "413": OipTooLarge
        "415": OipNotAnImage
        "503": OipNotReady
    """
    runtime = _runtime_for(name, version)
    # base64 makes an image 4/3 larger: the body may be twice MAX_IMAGE_BYTES; each image is still held to it
    request.max_content_length = BODY_LIMIT_FACTOR * current_app.config["SETTINGS"].max_image_bytes
    req = oip_codec.decode_request(request.get_data(cache=False, parse_form_data=False), request.mimetype,
                                   request.headers.get(oip_codec.HEADER_LENGTH))
    oip_codec.check_outputs(req, OUTPUTS)
    classify = _classify()
    bodies = _each(lambda data: classify(data, version), req.images)
    classes = runtime.metadata()["classes"]
    tensors = [
        Tensor("probas", "FP32", [len(bodies), len(classes)],
               np.asarray([[b["probas"][c] for c in classes] for b in bodies], dtype=np.float32)),
        Tensor("class_id", "INT64", [len(bodies)], np.asarray([b["class_id"][0] for b in bodies], dtype=np.int64)),
        Tensor("label", "BYTES", [len(bodies)], [b["label"].encode() for b in bodies]),
    ]
    extras = sorted({key for b in bodies for key in b} - set(OUTPUT_FIELDS))
    parameters = {"classes": classes, **{key: [b.get(key) for b in bodies] for key in extras}}
    observability.add_log_fields(images=len(bodies), labels=[b["label"] for b in bodies])
    data, headers = oip_codec.encode_response(runtime.name, bodies[0]["model_version"], req, tensors, parameters)
    return Response(data, headers=headers)


def _each(classify: Classify, images: Sequence[bytes]) -> list[dict]:
    """classify() every image, all at once when there are several: each in its own copy of the request context."""
    if len(images) == 1:
        return [classify(images[0])]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    environ, rid = dict(request.environ), observability.request_id()

    def one(item: tuple[int, bytes]) -> dict:
        index, data = item
        with app.request_context(environ):
            g.request_id, g.log_fields = f"{rid}.{index}", {}
            return classify(data)

    workers = min(len(images), max(1, app.config["SETTINGS"].batch_max_size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oip-infer") as pool:
        return list(pool.map(one, enumerate(images)))


def _classify() -> Classify:
    return current_app.extensions[_CLASSIFY]


def _runtime(name: str | None = None) -> ModelRuntime:
    runtime = current_runtime()
    if name is not None and name != runtime.name:
        raise NotFound(f"This service serves the model {runtime.name!r}, not {name!r}.")
    return runtime


def _runtime_for(name: str, version: str | None) -> ModelRuntime:
    """The runtime serving `name` (and holding `version` loaded, when given): 404 otherwise, 503 while it loads."""
    runtime = _runtime(name)
    if runtime.model is None:
        runtime.require_loaded()
        raise NotReady(f"{name} is not loaded yet")
    if version is not None and version not in _versions(runtime):
        raise NotFound(f"{name} holds the versions {', '.join(_versions(runtime))} loaded, not {version!r}.")
    return runtime


def _versions(runtime: ModelRuntime) -> list[str]:
    """The versions loaded here, the active one first."""
    loaded = runtime.loaded_versions() if isinstance(runtime, VersionedRuntime) else []
    return list(dict.fromkeys([runtime.model_version, *loaded]))
