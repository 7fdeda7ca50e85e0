"""Balancing across a member's replicas: least outstanding, DNS refresh, ejection with half-open probes, retries on
another replica; against real loopback HTTP servers on 127.0.0.x (test doubles of a member's replicas)."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.gateway.balancer import BreakerPolicy, ReplicaPool, ReplicaState
from shared.gateway.client import MemberClient, Outcome, Timeouts

CLASSES = ["a", "b"]
BODY = json.dumps({"probas": {"a": 0.25, "b": 0.75}, "label": "b"}).encode()
FULL = json.dumps({"error": {"code": "overloaded", "message": "Too busy: 2 predictions running and 4 waiting."}}).encode()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_of(addresses, *, prober=lambda url, timeout: True, clock=None, failures=3):
    resolved = {"list": list(addresses)}
    pool = ReplicaPool("ocr_nb", "http://ocr_nb:5000", BreakerPolicy(failures=failures, cooloff_s=5.0),
                      resolver=lambda host, port: list(resolved["list"]), prober=prober, clock=clock or FakeClock())
    return pool, resolved


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_least_outstanding_spreads_concurrent_requests_across_replicas():
    pool, _ = pool_of(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    picks = [pool.pick() for _ in range(3)]
    assert sorted(p.replica.address for p in picks) == ["10.0.0.1:5000", "10.0.0.2:5000", "10.0.0.3:5000"]
    pool.release(picks[1], failed=False)
    assert pool.pick().replica.address == picks[1].replica.address  # the only one with nothing outstanding


def test_replicas_follow_dns_and_a_failed_lookup_keeps_the_last_ones():
    clock = FakeClock()
    pool, resolved = pool_of(["10.0.0.1", "10.0.0.2"], clock=clock)
    pool.pick()
    resolved["list"] = ["10.0.0.2", "10.0.0.3"]  # one task replaced, as after a scale or a restart
    clock.now += 6
    pool.pick()
    assert sorted(r["address"] for r in pool.snapshot()) == ["10.0.0.2:5000", "10.0.0.3:5000"]
    pool.resolver = lambda host, port: (_ for _ in ()).throw(socket.gaierror("temporary failure"))
    clock.now += 6
    assert pool.pick() is not None and len(pool.snapshot()) == 2


def test_consecutive_failures_eject_then_readiness_and_one_trial_close_it_again():
    clock, ready = FakeClock(), {"ok": False}
    pool, _ = pool_of(["10.0.0.1"], clock=clock, prober=lambda url, timeout: ready["ok"])
    for _ in range(3):
        pool.release(pool.pick(), failed=True, error="timeout")
    assert pool.breaker_open and pool.pick() is None  # one replica: ejecting it opens the member's breaker
    assert "circuit open: 10.0.0.1:5000 ejected after 3 failures (timeout)" in pool.open_reason()
    clock.now += 5.1  # cool-off over: a background readiness probe, which fails -> ejected again, twice as long
    assert pool.pick() is None
    assert wait_until(lambda: not pool.replicas["10.0.0.1:5000"].probing)
    replica = pool.replicas["10.0.0.1:5000"]
    assert replica.state == ReplicaState.OPEN and replica.cooloff_s == 10.0
    ready["ok"] = True
    clock.now += 10.1
    pool.pick()
    assert wait_until(lambda: replica.state == ReplicaState.HALF_OPEN)
    trial = pool.pick()
    assert trial.trial and pool.pick() is None  # exactly one trial request while half-open
    pool.release(trial, failed=False)
    assert replica.state == ReplicaState.CLOSED and not pool.breaker_open


def test_a_failed_trial_ejects_at_once():
    clock = FakeClock()
    pool, _ = pool_of(["10.0.0.1"], clock=clock, failures=1)
    pool.release(pool.pick(), failed=True)
    clock.now += 5.1
    pool.pick()
    replica = pool.replicas["10.0.0.1:5000"]
    assert wait_until(lambda: replica.state == ReplicaState.HALF_OPEN)
    pool.release(pool.pick(), failed=True)
    assert replica.state == ReplicaState.OPEN and replica.cooloff_s == 10.0


# --- real servers on loopback ------------------------------------------------------------------------------
class Replica:
    """Test double of one member replica: answers probabilities on 127.0.0.<n>:<port>, counts what it served."""

    def __init__(self, host: str, port: int, delay: float = 0.0):
        served = self.served = []
        state = self.state = {"dead": False, "full": False}
        self.expected_timeouts: list[str | None] = []
        seen_timeouts = self.expected_timeouts

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                if state["dead"]:  # its process is gone: open connections end without an answer
                    self.close_connection = True
                    return
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen_timeouts.append(self.headers.get("X-Expected-Timeout-Ms"))
                body, status = (FULL, 503) if state["full"] else (BODY, 200)  # full: what admission.py answers
                time.sleep(delay)
                if status == 200:
                    served.append(time.monotonic())
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "3")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.state["dead"] = True
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def two_replicas():
    port = free_port()
    replicas = [Replica("127.0.0.2", port), Replica("127.0.0.3", port)]
    client = MemberClient({"ocr_nb": f"http://ocr_nb:{port}"}, Timeouts(1, 2, 5), 4)
    client.pools["ocr_nb"].resolver = lambda host, p: ["127.0.0.2", "127.0.0.3"]  # what dnsrr answers
    yield client, replicas
    for replica in replicas:
        try:
            replica.stop()
        except OSError:
            pass


def test_requests_are_spread_and_a_dead_replica_costs_no_answer(two_replicas):
    client, (first, second) = two_replicas
    for _ in range(10):
        assert client.fan_out(b"x", {}, CLASSES)["ocr_nb"].ok
    assert first.served and second.served  # both replicas took traffic
    first.stop()  # one replica dies: every answer still comes back, from the other, retried there at once
    answers = [client.fan_out(b"x", {}, CLASSES)["ocr_nb"] for _ in range(30)]  # the dead one picked >= 3 times
    assert all(a.ok for a in answers)
    assert {a.replica for a in answers[-5:]} == {f"127.0.0.3:{second.server.server_port}"}
    states = {r["address"]: r["state"] for r in client.replicas()["ocr_nb"]}
    assert states[f"127.0.0.2:{second.server.server_port}"] == "open"  # ejected, its breaker open


def test_every_replica_down_is_a_fast_circuit_open_answer(two_replicas):
    client, replicas = two_replicas
    for replica in replicas:
        replica.stop()
    for _ in range(4):
        client.fan_out(b"x", {}, CLASSES)
    started = time.monotonic()
    answer = client.fan_out(b"x", {}, CLASSES)["ocr_nb"]
    assert answer.outcome == Outcome.CIRCUIT_OPEN and answer.error.startswith("circuit open:")
    assert time.monotonic() - started < 0.1


class OneAnswerPerConnection:
    """Test double of a replica that closes a kept-alive connection as the next request arrives on it (the race
    a stale pooled connection loses): each connection gets one answer, then is closed unanswered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
            conn.recv(65536)  # the next request on this connection: closed without an answer


