"""MemberClient: the gateway's parallel, timed-out HTTP calls to the members, and what each member answered."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.config import Settings
from shared.gateway.slack import SlackPlanner
from shared.serving import api

# Member statuses that mean "this input is bad" (passed on to the client); any other error is the member's failure.
INPUT_REJECTED = (400, 413, 415, 422)


class Outcome(StrEnum):
    """How one member call ended; the value is what metrics, logs and JSON show."""

    OK = "ok"
    REJECTED = "rejected"  # the member refused the input (4xx): the client's fault, not the member's
    TIMEOUT = "timeout"  # no answer within the member timeout
    DEADLINE = "deadline"  # no answer before the whole request's deadline
    CONNECTION_ERROR = "connection_error"
    HTTP_ERROR = "http_error"
    BAD_RESPONSE = "bad_response"  # answered, but not with probabilities over the stack's classes


@dataclass(frozen=True)
class Timeouts:
    """Explicit time limits of one fan-out, in seconds."""

    connect: float
    member: float  # per member: the read timeout of its HTTP call
    deadline: float  # the whole request, all members together

    @classmethod
    def from_settings(cls, settings: Settings) -> "Timeouts":
        """The member timeout, never longer than the deadline; connecting never longer than 2 s."""
        member = min(settings.member_timeout_s, settings.deadline_s)
        return cls(connect=min(2.0, member), member=member, deadline=settings.deadline_s)


@dataclass
class MemberAnswer:
    """One member's outcome: ok with probabilities, rejected the input (4xx), or failed."""

    name: str
    outcome: Outcome
    latency_ms: float
    status: int | None = None
    body: dict = field(default_factory=dict)
    error: str | None = None
    batch_wait_ms: float = 0.0  # how long the member held it for batch company (its X-Batch-Wait-Ms)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK

    @property
    def rejected(self) -> bool:
        return self.outcome == Outcome.REJECTED

    def summary(self) -> dict:
        """What the response's `members` and the history record carry for this member."""
        out: dict[str, Any] = {"ok": self.ok, "latency_ms": self.latency_ms}
        if self.ok:
            out.update(probas=self.body.get("probas"), label=self.body.get("label"))
        else:
            out["error"] = self.error
        return out


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

    @classmethod
    def from_settings(cls, settings: Settings) -> "MemberClient":
        """A client for MEMBER_URLS, one connection per gunicorn thread and member."""
        return cls(settings.member_url_map(), Timeouts.from_settings(settings), pool_size=settings.threads,
                   slack_share=settings.gateway_slack_share)

    def fan_out(self, data: bytes, headers: Mapping[str, str], classes: Sequence[str]) -> dict[str, MemberAnswer]:
        """Ask every member at once; whoever has not answered by the deadline counts as failed.

        `classes`: the stack's classes; an answer over other classes is a bad response, not an answer.
        """
        started = time.perf_counter()
        concurrent = self._enter()
        try:
            slack = self.slack.plan(concurrent)
            futures = {self.pool.submit(self.call, name, data, _with_slack(headers, slack.get(name)), classes): name
                       for name in self.urls}
            done, _late = wait(futures, timeout=self.timeouts.deadline)
        finally:
            self._leave()
        answers = {}
        for future, name in futures.items():
            answers[name] = future.result() if future in done else self._late(future, name, started)
            self.slack.observe(answers[name])
        return answers

    def call(self, name: str, data: bytes, headers: Mapping[str, str], classes: Sequence[str]) -> MemberAnswer:
        """POST the bytes to one member and classify what came back."""
        started = time.perf_counter()
        try:
            resp = self.session.post(self.urls[name] + "/", data=data, headers=dict(headers),
                                     timeout=(self.timeouts.connect, self.timeouts.member))
        except requests.Timeout:
            return MemberAnswer(name, Outcome.TIMEOUT, _ms_since(started),
                                error=f"no answer within the {self.timeouts.member:g} s member timeout")
        except requests.ConnectionError as exc:
            return MemberAnswer(name, Outcome.CONNECTION_ERROR, _ms_since(started),
                                error=f"connection failed: {_short(exc)}")
        return _answer_from_response(name, resp, _ms_since(started), classes)

    def _enter(self) -> int:
        with self._in_flight_lock:
            self._in_flight += 1
            return self._in_flight

    def _leave(self) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1

    def _late(self, future: Any, name: str, started: float) -> MemberAnswer:
        future.cancel()
        return MemberAnswer(name, Outcome.DEADLINE, _ms_since(started),
                            error=f"no answer within the {self.timeouts.deadline:g} s deadline")


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


def _answer_from_response(name: str, resp: requests.Response, latency_ms: float,
                          classes: Sequence[str]) -> MemberAnswer:
    """The one place a member's HTTP answer becomes an Outcome."""
    status = resp.status_code
    try:
        body = resp.json()
    except ValueError:
        return MemberAnswer(name, Outcome.BAD_RESPONSE, latency_ms, status, error=f"HTTP {status} with a non-JSON body")
    if not isinstance(body, dict):
        return MemberAnswer(name, Outcome.BAD_RESPONSE, latency_ms, status,
                            error=f"HTTP {status} with a body that is not a JSON object")
    if status == 200 and isinstance(body.get("probas"), dict):
        problem = _probas_problem(body["probas"], classes)
        if problem:  # a member trained on other classes, or sending other than probabilities, has not answered
            return MemberAnswer(name, Outcome.BAD_RESPONSE, latency_ms, status, body, error=problem)
        return MemberAnswer(name, Outcome.OK, latency_ms, status, body, batch_wait_ms=_batch_wait_ms(resp))
    error = body.get("error")
    message = error.get("message", "") if isinstance(error, dict) else ""
    outcome = Outcome.REJECTED if status in INPUT_REJECTED else Outcome.HTTP_ERROR
    return MemberAnswer(name, outcome, latency_ms, status, body, error=f"HTTP {status}: {message}".strip())


def _probas_problem(probas: Mapping[str, Any], classes: Sequence[str]) -> str | None:
    """Why these probabilities cannot be stacked, or None."""
    if set(probas) != set(classes):
        return f"its classes {sorted(probas)} differ from the stack's {list(classes)}"
    if not all(_is_probability(p) for p in probas.values()):
        return "its probas are not all numbers between 0 and 1"
    return None


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _with_slack(headers: Mapping[str, str], slack_ms: float | None) -> Mapping[str, str]:
    return {**headers, api.SLACK_HEADER: f"{slack_ms:.1f}"} if slack_ms else headers


def _batch_wait_ms(resp: requests.Response) -> float:
    try:
        return max(0.0, float(resp.headers.get(api.BATCH_WAIT_HEADER, 0.0)))
    except ValueError:
        return 0.0


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
