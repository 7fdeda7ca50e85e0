"""The stacking gateway: fan the image out to the three members, combine what answers. Never imports torch."""
from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping

import numpy as np
import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.serving import api, observability
from shared.config import GATEWAY, Settings
from shared.errors import DeadlineExceeded, MembersUnavailable, NotFound, NotReady
from shared.images import ImageLimits, probe_image, sha256_hex

log = logging.getLogger(__name__)

# Member statuses that mean "this input is bad" (passed on to the client); any other error is the member's failure.
INPUT_REJECTED = (400, 413, 415, 422)
SOURCE_HEADER = "X-Source"
SOURCES = ("api", "ui")
bp = Blueprint("gateway", __name__)


@dataclass(frozen=True)
class Timeouts:
    """Explicit time limits of one fan-out, in seconds."""

    connect: float
    member: float  # per member: the read timeout of its HTTP call
    deadline: float  # the whole request, all members together

    @classmethod
    def from_settings(cls, settings: Settings) -> "Timeouts":
        member = min(settings.member_timeout_s, settings.deadline_s)
        return cls(connect=min(2.0, member), member=member, deadline=settings.deadline_s)


@dataclass
class MemberAnswer:
    """One member's outcome: ok with probabilities, rejected the input (4xx), or failed."""

    name: str
    outcome: str  # ok | rejected | timeout | deadline | connection_error | http_error | bad_response
    latency_ms: float
    status: int | None = None
    body: dict = field(default_factory=dict)
    error: str | None = None
    batch_wait_ms: float = 0.0  # how long the member held it for batch company (its X-Batch-Wait-Ms)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def summary(self) -> dict:
        """What the response's `members` and the history record carry for this member."""
        out: dict[str, Any] = {"ok": self.ok, "latency_ms": self.latency_ms}
        if self.ok:
            out.update(probas=self.body.get("probas"), label=self.body.get("label"))
        else:
            out["error"] = self.error
        return out


class SlackPlanner:
    """How long each member may hold a request for batch company: the gateway waits for the slowest anyway.

    Under concurrent load the CLIP members see requests one at a time, at the OCR member's pace, and could
    not batch; granted a share of the slowest member's latency as slack they do (BENCHMARKS.md). Latencies
    are tracked without the time a member held the request, so granting slack never feeds back into it.
    """

    SMOOTHING = 0.2  # weight of the newest answer in the moving average
    CLEARLY_FASTER = 2.0  # a member gets slack only if the slowest takes at least this many times as long

    def __init__(self, share: float, max_slack_ms: float):
        self.share = share
        self.max_slack_ms = max_slack_ms
        self._lock = threading.Lock()
        self._latency_ms: dict[str, float] = {}  # moving average per member, answers only, hold excluded

    def observe(self, answer: MemberAnswer) -> None:
        if answer.outcome == "rejected":  # the input was bad: says nothing about the member's pace
            return
        with self._lock:
            if not answer.ok:  # unknown again until it answers: a failing member must not set anyone's slack
                self._latency_ms.pop(answer.name, None)
                return
            latency = max(0.0, answer.latency_ms - answer.batch_wait_ms)
            previous = self._latency_ms.get(answer.name, latency)
            self._latency_ms[answer.name] = previous + self.SMOOTHING * (latency - previous)

    def plan(self, concurrent: int) -> dict[str, float]:
        """{member: slack ms} for a request while `concurrent` requests (it included) are in flight."""
        if self.share <= 0 or concurrent < 2:  # alone, a held request would only wait
            return {}
        with self._lock:
            latency = dict(self._latency_ms)
        if len(latency) < 2:
            return {}
        slowest = max(latency.values())
        slack = min(self.share * slowest, self.max_slack_ms)
        return {name: round(slack, 1) for name, ms in latency.items() if ms * self.CLEARLY_FASTER <= slowest}


