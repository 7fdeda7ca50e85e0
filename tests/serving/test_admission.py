"""Bounded admission: running slots per kind of service, a queue bounded in size and by the deadline, and the
caller's own timeout (X-Expected-Timeout-Ms) shrinking that deadline. Real threads; no model needed."""
from __future__ import annotations

import math
import os
import threading
import time

import pytest
from flask import Flask

from shared.config import Settings
from shared.errors import Overloaded
from shared.gateway.runtime import GatewayRuntime
from shared.serving import admission
from shared.serving.learner import LearnerRuntime
from shared.serving.worker import ARRIVED_AT


def test_past_running_and_waiting_a_prediction_is_refused_at_once():
    gate = admission.Admission(running=1, waiting=1)
    gate.enter(time.monotonic() + 10)  # runs
    waiter = threading.Thread(target=gate.enter, args=(time.monotonic() + 10,))
    waiter.start()  # waits for the slot
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        gate.enter(time.monotonic() + 10)
    assert time.monotonic() - started < 0.05 and refused.value.code == "overloaded"
    gate.leave(0.5)  # the waiter gets the slot
    waiter.join(1)
    assert not waiter.is_alive()
    gate.leave(0.5)


def test_a_queued_prediction_waits_only_while_it_could_still_finish_in_time():
    gate = admission.Admission(running=1, waiting=4)
    gate.enter(time.monotonic() + 10)
    gate.typical_s = 1.0  # a prediction takes about a second
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        gate.enter(time.monotonic() + 1.3)  # 1.3 s left: it may wait 0.3 s for a slot, no longer
    waited = time.monotonic() - started
    assert 0.25 < waited < 0.6 and refused.value.code == "deadline_in_queue"
    assert gate.admitted == 1  # the refused one left the queue


def test_a_queued_prediction_waits_at_most_one_typical_prediction():
    """An admitted answer takes at most about twice a prediction's time: past that, a fast 503 instead."""
    gate = admission.Admission(running=1, waiting=4)
    gate.enter(time.monotonic() + 10)
    gate.typical_s = 1.4
    started = time.monotonic()
    with pytest.raises(Overloaded):
        gate.enter(time.monotonic() + 10)  # 10 s left, but no slot within 1.4 s
    assert 1.3 < time.monotonic() - started < 1.8
    gate.typical_s = 0.01  # fast predictions: still a second's grace, not 20 ms of jitter
    assert gate.max_wait_s(time.monotonic() + 10) == pytest.approx(1.0)


def test_freed_slots_go_to_the_waiters_in_arrival_order():
    gate = admission.Admission(running=1, waiting=8)
    gate.enter(time.monotonic() + 10)
    order: list[int] = []

    def wait_then_record(index: int) -> None:
        gate.enter(time.monotonic() + 10)
        order.append(index)

    waiters = []
    for index in range(4):
        waiters.append(threading.Thread(target=wait_then_record, args=(index,)))
        waiters[-1].start()
        time.sleep(0.05)  # queued one after another
    for _ in range(4):
        gate.leave(0.01)  # each finished prediction hands its slot on
        time.sleep(0.05)
    for waiter in waiters:
        waiter.join(1)
    assert order == [0, 1, 2, 3]
    gate.leave(0.01)
    assert gate.admitted == 0


@pytest.mark.parametrize("header, seconds", [
    ("2000", 2.0), ("150.5", 0.1505), (None, math.inf), ("", math.inf), ("soon", math.inf), ("0", math.inf),
    ("-5", math.inf), ("nan", math.inf), ("inf", math.inf),
])
def test_the_callers_timeout_header_is_read_in_seconds_and_ignored_when_meaningless(header, seconds):
    assert admission.caller_timeout_s(header) == pytest.approx(seconds)


def test_the_deadline_is_the_callers_timeout_when_that_is_shorter():
    app = Flask(__name__)
    app.config["SETTINGS"] = Settings.from_env().replace(deadline_s=15.0)
    arrived = {ARRIVED_AT: 100.0}  # what the worker stamps on the request as it arrives

    def deadline(**headers):
        with app.test_request_context("/", method="POST", headers=headers, environ_base=arrived):
            return admission.deadline_at()

    assert deadline(**{"X-Expected-Timeout-Ms": "2500"}) == pytest.approx(102.5)
    assert deadline(**{"X-Expected-Timeout-Ms": "60000"}) == pytest.approx(115.0)
    assert deadline() == pytest.approx(115.0)


def test_running_slots_follow_what_each_service_can_compute_at_once():
    settings = Settings.from_env().replace(threads=8, unbatched_running=2, gateway_running=4)
    assert LearnerRuntime("ocr_nb", settings).running_slots() == 2  # OCR reads one image at a time
    assert LearnerRuntime("clip_svm", settings).running_slots() == 8  # CLIP batches concurrent requests
    assert GatewayRuntime(settings).running_slots() == 4
    assert GatewayRuntime(settings.replace(threads=3)).running_slots() == 3  # never more than its threads
    cores = len(os.sched_getaffinity(0))  # unset: the host's cores, which the members share on one host
    assert GatewayRuntime(settings.replace(gateway_running=0)).running_slots() == min(8, cores)


def test_only_answered_predictions_set_the_typical_time():
    """A rejected input comes back in microseconds: it must not shrink the queue bound of real predictions."""
    gate = admission.Admission(running=2, waiting=2)
    gate.enter(time.monotonic() + 10)
    gate.leave(1.2)
    for _ in range(20):
        gate.enter(time.monotonic() + 10)
        gate.leave(None)  # 400, 413, 415 ...
    assert gate.typical_s == pytest.approx(1.2) and gate.admitted == 0


def test_a_wait_bound_of_zero_waits_until_the_deadline_allows():
    gate = admission.Admission(running=1, waiting=1, wait_predictions=0)
    gate.typical_s = 0.1
    assert gate.max_wait_s(time.monotonic() + 5.0) == pytest.approx(4.9, abs=0.05)
