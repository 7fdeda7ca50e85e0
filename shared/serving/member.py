"""The Flask app factory for the three members: image bytes in, class probabilities out."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import math
import threading
from typing import Any, Mapping

import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from PIL import Image

from shared.serving import api, observability
from shared.config import MEMBERS, Settings
from shared.errors import BadRequest, NotFound, NotReady
from shared.images import ImageLimits, decode_image

log = logging.getLogger(__name__)

# Extractors whose forward pass gains from batching; OCR reads one image at a time anyway.
BATCHED_KINDS = ("clip",)
# How long a request may wait for its batch before it gives up (the gateway's own timeout is shorter).
BATCH_TIMEOUT_S = 60.0

bp = Blueprint("member", __name__)


class MemberRuntime:
    """One member behind HTTP: load() once in the background, predict() many times, readiness as a flag."""

    def __init__(self, name: str, settings: Settings):
        self.name = name
        self.settings = settings
        self.health = observability.Health()
        self.member: Any = None
        self.batcher: Any = None

    def start(self, background: bool = True) -> None:
        """Load the model, in a thread so that liveness answers at once."""
        if not background:
            self.load()
            return
        threading.Thread(target=self.load, name=f"load-{self.name}", daemon=True).start()

    def load(self) -> None:
        """Load the learner and its extractor, then run one warm-up inference; failures keep it not-ready."""
        try:
            from shared.learning.learners import Member

            self.member = Member.load(self.settings.models_dir, self.settings.weights_dir, self.name, self.settings)
            self.health.mark_loaded()
            self.batcher = self._make_batcher()
            self.predict(warmup_image())
            release_freed_memory()
            self.health.mark_warmed_up()
            log.info("%s ready (model_version %s)", self.name, self.member.model_version)
        except Exception as exc:  # noqa: BLE001 - any load failure must show in /v2/health/ready
            log.exception("%s failed to load", self.name)
            self.health.mark_failed(f"{type(exc).__name__}: {exc}")

    def predict(self, image: Image.Image, slack_s: float = 0.0) -> tuple[np.ndarray, float | None]:
        """(K,) class probabilities of one decoded image, and the seconds it waited for its batch (None: unbatched).

        `slack_s`: how long the caller lets it wait for other requests to share its forward pass.
        """
        if self.batcher is not None:
            return self.batcher.submit_timed(image, timeout=BATCH_TIMEOUT_S, slack_s=slack_s)
        return self.member.predict_proba([image])[0], None

    def require_loaded(self) -> Any:
        if self.member is None:
            reason = f" Loading failed: {self.health.error}" if self.health.error else ""
            raise NotReady(f"{self.name} is still loading its model; retry shortly.{reason}")
        return self.member

    def _make_batcher(self) -> Any:
        if self.member.kind not in BATCHED_KINDS:
            return None
        try:
            from shared.serving.batching import DynamicBatcher
        except ModuleNotFoundError:
            return None
        member, hist = self.member, observability.BATCH_SIZE.labels(self.name)
        return DynamicBatcher(lambda images: list(member.predict_proba(images)),
                              max_batch_size=self.settings.batch_max_size,
                              max_wait_ms=self.settings.batch_max_wait_ms,
                              on_batch=hist.observe)


def release_freed_memory() -> None:
    """Hand the heap freed while loading (checkpoint buffers, CLIP's text tower) back to the OS.

    glibc keeps freed heap pages mapped; after a model load that is ~300 MB of RSS per CLIP service
    (BENCHMARKS.md). Elsewhere than glibc there is no malloc_trim and nothing to do.
    """
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A member service; `config` overrides settings by upper-case field name (SERVICE_NAME picks the learner)."""
    settings = api.settings_from_config(config)
    name = settings.service_name
    if name not in MEMBERS:
        raise ValueError(f"SERVICE_NAME must be one of {', '.join(MEMBERS)}, got {name!r}")
    app = Flask(__name__)
    app.config.from_mapping(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_image_bytes, LOAD_IN_BACKGROUND=True)
    app.config.update(config or {})
    runtime = MemberRuntime(name, settings)
    app.extensions["member"] = runtime
    observability.init_app(app, name, runtime.health)
    api.install_error_handlers(app)
    app.register_blueprint(bp)
    runtime.start(background=app.config["LOAD_IN_BACKGROUND"])
    return app


@bp.post("/")
@bp.post("/predict")
def predict() -> Response:
    runtime: MemberRuntime = current_app.extensions["member"]
    settings: Settings = current_app.config["SETTINGS"]
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    slack_s = batch_slack_s(request.headers.get(api.SLACK_HEADER), settings.batch_max_slack_ms)
    image = decode_image(api.read_image_bytes(request), limits)
    member = runtime.require_loaded()
    proba, waited_s = runtime.predict(image, slack_s)
    body = api.prediction_body(proba, member.classes, model=runtime.name, model_version=member.model_version,
                               synthetic=member.synthetic)
    observability.add_log_fields(label=body["label"], proba=round(body["proba"], 4))
    response = jsonify(body)
    if waited_s is not None:
        response.headers[api.BATCH_WAIT_HEADER] = f"{waited_s * 1000:.1f}"
    return response


def batch_slack_s(header: str | None, max_slack_ms: float) -> float:
    """The slack a caller granted in X-Batch-Slack-Ms, in seconds, capped at BATCH_MAX_SLACK_MS."""
    if header is None:
        return 0.0
    try:
        slack_ms = float(header)
    except ValueError:
        slack_ms = math.nan
    if not math.isfinite(slack_ms) or slack_ms < 0:
        raise BadRequest(f"{api.SLACK_HEADER} must be a number of milliseconds >= 0; got {header[:40]!r}")
    return min(slack_ms, max(0.0, max_slack_ms)) / 1000.0


@bp.get("/v2/models/<name>")
def model_metadata(name: str) -> Response:
    runtime: MemberRuntime = current_app.extensions["member"]
    if name != runtime.name:
        raise NotFound(f"This service serves the model {runtime.name!r}, not {name!r}.")
    return jsonify({**runtime.require_loaded().metadata(), "ready": runtime.health.ready})


def warmup_image() -> Image.Image:
    """A small non-uniform image: enough to run every layer once before the first real request."""
    gradient = np.linspace(0, 255, 64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    return Image.fromarray(gradient)