def test_a_reset_pooled_connection_is_retried_once_on_a_fresh_one():
    member = OneAnswerPerConnection()
    client = MemberClient({"clip_svm": member.url}, Timeouts(1, 2, 5), 1)
    answers = [client.fan_out(b"x", {}, CLASSES)["clip_svm"] for _ in range(4)]
    assert all(a.ok for a in answers)
    assert [a.attempts for a in answers][1:] == [2, 2, 2]  # each later one met a dead pooled connection first
    member.sock.close()


def test_a_connect_timeout_is_a_connection_error_retried_on_another_replica(two_replicas):
    """A killed task's address answers no SYN at all (seen on Swarm's overlay): the connect times out; nothing
    ran there, so the call is retried on the other replica, not reported as a member timeout."""
    client, (first, second) = two_replicas
    port = second.server.server_port
    client.pools["ocr_nb"].resolver = lambda host, p: ["10.255.255.1", "127.0.0.3"]  # blackholed + a live one
    client.timeouts = type(client.timeouts)(0.2, 2, 5)
    answers = [client.fan_out(b"x", {}, CLASSES)["ocr_nb"] for _ in range(8)]
    assert all(a.ok for a in answers), [a.error for a in answers]
    assert {a.replica for a in answers} == {f"127.0.0.3:{port}"}


def test_a_full_replica_is_asked_elsewhere_and_never_ejected_for_it(two_replicas):
    """503 overloaded means busy, not broken: the call goes to the other replica, and the full one stays in."""
    client, (first, second) = two_replicas
    first.state["full"] = True
    answers = []
    # Ties go to a random replica: ask until the full one was picked as often as ejection would take.
    while len(first.expected_timeouts) < 3 and len(answers) < 100:
        answers.append(client.fan_out(b"x", {}, CLASSES)["ocr_nb"])
    assert len(first.expected_timeouts) >= 3
    assert all(a.ok for a in answers), [a.error for a in answers]
    assert not first.served and len(second.served) == len(answers)
    assert {r["state"] for r in client.replicas()["ocr_nb"]} == {"closed"}
    first.state["full"] = False
    for _ in range(6):
        client.fan_out(b"x", {}, CLASSES)
    assert first.served  # still in rotation


def test_a_lone_full_replica_is_not_asked_twice_and_tells_its_caller_how_long_it_waits():
    port = free_port()
    replica = Replica("127.0.0.1", port)
    replica.state["full"] = True
    try:
        client = MemberClient({"ocr_nb": f"http://127.0.0.1:{port}"}, Timeouts(1, 2, 5), 4)
        answer = client.fan_out(b"x", {}, CLASSES)["ocr_nb"]
        assert answer.outcome == Outcome.OVERLOADED and answer.attempts == 1 and answer.retry_after == 3
        assert answer.error.startswith("HTTP 503: Too busy")
        assert replica.expected_timeouts == ["2000"]  # the member timeout, in ms: the replica never queues longer
    finally:
        replica.stop()
