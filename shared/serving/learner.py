"""A member service: LearnerRuntime (one learner + its extractor) and its routes: image bytes in, probabilities out."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import threading
from dataclasses import dataclass
from pathlib import Path
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
from shared.serving.runtime import current_runtime
from shared.serving.versions import VersionedRuntime

# How long a request may wait for its batch before it gives up (the gateway's own timeout is shorter).
BATCH_TIMEOUT_S = 60.0

bp = Blueprint("member", __name__)


@dataclass
class LoadedLearner:
    """One version of this member: its fitted learner, and its batcher when its extractor gains from batching."""

    learner: Any
    batcher: DynamicBatcher | None


class LearnerRuntime(VersionedRuntime):
    """One base learner: its fitted pipeline and feature extractor per loaded version, batched when its extractor
    gains from it. Versions recorded with the same extractor config share one loaded extractor."""

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.extractors: dict[str, Any] = {}  # extractor_key -> loaded extractor, shared by versions

    def running_slots(self) -> int:
        """All gunicorn threads when requests share a batch; else a few (UNBATCHED_RUNNING): one read already
        uses the cores, so more at once only make every one of them slower."""
        if extractor_class(members.service(self.name).extractor).batchable:
            return self.settings.threads
        return max(1, min(self.settings.threads, self.settings.unbatched_running))

    def load_version(self, version: str, folder: Path) -> LoadedLearner:
        """One version's learner and its extractor (shared when recorded alike), checked against its manifest
        (imports torch)."""
        from shared.learning.learners import FittedLearner

        learner = FittedLearner.load(folder, self.settings.weights_dir, self.name, self.settings, self.extractors)
        return LoadedLearner(learner, self._make_batcher(learner))

    def warm_version(self, model: LoadedLearner) -> None:
        """One inference through every layer, then hand the load's freed heap back to the OS."""
        _predict(model, warmup_image(), 0.0)
        release_freed_memory()

    def _drop(self, wanted: set[str]) -> None:
        with self._lock:
            dropped = [s.model for v, s in self.slots.items() if v not in wanted and v != self.active and s.model]
        super()._drop(wanted)
        for loaded in dropped:  # its batcher's thread ends once the requests still running on it are done
            if loaded.batcher is not None:
                timer = threading.Timer(self.settings.deadline_s, loaded.batcher.close)
                timer.daemon = True
                timer.start()
        with self._lock:  # an extractor no loaded version uses any more is let go
            used = {id(slot.model.learner.extractor) for slot in self.slots.values() if slot.model is not None}
            self.extractors = {k: e for k, e in self.extractors.items() if id(e) in used}

    def require_learner(self) -> Any:
        """The active version's FittedLearner."""
        return self.require_loaded().learner

    def predict(self, image: Image.Image, slack_s: float = 0.0,
                version: str | None = None) -> tuple[np.ndarray, float | None, Any]:
        """(K,) class probabilities of one decoded image, the seconds it waited for its batch (None: unbatched),
        and the learner (of the pinned version, else the active one) that answered.

        `slack_s`: how long the caller lets it wait for other requests to share its forward pass.
        """
        _version, loaded = self.model_for(version)
        proba, waited = _predict(loaded, image, slack_s)
        return proba, waited, loaded.learner

    def metadata(self) -> dict:
        """The active version's learner metadata, the loaded versions and this worker's readiness."""
        return {**self.require_learner().metadata(), "loaded_versions": self.loaded_versions(),
                "ready": self.health.ready}

    @property
    def model_version(self) -> str:
        return self.require_learner().model_version

    @property
    def weights(self) -> dict[str, str]:
        """Its own extractor's part only, e.g. {"ocr": "real"}."""
        return self.require_learner().weights

    def _make_batcher(self, member: Any) -> DynamicBatcher | None:
        if not member.batchable:  # e.g. OCR reads one image at a time anyway
            return None
        hist = observability.BATCH_SIZE.labels(self.name)
        return DynamicBatcher(lambda images: list(member.predict_proba(images)),
                              max_batch_size=self.settings.batch_max_size,
                              max_wait_ms=self.settings.batch_max_wait_ms,
                              on_batch=hist.observe)


def _predict(loaded: LoadedLearner, image: Image.Image, slack_s: float) -> tuple[np.ndarray, float | None]:
    if loaded.batcher is not None:
        return loaded.batcher.submit_timed(image, timeout=BATCH_TIMEOUT_S, slack_s=slack_s)
    return loaded.learner.predict_proba([image])[0], None


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


def classify(data: bytes, version: str | None = None) -> dict:
    """One image's bytes -> the prediction body (the raw POST's and the inference protocol's one path)."""
    return classify_timed(data, version)[0]


def classify_timed(data: bytes, version: str | None = None) -> tuple[dict, float | None]:
    """The prediction body and how long the image waited for its batch (None: unbatched).

    `version`: the model version to answer with (else the request's X-Model-Version, else the active one); one
    not loaded here is refused (409), never answered by another."""
    runtime = current_runtime(LearnerRuntime)
    settings: Settings = current_app.config["SETTINGS"]
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    slack_s = batch_slack_s(request.headers.get(api.SLACK_HEADER), settings.batch_max_slack_ms)
    version = version or api.requested_version(request)
    image = decode_image(data, limits)
    proba, waited_s, member = runtime.predict(image, slack_s, version)
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
