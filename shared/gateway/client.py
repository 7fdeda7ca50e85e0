"""MemberClient: the gateway's parallel, timed-out HTTP calls to the members, and what each member answered.

Each member is a `ReplicaPool` of replicas (balancer.py): an attempt goes to the least busy replica, a connection
error or a 503 is retried once on another replica (or on a fresh connection to the only one, unless it said it is
full: prediction is idempotent), and a member whose replicas are all ejected is skipped at once (its circuit is
open). A full replica (503 overloaded) is busy, not broken: it counts as alive, never towards ejecting it.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping, Sequence

import requests
from flask import Flask, current_app
from requests.adapters import HTTPAdapter

from shared.config import Settings
from shared.errors import Overloaded, VersionNotLoaded
from shared.gateway.balancer import BreakerPolicy, ReplicaPool, Pick
from shared.gateway.slack import SlackPlanner
from shared.serving import api, observability

_EXTENSION = "members"  # this gateway's MemberClient, in app.extensions
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
    CIRCUIT_OPEN = "circuit_open"  # not asked: every replica is ejected after consecutive failures
    OVERLOADED = "overloaded"  # the replica is up but full (503 overloaded): tried elsewhere, never ejected for it
    WRONG_VERSION = "wrong_version"  # the replica does not hold the version asked for (409): tried elsewhere


# Outcomes that count against a replica (towards ejecting it); OK, REJECTED (the input's fault) and OVERLOADED
# (busy, not broken: ejecting it would only pile its share onto the others) do not.
REPLICA_FAILURES = (Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.HTTP_ERROR, Outcome.BAD_RESPONSE)
# Answers worth one more attempt elsewhere: nothing ran (refused, reset, closed), or the replica is not ready,
# draining or full (503).
RETRY_STATUSES = (503,)


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
    replica: str = ""  # the address that gave this answer ("" when none was asked)
    attempts: int = 0
    retry_after: int | None = None  # a full replica's Retry-After (s), passed on when every member was full

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
            out.update(probas=self.body.get("probas"), label=self.body.get("label"),
                       model_version=self.body.get("model_version"))
        else:
            out["error"] = self.error
        if self.replica:
            out["replica"] = self.replica
        return out


class MemberClient:
    """Pooled HTTP calls to the members' replicas: parallel, timed out, retried once elsewhere when nothing ran."""

    def __init__(self, urls: Mapping[str, str], timeouts: Timeouts, pool_size: int, slack_share: float = 0.0,
                 policy: BreakerPolicy | None = None):
        self.urls = dict(urls)
        self.timeouts = timeouts
        self.pools = {name: ReplicaPool(name, url, policy or BreakerPolicy()) for name, url in self.urls.items()}
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
        policy = BreakerPolicy(failures=settings.breaker_failures, cooloff_s=settings.breaker_cooloff_s,
                               resolve_every_s=settings.resolve_every_s)
        return cls(settings.member_url_map(), Timeouts.from_settings(settings), pool_size=settings.threads,
                   slack_share=settings.gateway_slack_share, policy=policy)

    def fan_out(self, data: bytes, headers: Mapping[str, str], classes: Sequence[str],
                deadline_at: float | None = None, version: str | None = None) -> dict[str, MemberAnswer]:
        """Ask every member at once; whoever has not answered by the deadline counts as failed.

        `classes`: the stack's classes; an answer over other classes is a bad response, not an answer.
        `deadline_at`: time.monotonic() by which the whole request must be answered (default: deadline from now).
        `version`: the model version every member must answer with (sent as X-Model-Version); an answer of
        another version is a bad response, never stacked.
        """
        started = time.perf_counter()
        deadline_at = deadline_at if deadline_at is not None else time.monotonic() + self.timeouts.deadline
        if version is not None:
            headers = {**headers, api.MODEL_VERSION_HEADER: version}
        concurrent = self._enter()
        try:
            slack = self.slack.plan(concurrent)
            futures = {self.pool.submit(self.call, name, data, _with_slack(headers, slack.get(name)), classes,
                                        deadline_at): name
                       for name in self.urls}
            done, _late = wait(futures, timeout=max(0.0, deadline_at - time.monotonic()))
        finally:
            self._leave()
        answers = {}
        for future, name in futures.items():
            answers[name] = future.result() if future in done else self._late(future, name, started)
            self.slack.observe(answers[name])
        return answers

    def call(self, name: str, data: bytes, headers: Mapping[str, str], classes: Sequence[str],
             deadline_at: float | None = None) -> MemberAnswer:
        """POST the bytes to one member's least busy replica; once more elsewhere if nothing ran there."""
        started = time.perf_counter()
        deadline_at = deadline_at if deadline_at is not None else time.monotonic() + self.timeouts.deadline
        pool = self.pools[name]
        tried: list[str] = []
        answer: MemberAnswer | None = None
        for _attempt in range(2):
            remaining = deadline_at - time.monotonic()
            if remaining <= 0.01:
                break
            # Another replica if there is one; else the same one again, on a fresh connection (not when it said it
            # is full: it would only say so again).
            again = answer is not None and answer.outcome != Outcome.OVERLOADED
            pick = pool.pick(exclude=tried) or (pool.pick() if again else None)
            if pick is None:
                break
            tried.append(pick.replica.address)
            answer = self._attempt(name, pick, data, headers, classes, min(self.timeouts.member, remaining))
            if not _worth_retrying(answer):
                break
        if answer is None:  # not one replica could be asked
            observability.MEMBER_BREAKER_SKIPS.labels(name).inc()
            answer = MemberAnswer(name, Outcome.CIRCUIT_OPEN, 0.0, error=pool.open_reason())
        answer.latency_ms, answer.attempts = _ms_since(started), len(tried)
        return answer

    def _attempt(self, name: str, pick: Pick, data: bytes, headers: Mapping[str, str], classes: Sequence[str],
                 read_timeout: float) -> MemberAnswer:
        """One POST to one replica; its outcome is counted against that replica."""
        started = time.perf_counter()
        address = pick.replica.address
        try:
            # The replica learns how long this attempt waits for it, and never queues it for longer.
            headers = {**headers, api.EXPECTED_TIMEOUT_HEADER: f"{read_timeout * 1000:.0f}"}
            resp = self.session.post(pick.replica.base_url + "/", data=data, headers=headers,
                                     timeout=(min(self.timeouts.connect, read_timeout), read_timeout))
            answer = _answer_from_response(name, resp, _ms_since(started), classes,
                                           headers.get(api.MODEL_VERSION_HEADER))
        except requests.ConnectionError as exc:  # first: ConnectTimeout is both, and nothing ran (a dead replica)
            answer = MemberAnswer(name, Outcome.CONNECTION_ERROR, _ms_since(started),
                                  error=f"connection failed (to {address}): {_short(exc)}")
        except requests.Timeout:
            answer = MemberAnswer(name, Outcome.TIMEOUT, _ms_since(started),
                                  error=f"no answer within the {read_timeout:.3g} s member timeout (from {address})")
        answer.replica = address
        pick_failed = answer.outcome in REPLICA_FAILURES
        pool = self.pools[name]
        pool.release(pick, failed=pick_failed, error=answer.error or "",
                     connection_error=answer.outcome == Outcome.CONNECTION_ERROR)
        observability.REPLICA_CALLS.labels(name, address, answer.outcome.value).inc()
        return answer

    def replicas(self) -> dict[str, list[dict]]:
        """{member: its replicas' states}, as the balancer sees them now."""
        return {name: pool.snapshot() for name, pool in self.pools.items()}

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


