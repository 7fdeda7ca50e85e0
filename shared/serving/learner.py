"""A member service: LearnerRuntime (one learner + its extractor) and its routes: image bytes in, probabilities out."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from PIL import Image

from shared import members
from shared.config import Settings
from shared.errors import BadRequest
from shared.features.registry import extractor_class
from shared.images import ImageLimits, decode_image
from shared.serving import api, observability
from shared.serving.batching import DynamicBatcher
from shared.serving.runtime import ModelRuntime, current_runtime

# How long a request may wait for its batch before it gives up (the gateway's own timeout is shorter).
BATCH_TIMEOUT_S = 60.0

bp = Blueprint("member", __name__)


class LearnerRuntime(ModelRuntime):
    """One base learner: its fitted pipeline and feature extractor, batched when its extractor gains from it."""

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.batcher: DynamicBatcher | None = None

    def running_slots(self) -> int:
        """All gunicorn threads when requests share a batch; else a few (UNBATCHED_RUNNING): one read already
        uses the cores, so more at once only make every one of them slower."""
        if extractor_class(members.service(self.name).extractor).batchable:
            return self.settings.threads
        return max(1, min(self.settings.threads, self.settings.unbatched_running))

    def load(self) -> Any:
        """The learner and its extractor, checked against the manifest (imports torch)."""
        from shared.learning.learners import FittedLearner

        member = FittedLearner.load(self.settings.models_dir, self.settings.weights_dir, self.name, self.settings)
        self.batcher = self._make_batcher(member)
        return member

    def warm_up(self) -> None:
        """One inference through every layer, then hand the load's freed heap back to the OS."""
        self.predict(warmup_image())
        release_freed_memory()

    def predict(self, image: Image.Image, slack_s: float = 0.0) -> tuple[np.ndarray, float | None]:
        """(K,) class probabilities of one decoded image, and the seconds it waited for its batch (None: unbatched).

        `slack_s`: how long the caller lets it wait for other requests to share its forward pass.
        """
        if self.batcher is not None:
            return self.batcher.submit_timed(image, timeout=BATCH_TIMEOUT_S, slack_s=slack_s)
        return self.require_loaded().predict_proba([image])[0], None

    def metadata(self) -> dict:
        """The learner's metadata and this worker's readiness."""
        return {**self.require_loaded().metadata(), "ready": self.health.ready}

    @property
    def model_version(self) -> str:
        return self.require_loaded().model_version

    @property
    def weights(self) -> dict[str, str]:
        """Its own extractor's part only, e.g. {"ocr": "real"}."""
        return self.require_loaded().weights

    def _make_batcher(self, member: Any) -> DynamicBatcher | None:
        if not member.batchable:  # e.g. OCR reads one image at a time anyway
            return None
        hist = observability.BATCH_SIZE.labels(self.name)
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


def warmup_image() -> Image.Image:
    """A small non-uniform image: enough to run every layer once before the first real request."""
    gradient = np.linspace(0, 255, 64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    return Image.fromarray(gradient)


@bp.post("/")
@bp.post("/predict")
def predict() -> Response:
    """Classify one image: raw body or the multipart `file` field.
    ---
    post:
      summary: Classify one image (raw bytes or multipart `file`)
      tags: [predict]
      requestBody: Image
      responses:
        "200": {description: The prediction, content: {application/json: {schema: Prediction}}}
        "400": BadInput
        "413": TooLarge
        "415": NotAnImage
        "503": NotReady
    """
    body, waited_s = classify_timed(api.read_image_bytes(request))
    response = jsonify(body)
    if waited_s is not None:
        response.headers[api.BATCH_WAIT_HEADER] = f"{waited_s * 1000:.1f}"
    return response


def classify(data: bytes) -> dict:
    """One image's bytes -> the prediction body (the raw POST's and the inference protocol's one path)."""
    return classify_timed(data)[0]


def classify_timed(data: bytes) -> tuple[dict, float | None]:
    """The prediction body and how long the image waited for its batch (None: unbatched)."""
    runtime = current_runtime(LearnerRuntime)
    settings: Settings = current_app.config["SETTINGS"]
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    slack_s = batch_slack_s(request.headers.get(api.SLACK_HEADER), settings.batch_max_slack_ms)
    image = decode_image(data, limits)
    member = runtime.require_loaded()
    proba, waited_s = runtime.predict(image, slack_s)
    body = api.prediction_body(proba, member.classes, model=runtime.name, model_version=member.model_version,
                               weights=member.weights)
    observability.add_log_fields(label=body["label"], proba=round(body["proba"], 4))
    return body, waited_s


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
