"""The loop over HTTP: labels on recorded predictions, the review queue, live quality and drift, and their gauges.

Everything here reads and writes the history store; nothing runs on the prediction path. Quality and drift are
computed when asked (and for /metrics at most once per LOOP_METRICS_EVERY_S in each worker).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Iterator

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from prometheus_client.core import GaugeMetricFamily

from shared.config import Settings
from shared.errors import BadRequest, ClassifierError
from shared.feedback.drift import drift_report, traffic_baseline
from shared.feedback.quality import live_quality
from shared.gateway.runtime import GatewayRuntime
from shared.history import HistoryFilter, HistoryStore, current_history, parse_filter
from shared.history.query import parse_limit
from shared.serving import auth, observability
from shared.serving.runtime import current_runtime

log = logging.getLogger(__name__)
bp = Blueprint("feedback", __name__)


class NoReference(ClassifierError):
    """The serving model keeps no training reference (trained before it existed): drift cannot be tested."""

    status, code = 409, "no_reference"


def init_app(app: Flask, settings: Settings) -> None:
    """Register the routes and the quality and drift gauges of /metrics."""
    app.register_blueprint(bp)
    observability.add_scrape_collector(app, LoopGauges(settings.loop_metrics_every_s))


# --- labels -------------------------------------------------------------------------------------
@bp.post("/v1/history/<int:record_id>/label")
def label_record(record_id: int) -> Response:
    """A person's class for one recorded prediction; the latest label wins, a different one counts a change.
    ---
    post:
      summary: Label a recorded prediction with its true class
      tags: [feedback]
      requestBody:
        content: {application/json: {schema: {type: object, required: [label], properties: {label: {type: string}}}}}
      responses:
        "200": {description: The record as labelled, content: {application/json: {schema: {type: object}}}}
        "400": BadInput
        "404": NotFound
        "503": NotReady
    """
    label = _label_from_body()
    return jsonify(current_history().set_label(record_id, label, auth.caller_id()))


@bp.post("/v1/feedback")
def feedback() -> Response:
    """The label of the prediction answered to a request id (the X-Request-ID the answer carried).
    ---
    post:
      summary: Label the prediction of a request id
      tags: [feedback]
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [request_id, label]
              properties: {request_id: {type: string}, label: {type: string}}
      responses:
        "200": {description: The record as labelled, content: {application/json: {schema: {type: object}}}}
        "400": BadInput
        "404": NotFound
        "503": NotReady
    """
    body = _json_object()
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise BadRequest("The body needs `request_id`: the X-Request-ID of the answer being labelled.",
                         code="bad_request_id")
    label = _label_from_body(body)
    store = current_history()
    return jsonify(store.set_label(store.record_for_request(request_id.strip()), label, auth.caller_id()))


def _json_object() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest('Send a JSON object, e.g. {"label": "<class>"}.', code="bad_json")
    return body


def _runtime() -> GatewayRuntime:
    """The app's gateway model; 503 in an app that serves none (the pages alone, in tests)."""
    try:
        return current_runtime(GatewayRuntime)
    except (KeyError, TypeError):
        raise ClassifierError("This app serves no stacking model.", status=503) from None


def serving_classes() -> list[str]:
    """The serving model's classes (what a label may be); empty while it loads or where there is none."""
    try:
        runtime = _runtime()
    except ClassifierError:
        return []
    return list(runtime.model.classes) if runtime.model is not None else []


def serving_weights() -> dict[str, str]:
    """{part: real|synthetic} of the serving model, as its manifest records them."""
    try:
        return dict(_runtime().manifest.get("weights") or {})
    except ClassifierError:
        return {}


def _label_from_body(body: dict | None = None) -> str:
    """The `label` of the JSON body, one of the serving model's classes; BadRequest naming them otherwise."""
    body = _json_object() if body is None else body
    classes = _runtime().require_loaded().classes
    label = body.get("label")
    if isinstance(label, str) and label.strip() in classes:
        return label.strip()
    raise BadRequest(f"label must be one of the model's classes: {', '.join(classes)}; got {label!r}.",
                     code="unknown_label")


# --- review queue -------------------------------------------------------------------------------
@bp.get("/v1/review")
def review() -> Response:
    """Unlabelled records, those a label would teach most first: by review_priority = (1 - the stack's margin
    between its top two classes) + the share of members whose top class is not the stack's.
    ---
    get:
      summary: The review queue
      tags: [feedback]
      parameters:
      - limit
      - cursor
      responses:
        "200": {description: A page of the queue, content: {application/json: {schema: {type: object}}}}
        "400": BadInput
    """
    page = current_history().review_queue(limit=parse_limit(request.args.get("limit")),
                                          cursor=request.args.get("cursor"))
    for item in page.items:
        if item["has_thumbnail"]:
            item["thumbnail_url"] = url_for("history_api.thumbnail", record_id=item["id"])
    body: dict[str, Any] = {"items": page.items, "next_cursor": page.next_cursor}
    if page.next_cursor:
        body["next_url"] = url_for("feedback.review", cursor=page.next_cursor, limit=len(page.items))
    return jsonify(body)