def init_app(app: Flask, settings: Settings) -> MemberClient:
    """Give the gateway a client for the members (read back with current_member_client)."""
    client = MemberClient.from_settings(settings)
    app.extensions[_EXTENSION] = client
    return client


def current_member_client() -> MemberClient:
    """The current gateway's client for the members."""
    return current_app.extensions[_EXTENSION]


def make_session(pool_size: int) -> requests.Session:
    """A Session with a connection pool per replica address; retries are MemberClient.call's, not urllib3's."""
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(1, pool_size), max_retries=0)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _answer_from_response(name: str, resp: requests.Response, latency_ms: float,
                          classes: Sequence[str], version: str | None = None) -> MemberAnswer:
    """The one place a member's HTTP answer becomes an Outcome; `version`: the one it had to answer with."""
    status = resp.status_code
    try:
        body = resp.json()
    except ValueError:
        return MemberAnswer(name, Outcome.BAD_RESPONSE, latency_ms, status, error=f"HTTP {status} with a non-JSON body")
    if not isinstance(body, dict):
        return MemberAnswer(name, Outcome.BAD_RESPONSE, latency_ms, status,
                            error=f"HTTP {status} with a body that is not a JSON object")
    if status == 200 and isinstance(body.get("probas"), dict):
        problem = _probas_problem(body["probas"], classes) or _version_problem(body, version)
        if problem:  # a member trained on other classes, or sending other than probabilities, has not answered
            return MemberAnswer(name, Outcome.BAD_RESPONSE, latency_ms, status, body, error=problem)
        return MemberAnswer(name, Outcome.OK, latency_ms, status, body, batch_wait_ms=_batch_wait_ms(resp))
    error = body.get("error")
    message = error.get("message", "") if isinstance(error, dict) else ""
    code = error.get("code") if isinstance(error, dict) else None
    outcome = (Outcome.REJECTED if status in INPUT_REJECTED else
               Outcome.OVERLOADED if status == 503 and code in Overloaded.CODES else
               Outcome.WRONG_VERSION if status == 409 and code == VersionNotLoaded.code else Outcome.HTTP_ERROR)
    retry_after = resp.headers.get("Retry-After", "")
    return MemberAnswer(name, outcome, latency_ms, status, body, error=f"HTTP {status}: {message}".strip(),
                        retry_after=int(retry_after) if retry_after.isdigit() else None)


def _worth_retrying(answer: MemberAnswer) -> bool:
    """Nothing ran (refused, reset, closed), or the replica could not take it (503): idempotent, so ask again.
    A timeout is not retried: the member may still be working on it and the deadline is mostly spent."""
    return answer.outcome in (Outcome.CONNECTION_ERROR, Outcome.OVERLOADED, Outcome.WRONG_VERSION) or (
        answer.outcome == Outcome.HTTP_ERROR and answer.status in RETRY_STATUSES)


def _probas_problem(probas: Mapping[str, Any], classes: Sequence[str]) -> str | None:
    """Why these probabilities cannot be stacked, or None."""
    if set(probas) != set(classes):
        return f"its classes {sorted(probas)} differ from the stack's {list(classes)}"
    if not all(_is_probability(p) for p in probas.values()):
        return "its probas are not all numbers between 0 and 1"
    return None


def _version_problem(body: Mapping[str, Any], version: str | None) -> str | None:
    """Why an answer is not of the version asked for, or None: versions are never mixed in one stack."""
    if version is None or body.get("model_version") == version:
        return None
    return f"it answered with version {body.get('model_version')!r}, not the {version!r} asked for"


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
