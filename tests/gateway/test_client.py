"""MemberClient against loopback sockets: typed timeouts, one retry when nothing ran, outcomes classified."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from shared.config import Settings
from shared.gateway.client import (REPLICA_FAILURES, MemberClient, Outcome, Timeouts, _answer_from_response,
                                   _worth_retrying, make_session)

CLASSES = ["a", "b"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentMember:
    """Test double for a hung member: accepts TCP connections, reads, never answers; counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    member = SilentMember()
    yield member
    member.close()


def fake_response(status: int, body: object, headers: dict | None = None) -> requests.Response:
    """Test double: a requests.Response carrying `body` (JSON-encoded unless bytes)."""
    resp = requests.Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp.headers.update(headers or {})
    return resp


def test_timeouts_are_explicit_and_the_member_timeout_fits_the_deadline():
    t = Timeouts.from_settings(Settings(member_timeout_s=30, deadline_s=5))
    assert (t.member, t.deadline) == (5, 5) and t.connect <= t.member


def test_the_session_itself_never_retries():
    retry = make_session(4).get_adapter("http://127.0.0.1").max_retries
    assert retry.total == 0  # MemberClient.call decides where a second attempt goes


def test_refused_connection_is_a_connection_error_fast_and_tried_twice():
    client = MemberClient({"ocr_nb": f"http://127.0.0.1:{closed_port()}"}, Timeouts(1, 2, 3), 2)
    started = time.monotonic()
    answer = client.fan_out(b"x", {}, CLASSES)["ocr_nb"]
    assert answer.outcome == Outcome.CONNECTION_ERROR and not answer.ok
    assert "connection failed" in answer.error and answer.attempts == 2
    assert time.monotonic() - started < 2


def test_silent_member_times_out_and_is_not_retried(silent):
    client = MemberClient({"clip_svm": silent.url}, Timeouts(1, 0.5, 3), 2)
    started = time.monotonic()
    answer = client.fan_out(b"x", {}, CLASSES)["clip_svm"]
    assert answer.outcome == Outcome.TIMEOUT and "0.5 s member timeout" in answer.error
    assert 0.4 < time.monotonic() - started < 2
    assert silent.accepted == 1  # a read timeout is never retried


def test_deadline_cuts_the_whole_fan_out(silent):
    urls = {"ocr_nb": silent.url, "clip_svm": silent.url, "clip_logreg": silent.url}
    client = MemberClient(urls, Timeouts(1, 5, 0.5), 2)
    started = time.monotonic()
    answers = client.fan_out(b"x", {}, CLASSES)
    assert time.monotonic() - started < 1.5
    assert {a.outcome for a in answers.values()} == {Outcome.DEADLINE}
    assert all("0.5 s deadline" in a.error for a in answers.values())


def test_outcome_values_are_the_strings_metrics_and_logs_show():
    assert [o.value for o in Outcome] == ["ok", "rejected", "timeout", "deadline", "connection_error", "http_error",
                                          "bad_response", "circuit_open", "overloaded", "wrong_version"]
    assert json.dumps({"outcome": Outcome.BAD_RESPONSE}) == '{"outcome": "bad_response"}'


def test_an_answer_of_another_version_is_never_an_answer_and_a_refusal_is_tried_elsewhere():
    wrong = _answer_from_response("m", fake_response(200, {"probas": {"a": 0.25, "b": 0.75}, "model_version": "v1"}),
                                  3.0, CLASSES, version="v2")
    assert wrong.outcome == Outcome.BAD_RESPONSE and "'v1', not the 'v2'" in wrong.error
    right = _answer_from_response("m", fake_response(200, {"probas": {"a": 0.25, "b": 0.75}, "model_version": "v2"}),
                                  3.0, CLASSES, version="v2")
    assert right.ok
    refused = _answer_from_response("m", fake_response(409, {"error": {"code": "version_not_loaded", "message": "x"}}),
                                    3.0, CLASSES, version="v2")
    assert refused.outcome == Outcome.WRONG_VERSION and _worth_retrying(refused)
    assert refused.outcome not in REPLICA_FAILURES  # a replica still loading a version is not broken


def test_probabilities_over_the_stacks_classes_are_an_answer_with_the_batch_wait():
    answer = _answer_from_response("m", fake_response(200, {"probas": {"a": 0.25, "b": 0.75}, "label": "b",
                                                            "model_version": "v1"},
                                                      {"X-Batch-Wait-Ms": "12.5"}), 3.0, CLASSES)
    assert answer.ok and answer.batch_wait_ms == 12.5
    assert answer.summary() == {"ok": True, "latency_ms": 3.0, "probas": {"a": 0.25, "b": 0.75}, "label": "b",
                                "model_version": "v1"}


@pytest.mark.parametrize("probas, error", [
    ({"a": 0.5, "c": 0.5}, "its classes ['a', 'c'] differ from the stack's ['a', 'b']"),
    ({"a": "0.5", "b": 0.5}, "its probas are not all numbers between 0 and 1"),
    ({"a": 1.5, "b": -0.5}, "its probas are not all numbers between 0 and 1"),
    ({"a": float("nan"), "b": 0.5}, "its probas are not all numbers between 0 and 1"),
    ({"a": True, "b": 0.5}, "its probas are not all numbers between 0 and 1"),
])
def test_members_sending_other_classes_or_non_probabilities_count_as_failed(probas, error):
    answer = _answer_from_response("m", fake_response(200, {"probas": probas}), 1.0, CLASSES)
    assert answer.outcome == Outcome.BAD_RESPONSE and answer.error == error
    assert answer.summary() == {"ok": False, "latency_ms": 1.0, "error": error}


@pytest.mark.parametrize("status, body, outcome, error", [
    (415, {"error": {"code": "x", "message": "not an image"}}, Outcome.REJECTED, "HTTP 415: not an image"),
    (503, {"error": {"code": "not_ready", "message": "loading"}}, Outcome.HTTP_ERROR, "HTTP 503: loading"),
    (500, b"<html>oops</html>", Outcome.BAD_RESPONSE, "HTTP 500 with a non-JSON body"),
    (200, [0.5, 0.5], Outcome.BAD_RESPONSE, "HTTP 200 with a body that is not a JSON object"),
])
def test_every_other_answer_is_classified_in_the_same_place(status, body, outcome, error):
    answer = _answer_from_response("m", fake_response(status, body), 1.0, CLASSES)
    assert (answer.outcome, answer.error, answer.rejected) == (outcome, error, outcome == Outcome.REJECTED)