# --- quality and drift --------------------------------------------------------------------------
@bp.get("/v1/quality")
def quality() -> Response:
    """Accuracy, macro-F1, ECE and the confusion matrix of the stack and each member on the labelled records.
    ---
    get:
      summary: Live quality on labelled records
      tags: [feedback]
      parameters:
      - since
      - until
      - model_version
      responses:
        "200": {description: The metrics, content: {application/json: {schema: {type: object}}}}
        "400": BadInput
    """
    return jsonify(quality_now(parse_filter(request.args)))


def quality_now(flt: HistoryFilter) -> dict:
    """live_quality of the labelled records the filter selects, in the serving model's classes."""
    runtime = _runtime()
    classes = runtime.require_loaded().classes
    return live_quality(current_history().iter_labelled(flt), classes) | {
        "filters": flt.to_query(), "serving_model_version": runtime.model_version}


@bp.get("/v1/drift")
def drift() -> Response:
    """Whether the newest windows of served answers still look like the training photos' answers.
    ---
    get:
      summary: Drift tests on the newest windows of traffic
      tags: [feedback]
      parameters:
      - {name: window, in: query, required: false, schema: {type: integer}}
      responses:
        "200": {description: Tests and verdicts, content: {application/json: {schema: {type: object}}}}
        "400": BadInput
        "409": Conflict
    """
    return jsonify(drift_now(_window_arg()))


def drift_now(window: int | None = None, max_age_s: float = 0.0) -> dict:
    """drift_report over the newest answers of the serving model version (cached answers left out); one computed
    less than max_age_s ago in this worker is reused (the pages' banner)."""
    settings: Settings = current_app.config["SETTINGS"]
    runtime = _runtime()
    runtime.require_loaded()
    if runtime.reference is None:
        raise NoReference("The serving model has no training reference (reference/training.npz): it was trained "
                          "before drift tests existed. Retrain it to test drift.")
    window = window or settings.drift_window
    key = (runtime.model_version, window)
    at, report = _recent_drift.get(key, (0.0, None))
    if report is not None and time.monotonic() - at < max_age_s:
        return report
    store, reference = current_history(), runtime.reference
    records = list(itertools.islice(_served(store, runtime.model_version), window * settings.drift_windows))
    if settings.drift_reference == "traffic":
        first = list(itertools.islice(_served(store, runtime.model_version, oldest_first=True), window))
        if len(first) < window:
            records = []  # no baseline yet: nothing to test against
        else:
            reference = traffic_baseline(first, reference)
            records = [r for r in records if r["id"] > first[-1]["id"]]  # the baseline is not tested against itself
    report = drift_report(records, reference, window=window, windows=settings.drift_windows,
                          alpha=settings.drift_alpha, source=settings.drift_reference) | {
        "model_version": runtime.model_version}
    _recent_drift[key] = (time.monotonic(), report)
    return report


_recent_drift: dict[tuple[str, int], tuple[float, dict]] = {}  # this worker's latest report per (version, window)


def _served(store: HistoryStore, model_version: str, oldest_first: bool = False) -> Iterator[dict]:
    items = store.iter_items(HistoryFilter(model_version=model_version), oldest_first=oldest_first)
    return (item for item in items if not item["cached"])


def _window_arg() -> int | None:
    value = request.args.get("window")
    if not value:
        return None
    try:
        window = int(value)
    except ValueError:
        window = 0
    if not 10 <= window <= 10_000:
        raise BadRequest(f"window must be a whole number of answers from 10 to 10000, got {value!r}.")
    return window


# --- gauges -------------------------------------------------------------------------------------
class LoopGauges:
    """Quality and drift as Prometheus gauges, computed during the /metrics request at most once per every_s."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._lock = threading.Lock()
        self._at, self._families = 0.0, []

    def collect(self) -> list:
        with self._lock:
            if time.monotonic() - self._at >= self.every_s or not self._at:
                self._families, self._at = self._compute(), time.monotonic()
            return self._families

    def _compute(self) -> list:
        families = []
        for name, compute in (("quality", self._quality), ("drift", self._drift)):
            try:
                families += compute()
            except ClassifierError:  # not loaded, no history, no reference: no gauges of that kind this time
                continue
            except Exception:  # noqa: BLE001 - a figure computed from stored data must never fail the scrape
                log.exception("could not compute the %s gauges", name)
        return families

    def _quality(self) -> list:
        runtime = _runtime()
        q = quality_now(HistoryFilter(model_version=runtime.model_version))
        gauges = {key: GaugeMetricFamily(f"classifier_live_{key}", f"Live {key.replace('_', '-')} on labelled "
                                         "records of the serving model version", labels=["model"])
                  for key in ("accuracy", "macro_f1", "ece")}
        labelled = GaugeMetricFamily("classifier_live_labelled", "Labelled records scored by live quality",
                                     labels=["model"])
        for model, m in q["models"].items():
            for key, family in gauges.items():
                family.add_metric([model], m[key])
            labelled.add_metric([model], m["n"])
        return [*gauges.values(), labelled]

    def _drift(self) -> list:
        report = drift_now()
        flagged = GaugeMetricFamily("classifier_drift_flagged", "1 when the newest full window of answers is "
                                    "flagged as drifted from the training photos")
        flagged.add_metric([], float(report["flagged"]))
        families = [flagged]
        if report["windows"]:
            p = GaugeMetricFamily("classifier_drift_p_value", "Corrected p-value of each drift test, newest window",
                                  labels=["test"])
            for test, t in report["windows"][0]["tests"].items():
                p.add_metric([test], t["p_corrected"])
            families.append(p)
        return families