class MemberClient:
    """Pooled HTTP calls to the members: parallel, timed out, one retry on connection errors only."""

    def __init__(self, urls: Mapping[str, str], timeouts: Timeouts, pool_size: int, slack_share: float = 0.0):
        self.urls = dict(urls)
        self.timeouts = timeouts
        self.session = make_session(pool_size)
        self.pool = ThreadPoolExecutor(max_workers=max(1, pool_size) * max(1, len(self.urls)),
                                       thread_name_prefix="fan-out")
        # Slack never more than half a member's timeout: a held request must still answer in time.
        self.slack = SlackPlanner(slack_share, max_slack_ms=timeouts.member * 500)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

    def fan_out(self, data: bytes, headers: Mapping[str, str]) -> dict[str, MemberAnswer]:
        """Ask every member at once; whoever has not answered by the deadline counts as failed."""
        started = time.perf_counter()
        with self._in_flight_lock:
            self._in_flight += 1
            concurrent = self._in_flight
        try:
            slack = self.slack.plan(concurrent)
            futures = {self.pool.submit(self.call, name, data, _with_slack(headers, slack.get(name))): name
                       for name in self.urls}
            done, _late = wait(futures, timeout=self.timeouts.deadline)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        answers = {}
        for future, name in futures.items():
            if future in done:
                answers[name] = future.result()
            else:
                future.cancel()
                answers[name] = MemberAnswer(name, "deadline", _ms_since(started),
                                             error=f"no answer within the {self.timeouts.deadline:g} s deadline")
            self.slack.observe(answers[name])
        return answers

    def call(self, name: str, data: bytes, headers: Mapping[str, str]) -> MemberAnswer:
        """POST the bytes to one member and classify what came back."""
        started = time.perf_counter()
        try:
            resp = self.session.post(self.urls[name] + "/", data=data, headers=dict(headers),
                                     timeout=(self.timeouts.connect, self.timeouts.member))
        except requests.Timeout:
            return MemberAnswer(name, "timeout", _ms_since(started),
                                error=f"no answer within the {self.timeouts.member:g} s member timeout")
        except requests.ConnectionError as exc:
            return MemberAnswer(name, "connection_error", _ms_since(started), error=f"connection failed: {_short(exc)}")
        return _answer_from_response(name, resp, _ms_since(started))


def make_session(pool_size: int) -> requests.Session:
    """A Session with a connection pool per member and exactly one retry, on connection errors only."""
    # A timeout or a 5xx is not retried: the member may be busy or the request may have run already.
    retry = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, backoff_factor=0,
                  raise_on_status=False)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _with_slack(headers: Mapping[str, str], slack_ms: float | None) -> Mapping[str, str]:
    return {**headers, api.SLACK_HEADER: f"{slack_ms:.1f}"} if slack_ms else headers


def _batch_wait_ms(resp: requests.Response) -> float:
    try:
        return max(0.0, float(resp.headers.get(api.BATCH_WAIT_HEADER, 0.0)))
    except ValueError:
        return 0.0


def _answer_from_response(name: str, resp: requests.Response, latency_ms: float) -> MemberAnswer:
    try:
        body = resp.json()
    except ValueError:
        return MemberAnswer(name, "bad_response", latency_ms, resp.status_code,
                            error=f"HTTP {resp.status_code} with a non-JSON body")
    if not isinstance(body, dict):
        return MemberAnswer(name, "bad_response", latency_ms, resp.status_code,
                            error=f"HTTP {resp.status_code} with a body that is not a JSON object")
    if resp.status_code == 200 and isinstance(body.get("probas"), dict):
        return MemberAnswer(name, "ok", latency_ms, 200, body, batch_wait_ms=_batch_wait_ms(resp))
    error = body.get("error")
    message = error.get("message", "") if isinstance(error, dict) else ""
    outcome = "rejected" if resp.status_code in INPUT_REJECTED else "http_error"
    return MemberAnswer(name, outcome, latency_ms, resp.status_code, body,
                        error=f"HTTP {resp.status_code}: {message}".strip())


