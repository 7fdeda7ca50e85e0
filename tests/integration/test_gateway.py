"""The stacking gateway as a real gunicorn: combining, degraded mode, timeouts, request ids, logs."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import requests

from shared.members import GATEWAY, member_names
from shared.learning.meta_model import MetaEnsemble
from tests.integration.conftest import base_env, free_port, launch, stop_all
from tests.integration.test_members import check_prediction

MEMBERS = member_names()  # the member table's names, in table order
SPARE = "clip_logreg"  # the member the fault tests stop and kill (a private copy, never the shared one)


def log_lines(service) -> list[dict]:
    """The JSON request-log lines a service wrote."""
    lines = []
    for raw in service.log_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_happy_path_combines_all_three(stack, jpeg, trained_models):
    resp = requests.post(stack.gateway_url + "/", data=jpeg, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    check_prediction(body, GATEWAY)
    assert body["degraded"] is False and body["failed"] == {}
    assert set(body["members"]) == set(MEMBERS)
    for name, member in body["members"].items():
        assert member["ok"] is True and member["latency_ms"] > 0
        assert set(member["probas"]) == set(body["probas"])
    assert body["latency_ms"] >= max(m["latency_ms"] for m in body["members"].values())
    # the answer is the all-three meta-model applied to the members' own answers
    ensemble = MetaEnsemble.load(trained_models)
    expected = ensemble.combine({n: np.array([m["probas"][c] for c in ensemble.classes])
                                 for n, m in body["members"].items()})
    assert [body["probas"][c] for c in ensemble.classes] == pytest.approx(list(expected))


def test_gateway_metadata(stack):
    meta = requests.get(stack.gateway_url + "/v2/models/stacking", timeout=10).json()["parameters"]
    assert meta["name"] == GATEWAY and meta["ready"] is True
    assert meta["members"] == sorted(MEMBERS) and len(meta["meta_models"]) == 7
    assert meta["calibration"] is None  # trained without --calibration-data: the forests' votes
    assert len(meta["artifacts"]) == 7 and meta["synthetic"] is True
    assert meta["weights"] == {"ocr": "real", "clip": "synthetic"}


def test_request_id_travels_to_members_and_back(stack, jpeg):
    rid = f"it-{time.time_ns()}"
    resp = requests.post(stack.gateway_url + "/", data=jpeg, headers={"X-Request-ID": rid}, timeout=60)
    assert resp.headers["X-Request-ID"] == rid and resp.json()["request_id"] == rid
    time.sleep(0.3)  # let the members' log lines reach their files
    for name in MEMBERS:
        assert any(line.get("request_id") == rid for line in log_lines(stack.services[name])), name
    (line,) = [ln for ln in log_lines(stack.services[GATEWAY]) if ln.get("request_id") == rid]
    assert line["status"] == 200 and line["latency_ms"] > 0
    assert {n: m["outcome"] for n, m in line["members"].items()} == {n: "ok" for n in MEMBERS}
    assert all(m["latency_ms"] > 0 for m in line["members"].values())


def test_request_id_is_generated_when_absent(stack, jpeg):
    resp = requests.post(stack.gateway_url + "/", data=jpeg, timeout=60)
    assert len(resp.headers["X-Request-ID"]) == 32 and resp.json()["request_id"] == resp.headers["X-Request-ID"]


def test_history_records_the_prediction(stack, jpeg):
    resp = requests.post(stack.gateway_url + "/", data=jpeg, headers={"X-Source": "ui"}, timeout=60)
    rid = resp.json()["request_id"]
    for _ in range(50):
        items = requests.get(stack.gateway_url + "/v1/history", timeout=10).json()["items"]
        mine = [item for item in items if item["request_id"] == rid]
        if mine:
            break
        time.sleep(0.1)
    assert mine and mine[0]["source"] == "ui" and mine[0]["label"] == resp.json()["label"]


def test_gateway_process_never_loads_torch(stack):
    for pid in stack.services[GATEWAY].workers():
        with open(f"/proc/{pid}/maps") as fh:
            assert "libtorch" not in fh.read()


@pytest.fixture(scope="module")
def faulty(stack, trained_models, tiny_weights, tmp_path_factory):
    """A private SPARE member and a gateway using it (plus the shared stack's other two members)."""
    run_dir = tmp_path_factory.mktemp("faulty")
    env = base_env(trained_models, tiny_weights, run_dir)
    spare = launch(SPARE, env, run_dir)
    urls = {**stack.urls, SPARE: spare.url}
    member_urls = ",".join(f"{n}={urls[n]}" for n in MEMBERS)
    gw = launch(GATEWAY, {**env, "MEMBER_URLS": member_urls, "MEMBER_TIMEOUT_S": "2", "GATEWAY_DEADLINE_S": "4"},
                run_dir)
    # every member is this slow SPARE: nobody can answer while it is stopped
    all_spare = launch(GATEWAY, {**env, "MEMBER_URLS": ",".join(f"{n}={spare.url}" for n in MEMBERS),
                                 "MEMBER_TIMEOUT_S": "2", "GATEWAY_DEADLINE_S": "3"}, run_dir)
    try:
        for svc in (spare, gw, all_spare):
            svc.wait_ready()
        yield spare, gw, all_spare
    finally:
        stop_all([gw, all_spare, spare])


def test_stopped_member_times_out_and_the_rest_answer(faulty, jpeg):
    spare, gw, all_spare = faulty
    assert requests.post(gw.url + "/", data=jpeg, timeout=30).json()["degraded"] is False
    spare.signal(signal.SIGSTOP, workers_too=True)  # a real hung member: the process is frozen
    try:
        started = time.monotonic()
        resp = requests.post(gw.url + "/", data=jpeg, timeout=30)
        elapsed = time.monotonic() - started
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["degraded"] is True and set(body["failed"]) == {SPARE}
        assert "timeout" in body["failed"][SPARE] or "deadline" in body["failed"][SPARE]
        assert body["members"][SPARE]["ok"] is False
        assert set(body["probas"]) and body["members"]["ocr_nb"]["ok"] is True
        assert 2 <= elapsed < 4 + 1.5  # the member timeout, within the deadline

        started = time.monotonic()
        nobody = requests.post(all_spare.url + "/", data=jpeg, timeout=30)
        assert nobody.status_code == 504 and nobody.json()["error"]["code"] == "deadline_exceeded"
        assert time.monotonic() - started < 3 + 1.5
    finally:
        spare.signal(signal.SIGCONT, workers_too=True)


def test_killed_member_degrades_and_answers_fast(faulty, jpeg):
    spare, gw, _ = faulty
    for pid in spare.workers() + [spare.proc.pid]:
        spare_kill(pid)
    spare.proc.wait(10)
    started = time.monotonic()
    resp = requests.post(gw.url + "/", data=jpeg, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["degraded"] is True and list(body["failed"]) == [SPARE]
    assert "connection failed" in body["failed"][SPARE]
    assert time.monotonic() - started < 4  # refused connections fail at once: no waiting for the deadline
    check_prediction(body, GATEWAY)
    # the meta-model for the two that answered
    line = [ln for ln in log_lines(gw) if ln.get("request_id") == body["request_id"]][0]
    assert line["members"][SPARE]["outcome"] == "connection_error" and line["degraded"] is True


def spare_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_no_member_reachable_is_503(start_service, jpeg):
    nowhere = ",".join(f"{n}=http://127.0.0.1:{free_port()}" for n in MEMBERS)
    gw = start_service(GATEWAY, MEMBER_URLS=nowhere)
    resp = requests.post(gw.url + "/", data=jpeg, timeout=30)
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["code"] == "members_unavailable"
    assert all(name in error["message"] for name in MEMBERS)
