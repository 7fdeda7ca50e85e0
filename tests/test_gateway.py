"""The gateway without members: torch-free imports, typed timeouts, the member client against loopback sockets."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared.gateway import app as gateway
from shared.config import Settings

REPO = Path(__file__).resolve().parents[1]


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


def test_gateway_import_chain_has_no_torch():
    code = "import sys, shared.gateway.app, services.stacking.wsgi as w; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"MODELS_DIR": "/nonexistent", "HISTORY_ENABLED": "0", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_keep_torch_out_makes_torch_unimportable_in_that_process():
    code = ("from shared.gateway.app import keep_torch_out; keep_torch_out()\n"
            "try:\n    import torch\nexcept ImportError as e:\n    print('blocked', e.name)\n"
            "import shared.artifacts, shared.learning.meta_model, sys; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["blocked", "torch", "False"]


def test_timeouts_are_explicit_and_the_member_timeout_fits_the_deadline():
    t = gateway.Timeouts.from_settings(Settings(member_timeout_s=30, deadline_s=5))
    assert (t.member, t.deadline) == (5, 5) and t.connect <= t.member


def test_session_retries_connection_errors_once_and_nothing_else():
    retry = gateway.make_session(4).get_adapter("http://127.0.0.1").max_retries
    assert (retry.connect, retry.read, retry.status, retry.other) == (1, 0, 0, 0)


def test_refused_connection_is_a_connection_error_fast():
    client = gateway.MemberClient({"ocr_nb": f"http://127.0.0.1:{closed_port()}"}, gateway.Timeouts(1, 2, 3), 2)
    started = time.monotonic()
    answer = client.fan_out(b"x", {})["ocr_nb"]
    assert answer.outcome == "connection_error" and not answer.ok
    assert "connection failed" in answer.error
    assert time.monotonic() - started < 2


def test_silent_member_times_out_and_is_not_retried(silent):
    client = gateway.MemberClient({"clip_svm": silent.url}, gateway.Timeouts(1, 0.5, 3), 2)
    started = time.monotonic()
    answer = client.fan_out(b"x", {})["clip_svm"]
    assert answer.outcome == "timeout" and "0.5 s member timeout" in answer.error
    assert 0.4 < time.monotonic() - started < 2
    assert silent.accepted == 1  # a read timeout is never retried


def test_deadline_cuts_the_whole_fan_out(silent):
    urls = {"ocr_nb": silent.url, "clip_svm": silent.url, "clip_logreg": silent.url}
    client = gateway.MemberClient(urls, gateway.Timeouts(1, 5, 0.5), 2)
    started = time.monotonic()
    answers = client.fan_out(b"x", {})
    assert time.monotonic() - started < 1.5
    assert {a.outcome for a in answers.values()} == {"deadline"}
    assert all("0.5 s deadline" in a.error for a in answers.values())


def test_nobody_answered_is_504_on_timeouts_and_503_otherwise():
    late = {"a": gateway.MemberAnswer("a", "timeout", 1.0, error="slow")}
    down = {"a": gateway.MemberAnswer("a", "connection_error", 1.0, error="refused"),
            "b": gateway.MemberAnswer("b", "deadline", 1.0, error="late")}
    assert gateway._nobody_answered(late).status == 504
    err = gateway._nobody_answered(down)
    assert err.status == 503 and "a: refused" in err.message and "b: late" in err.message


def test_app_without_models_is_live_not_ready_and_checks_input_first(tmp_path):
    app = gateway.create_app({"MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3",
                              "LOAD_IN_BACKGROUND": False})
    client = app.test_client()
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and "manifest.json" in ready.get_json()["error"]
    assert client.post("/", data=b"not an image").status_code == 415  # input is checked before readiness
    assert client.get("/v2/models/clip_svm").status_code == 404


def test_members_sending_other_classes_or_non_probabilities_count_as_failed():
    def ok(probas):
        return gateway.MemberAnswer("m", "ok", 1.0, 200, {"probas": probas})

    answers = {"good": ok({"a": 0.25, "b": 0.75}), "other_classes": ok({"a": 0.5, "c": 0.5}),
               "text": ok({"a": "0.5", "b": 0.5}), "above_one": ok({"a": 1.5, "b": -0.5}),
               "nan": ok({"a": float("nan"), "b": 0.5})}
    gateway._check_classes(answers, ["a", "b"])
    assert answers["good"].ok
    assert "differ from the stack's" in answers["other_classes"].error
    for name in ("text", "above_one", "nan"):
        assert answers[name].outcome == "bad_response" and "not all numbers" in answers[name].error, name


def _answered(name: str, latency_ms: float, batch_wait_ms: float = 0.0) -> gateway.MemberAnswer:
    return gateway.MemberAnswer(name, "ok", latency_ms, 200, {"probas": {}}, batch_wait_ms=batch_wait_ms)


def test_slack_goes_to_clearly_faster_members_only_under_concurrent_load():
    planner = gateway.SlackPlanner(share=0.5, max_slack_ms=5000)
    for answer in (_answered("ocr_nb", 800), _answered("clip_svm", 150), _answered("clip_logreg", 500)):
        planner.observe(answer)
    assert planner.plan(concurrent=1) == {}, "a lone request would only wait"
    assert planner.plan(concurrent=4) == {"clip_svm": 400.0}  # clip_logreg is not twice as fast as ocr_nb
    assert gateway.SlackPlanner(share=0.0, max_slack_ms=5000).plan(concurrent=4) == {}


def test_slack_ignores_time_spent_held_and_is_capped():
    planner = gateway.SlackPlanner(share=0.5, max_slack_ms=300)
    planner.observe(_answered("ocr_nb", 2000))
    planner.observe(_answered("clip_svm", 1100, batch_wait_ms=1000))  # held 1 s of its 1.1 s: fast, not slow
    assert planner.plan(concurrent=2) == {"clip_svm": 300.0}


def test_a_failing_member_sets_nobodys_slack_until_it_answers_again():
    planner = gateway.SlackPlanner(share=0.5, max_slack_ms=5000)
    for answer in (_answered("ocr_nb", 900), _answered("clip_svm", 100), _answered("clip_logreg", 100)):
        planner.observe(answer)
    planner.observe(gateway.MemberAnswer("ocr_nb", "rejected", 5.0, 400))  # bad input: no news
    assert planner.plan(concurrent=2) == {"clip_svm": 450.0, "clip_logreg": 450.0}
    planner.observe(gateway.MemberAnswer("ocr_nb", "connection_error", 1.0, error="refused"))
    assert planner.plan(concurrent=2) == {}, "without ocr_nb the CLIP members are the slowest themselves"
    planner.observe(_answered("ocr_nb", 900))
    assert planner.plan(concurrent=2) == {"clip_svm": 450.0, "clip_logreg": 450.0}