class Stack:
    """The gateway's model: the meta-ensemble, loaded in the background, warmed up once."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.health = observability.Health()
        self.ensemble: Any = None
        self.manifest: dict = {}

    def start(self, background: bool = True) -> None:
        if not background:
            self.load()
            return
        threading.Thread(target=self.load, name="load-stacking", daemon=True).start()

    def load(self) -> None:
        """Verify the artifacts, load the meta-models, combine once; failures keep it not-ready."""
        try:
            from shared import artifacts
            from shared.learning.meta_model import MetaEnsemble

            self.manifest = artifacts.load_manifest(self.settings.models_dir)
            self.ensemble = MetaEnsemble.load(self.settings.models_dir, self.manifest)
            self.health.mark_loaded()
            k = len(self.ensemble.classes)
            self.ensemble.combine({name: np.full(k, 1.0 / k) for name in self.ensemble.members})
            self.health.mark_warmed_up()
            log.info("stacking ready (model_version %s)", self.manifest["model_version"])
        except Exception as exc:  # noqa: BLE001 - any load failure must show in /v2/health/ready
            log.exception("stacking failed to load")
            self.health.mark_failed(f"{type(exc).__name__}: {exc}")

    def require_loaded(self) -> Any:
        if self.ensemble is None:
            reason = f" Loading failed: {self.health.error}" if self.health.error else ""
            raise NotReady(f"The gateway is still loading its meta-models; retry shortly.{reason}")
        return self.ensemble

    def combine(self, answers: Mapping[str, MemberAnswer]) -> np.ndarray:
        """Stacked (K,) probabilities from the members that answered, by the meta-model for exactly them."""
        ensemble = self.require_loaded()
        probas = {a.name: [a.body["probas"][c] for c in ensemble.classes] for a in answers.values()}
        return ensemble.combine({name: np.asarray(p, dtype=float) for name, p in probas.items()})

    def metadata(self) -> dict:
        ensemble = self.require_loaded()
        files = self.manifest.get("files", {})
        return {
            "name": GATEWAY,
            "model_version": self.manifest["model_version"],
            "classes": ensemble.classes,
            "members": ensemble.members,
            "meta_models": sorted(ensemble.models),
            "features": self.manifest.get("features", {}),
            "artifacts": {rel: sha for rel, sha in files.items() if rel.startswith("meta/")},
            "trained_at": self.manifest.get("created_at"),
            "synthetic": bool(self.manifest.get("synthetic_weights")),
            "ready": self.health.ready,
        }


class _TorchBlocker:
    """An import hook that refuses torch, so the gateway process behaves as in its torch-free image."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is kept out of the stacking gateway", name=name)
        return None


