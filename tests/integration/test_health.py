"""Liveness and readiness on real gunicorns: live at once, ready only when loaded and warmed up, not while draining."""
from __future__ import annotations

import signal
import time

import pytest
import requests

from shared.members import GATEWAY
from tests.integration.conftest import SERVICES


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_live_and_ready(stack, name):
    live = requests.get(stack.urls[name] + "/v2/health/live", timeout=5)
    ready = requests.get(stack.urls[name] + "/v2/health/ready", timeout=5)
    assert live.status_code == 200 and ready.status_code == 200
    body = ready.json()
    assert body == {**body, "service": name, "ready": True, "loaded": True, "warmed_up": True, "draining": False}


def test_member_is_live_at_once_and_ready_only_after_loading(start_service, jpeg):
    # A prediction waits for the model at most its deadline (a restarted service's backlog); here a short one.
    member = start_service("clip_svm", wait=False, GATEWAY_DEADLINE_S="0.5")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(member.url + "/v2/health/live", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    # loading (torch, CLIP, the pipeline, one warm-up inference) runs in the background: not ready yet
    ready = requests.get(member.url + "/v2/health/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["warmed_up"] is False
    started = time.monotonic()
    early = requests.post(member.url + "/", data=jpeg, timeout=10)
    assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
    assert time.monotonic() - started < 3  # waited for the model no longer than its deadline
    member.wait_ready()
    assert requests.post(member.url + "/", data=jpeg, timeout=30).status_code == 200


def test_broken_models_stay_not_ready_with_the_reason(start_service, tmp_path):
    gw = start_service(GATEWAY, wait=False, MODELS_DIR=tmp_path / "empty")
    deadline = time.monotonic() + 120
    body: dict = {}
    while time.monotonic() < deadline and "error" not in body:
        try:
            body = requests.get(gw.url + "/v2/health/ready", timeout=2).json()
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    assert body["ready"] is False and "manifest.json" in body["error"]
    assert requests.get(gw.url + "/v2/health/live", timeout=2).status_code == 200


def test_sigterm_drains_not_ready_while_serving_then_stops(stack, start_service, jpeg):
    gw = start_service(GATEWAY, MEMBER_URLS=stack.member_urls(), DRAIN_SECONDS=3)
    gw.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    time.sleep(0.5)
    ready = requests.get(gw.url + "/v2/health/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert requests.get(gw.url + "/v2/health/live", timeout=5).status_code == 200
    assert requests.post(gw.url + "/", data=jpeg, timeout=30).status_code == 200  # still serving
    assert time.monotonic() - sent < 3, "the checks above must run inside the drain window"
    assert gw.proc.wait(timeout=30) == 0
    assert time.monotonic() - sent >= 3
    with pytest.raises(requests.ConnectionError):
        requests.get(gw.url + "/v2/health/live", timeout=2)