def keep_torch_out() -> None:
    """Make `import torch` fail in this process (call it first thing in the gateway's entry point)."""
    # skops imports every sklearn module while loading, and sklearn's array-API shim would import torch
    # wherever it is installed: seconds of start-up and hundreds of MB for nothing. Libraries treat the
    # ImportError as "torch not installed".
    if not any(isinstance(finder, _TorchBlocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchBlocker())


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The gateway; `config` overrides settings by upper-case field name (e.g. MEMBER_URLS, DEADLINE_S)."""
    settings = api.settings_from_config(config)
    app = Flask(__name__)
    app.config.from_mapping(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_image_bytes, LOAD_IN_BACKGROUND=True)
    app.config.update(config or {})
    stack = Stack(settings)
    app.extensions["stack"] = stack
    app.extensions["members"] = MemberClient(settings.member_url_map(), Timeouts.from_settings(settings),
                                             pool_size=settings.threads, slack_share=settings.gateway_slack_share)
    observability.init_app(app, GATEWAY, stack.health)
    api.install_error_handlers(app)
    app.register_blueprint(bp)
    _init_optional(app, "shared.history.store", settings)
    _init_optional(app, "shared.ui.page")
    stack.start(background=app.config["LOAD_IN_BACKGROUND"])
    return app


def _init_optional(app: Flask, module_name: str, *args: Any) -> None:
    """Register a component whose module may not exist yet (history, UI)."""
    module = _optional_module(module_name)
    if module is not None:
        module.init_app(app, *args)


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the module exists but one of its own imports is missing: a real bug
            raise
        return None


@bp.post("/")
@bp.post("/predict")
def predict() -> tuple[Response, int] | Response:
    started = time.perf_counter()
    settings: Settings = current_app.config["SETTINGS"]
    stack: Stack = current_app.extensions["stack"]
    data = api.read_image_bytes(request)
    probe_image(data, ImageLimits(settings.max_image_bytes, settings.max_image_pixels))
    stack.require_loaded()
    answers = current_app.extensions["members"].fan_out(data, _member_headers())
    _check_classes(answers, stack.require_loaded().classes)
    _log_members(answers)
    rejected = [a for a in answers.values() if a.outcome == "rejected"]
    if rejected:  # the input is bad: the client gets the member's own 4xx and error body
        return jsonify(rejected[0].body), rejected[0].status
    answered = {name: a for name, a in answers.items() if a.ok}
    if not answered:
        raise _nobody_answered(answers)
    body = _stack_body(stack, answers, answered, _ms_since(started))
    _record_history(data, body, answers)
    return jsonify(body)


def _check_classes(answers: Mapping[str, MemberAnswer], classes: list[str]) -> None:
    """A member trained on other classes, or sending other than probabilities, counts as failed, not as an answer."""
    for a in answers.values():
        if not a.ok:
            continue
        if set(a.body["probas"]) != set(classes):
            a.outcome = "bad_response"
            a.error = f"its classes {sorted(a.body['probas'])} differ from the stack's {classes}"
        elif not all(_is_probability(p) for p in a.body["probas"].values()):
            a.outcome = "bad_response"
            a.error = "its probas are not all numbers between 0 and 1"


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _member_headers() -> dict[str, str]:
    return {observability.REQUEST_ID_HEADER: observability.request_id(), "Content-Type": "application/octet-stream"}


def _stack_body(stack: Stack, answers: Mapping[str, MemberAnswer], answered: Mapping[str, MemberAnswer],
                latency_ms: float) -> dict:
    ensemble = stack.require_loaded()
    synthetic = any(a.body.get("synthetic_weights") for a in answered.values()) or bool(
        stack.manifest.get("synthetic_weights"))
    body = api.prediction_body(stack.combine(answered), ensemble.classes, model=GATEWAY,
                               model_version=stack.manifest["model_version"], synthetic=synthetic)
    failed = {name: a.error for name, a in answers.items() if not a.ok}
    body.update(members={name: a.summary() for name, a in answers.items()}, degraded=bool(failed), failed=failed,
                latency_ms=round(latency_ms, 1), request_id=observability.request_id())
    observability.add_log_fields(label=body["label"], degraded=body["degraded"])
    return body


def _nobody_answered(answers: Mapping[str, MemberAnswer]) -> Exception:
    reasons = "; ".join(f"{name}: {a.error}" for name, a in answers.items())
    if all(a.outcome in ("timeout", "deadline") for a in answers.values()):
        return DeadlineExceeded(f"No member answered in time ({reasons}).")
    return MembersUnavailable(f"No member could answer ({reasons}).")


def _log_members(answers: Mapping[str, MemberAnswer]) -> None:
    for name, a in answers.items():
        observability.MEMBER_CALLS.labels(name, a.outcome).inc()
        observability.MEMBER_LATENCY.labels(name).observe(a.latency_ms / 1000)
    observability.add_log_fields(
        members={name: {"outcome": a.outcome, "latency_ms": a.latency_ms} for name, a in answers.items()})


def _record_history(data: bytes, body: dict, answers: Mapping[str, MemberAnswer]) -> None:
    """Hand the prediction to the history store, which writes it in the background; never fails the request."""
    history = current_app.extensions.get("history")
    if history is None:
        return
    source = request.headers.get(SOURCE_HEADER, "api").lower()
    try:
        history.record({
            "ts": time.time(), "request_id": body["request_id"], "sha256": sha256_hex(data),
            "size_bytes": len(data), "image": data, "class_id": body["class_id"][0], "label": body["label"],
            "proba": body["proba"], "members": {name: a.summary() for name, a in answers.items()},
            "latency_ms": body["latency_ms"], "degraded": body["degraded"],
            "synthetic_weights": bool(body.get("synthetic_weights")),
            "source": source if source in SOURCES else "api",
        })
    except Exception:  # noqa: BLE001 - history is a side channel; the client still gets its answer
        log.exception("could not record the prediction in the history")


@bp.get("/v2/models/<name>")
def model_metadata(name: str) -> Response:
    if name != GATEWAY:
        raise NotFound(f"This service serves the model {GATEWAY!r}, not {name!r}; "
                       "ask each member at its own /v2/models/<name>.")
    return jsonify(current_app.extensions["stack"].metadata())


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
