"""Model versions through real gunicorns: one version per answer, activate and roll back under load with nothing
dropped and nothing mixed, pinning (raw header and the inference protocol), a failed load leaving the old version,
a killed member coming back on the active version, the canary, admin keys."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from shared import repository
from shared.members import GATEWAY
from tests.integration.conftest import (MEMBERS, REPO, base_env, jpeg_bytes, launch, start_stack, stop_all,
                                        wait_for_metric)

ADMIN = "admin-key-for-tests"


@pytest.fixture(scope="module")
def versions(trained_models: Path, trained_settings, tiny_weights: Path, tmp_path_factory) -> dict:
    """A repository: v1 (the session's model, as a version), v2 (another seed: other meta-models, the same
    extractors), broken (trained, then one learner file changed)."""
    from shared.learning.training import train

    root = tmp_path_factory.mktemp("repository") / "models"
    csv = trained_models.parent / "screenshots30.csv"

    def trained(seed: int):
        return repository.publish(root, lambda folder: train(csv, folder, tiny_weights, trained_settings, folds=3,
                                                              seed=seed))

    v1 = repository.publish(root, lambda folder: shutil.copytree(trained_models, folder))
    v2, broken = trained(1), trained(2)
    tampered = broken.path / "learners" / "clip_logreg.skops"
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    assert repository.read_state(root).active == v1.version  # the first version published is active
    return {"root": root, "v1": v1.version, "v2": v2.version, "broken": broken.version, "tampered": tampered}


@pytest.fixture(scope="module")
def vstack(versions: dict, tiny_weights: Path, tmp_path_factory):
    run = tmp_path_factory.mktemp("vstack")
    started = start_stack(versions["root"], tiny_weights, run,
                          extra_env={"MODEL_POLL_S": "0.2", "BIND_HOST": "127.0.0.1", "MODEL_LOAD_TIMEOUT_S": "120"})
    yield started
    stop_all(started.services.values())


def _post(url: str, data: bytes, **headers: str) -> requests.Response:
    return requests.post(url + "/", data=data, headers={"Content-Type": "application/octet-stream", **headers},
                         timeout=30)


def _load(url: str, version: str, activate: bool = True, **headers: str) -> requests.Response:
    return requests.post(f"{url}/v2/repository/models/{GATEWAY}/load",
                         json={"parameters": {"version": version, "activate": activate}}, headers=headers, timeout=180)


def _entries(url: str) -> list[dict]:
    return requests.get(url + "/v2/repository/index", timeout=10).json()


def _stack_active(url: str) -> str:
    return next(e["version"] for e in _entries(url) if e["name"] == GATEWAY and e["active"] and "replica" not in e)


def test_every_answer_names_one_version_and_members_refuse_others(vstack, versions, jpeg):
    body = _post(vstack.gateway_url, jpeg).json()
    assert body["model_version"] == versions["v1"]
    assert {m["model_version"] for m in body["members"].values()} == {versions["v1"]}
    member = vstack.urls[MEMBERS[0]]
    refused = _post(member, jpeg, **{"X-Model-Version": "0123456789ab"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_not_loaded"
    assert versions["v1"] in refused.json()["error"]["message"]  # says what it holds
    assert wait_for_metric(member, f'classifier_version_refusals_total{{service="{MEMBERS[0]}"}} 1.0')
    assert requests.get(vstack.gateway_url + "/v2/", timeout=5).status_code == 200  # the path as OIP writes it


def test_activate_and_roll_back_under_load_drop_nothing_and_never_mix(vstack, versions):
    """4 keep-alive clients post without pause while v2 is activated through the API, then rolled back with the
    CLI: every answer is a 200 whose members all answered with the answer's version."""
    url, v1, v2 = vstack.gateway_url, versions["v1"], versions["v2"]
    stop, answers, lock = threading.Event(), [], threading.Lock()

    def client(seed: int) -> None:
        session, data = requests.Session(), jpeg_bytes(color=(40 * seed, 90, 200 - 30 * seed))
        while not stop.is_set():
            try:
                resp = session.post(url + "/", data=data, timeout=30)
                body = resp.json()
                got = (resp.status_code, body.get("model_version"), body.get("degraded"),
                       {m.get("model_version") for m in body.get("members", {}).values()})
            except (requests.RequestException, ValueError) as exc:
                got = (0, repr(exc), True, set())
            with lock:
                answers.append(got)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        loaded = _load(url, v2)
        switch_s = time.monotonic() - started
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["active"] == v2 and loaded.json()["gateway_active"] == v2
        time.sleep(2)
        rolled = subprocess.run([sys.executable, "-m", "shared", "models", "rollback", "--models",
                                 str(versions["root"]), "--gateway", url], cwd=REPO, capture_output=True, text=True,
                                timeout=180)
        assert rolled.returncode == 0, rolled.stderr
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(35)
    statuses = Counter(a[0] for a in answers)
    by_version = Counter(a[1] for a in answers)
    mixed = [a for a in answers if a[0] == 200 and a[3] != {a[1]}]
    degraded = [a for a in answers if a[2]]
    print(f"answers {len(answers)}: {dict(statuses)}, by version {dict(by_version)}, switch {switch_s:.2f} s")
    assert statuses == Counter({200: len(answers)}) and not mixed and not degraded
    assert by_version[v1] > 0 and by_version[v2] > 0
    assert switch_s < 30
    state = repository.read_state(versions["root"])
    assert state.active == v1 and v2 in state.loaded and v2 not in state.previous  # rollback does not undo itself
    assert _stack_active(url) == v1


def test_pinned_versions_raw_and_through_the_inference_protocol(vstack, versions, jpeg):
    import numpy as np
    import tritonclient.http as triton

    url, v1, v2 = vstack.gateway_url, versions["v1"], versions["v2"]
    assert _load(url, v2, activate=False).status_code == 200  # loaded everywhere, not active
    pinned = _post(url, jpeg, **{"X-Model-Version": v2}).json()
    assert pinned["model_version"] == v2 and {m["model_version"] for m in pinned["members"].values()} == {v2}
    assert _post(url, jpeg).json()["model_version"] == v1
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg], dtype=object))
    result = client.infer(GATEWAY, [image], model_version=v2)
    assert result.get_response()["model_version"] == v2
    with pytest.raises(Exception, match="0123456789ab"):
        client.infer(GATEWAY, [image], model_version="0123456789ab")
    unknown = _post(url, jpeg, **{"X-Model-Version": "0123456789ab"})
    assert unknown.status_code == 409 and "0123456789ab" in unknown.json()["error"]["message"]
    assert v2 in requests.get(f"{url}/v2/models/{GATEWAY}", timeout=5).json()["versions"]


def test_a_failed_load_leaves_the_old_version_and_names_the_file(vstack, versions, jpeg):
    url = vstack.gateway_url
    before = repository.read_state(versions["root"]).active
    failed = _load(url, versions["broken"])
    assert failed.status_code == 409, failed.text
    message = failed.json()["error"]["message"]
    assert str(versions["tampered"]) in message and "clip_logreg" in message, message
    state = repository.read_state(versions["root"])
    assert state.active == before and versions["broken"] not in state.loaded
    assert _post(url, jpeg).json()["model_version"] == before


def test_a_killed_member_comes_back_on_the_active_version(vstack, versions, jpeg):
    url, v2 = vstack.gateway_url, versions["v2"]
    assert _load(url, v2).status_code == 200
    member = vstack.services["clip_logreg"]
    [member_pid] = member.workers()
    os.kill(member_pid, signal.SIGKILL)  # gunicorn starts a new worker, which reads serving.json
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            entries = requests.get(member.url + "/v2/repository/index", timeout=5).json()
            if any(e["version"] == v2 and e["active"] and e["state"] == "READY" for e in entries):
                break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the restarted member did not come back on the active version")
    assert member.workers() != [member_pid]
    body = _post(url, jpeg).json()
    assert body["model_version"] == v2 and body["members"]["clip_logreg"]["model_version"] == v2


def test_canary_is_sticky_per_client_and_marked(vstack, versions, jpeg):
    url, v1, v2 = vstack.gateway_url, versions["v1"], versions["v2"]
    assert _load(url, v2).status_code == 200
    set_canary = requests.post(url + "/v1/versions/canary", json={"version": v1, "percent": 50}, timeout=180)
    assert set_canary.status_code == 200, set_canary.text
    seen = {}
    for client in range(16):
        first = _post(url, jpeg, **{"X-Client-Id": f"client-{client}"}).json()
        again = _post(url, jpeg, **{"X-Client-Id": f"client-{client}"}).json()
        assert first["model_version"] == again["model_version"]
        assert first.get("canary", False) == (first["model_version"] == v1)
        seen[client] = first["model_version"]
    assert 0 < sum(v == v1 for v in seen.values()) < 16
    off = requests.post(url + "/v1/versions/canary", json={"version": None, "percent": 0}, timeout=30)
    assert off.status_code == 200 and off.json()["canary"] is None


def test_repository_changes_need_an_admin_key(vstack, versions, tmp_path):
    served = vstack.services[GATEWAY]
    env = {**base_env(versions["root"], served.env["WEIGHTS_DIR"], tmp_path), "MEMBER_URLS": vstack.member_urls()}
    keyed = launch(GATEWAY, env, tmp_path, extra_env={"API_KEYS": "user-key", "ADMIN_KEYS": ADMIN})
    open_wide = launch(GATEWAY, env, tmp_path)  # no keys, listening beyond loopback (BIND_HOST 0.0.0.0)
    try:
        keyed.wait_ready()
        open_wide.wait_ready()
        unload = f"/v2/repository/models/{GATEWAY}/unload"
        body = {"parameters": {"version": versions["broken"]}}
        assert requests.post(keyed.url + unload, json=body, timeout=10).status_code == 401
        user = requests.post(keyed.url + unload, json=body, headers={"Authorization": "Bearer user-key"}, timeout=10)
        assert user.status_code == 403 and user.json()["error"]["code"] == "not_an_admin_key"
        admin = requests.post(keyed.url + unload, json=body, headers={"X-API-Key": ADMIN}, timeout=30)
        assert admin.status_code == 200, admin.text
        member_load = requests.post(f"{keyed.url}/v2/repository/models/ocr_nb/load", headers={"X-API-Key": ADMIN},
                                    timeout=10)
        assert member_load.status_code == 409 and GATEWAY in member_load.json()["error"]["message"]
        refused = requests.post(open_wide.url + unload, json=body, timeout=10)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_needed"
        assert ADMIN not in keyed.log_text()
    finally:
        stop_all([keyed, open_wide])


def test_models_list_names_each_version_and_its_role(versions):
    done = subprocess.run([sys.executable, "-m", "shared", "models", "list", "--models", str(versions["root"])],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert set(lines) == {versions["v1"], versions["v2"], versions["broken"]}
    active = repository.read_state(versions["root"]).active
    assert "ACTIVE" in lines[active] and "synthetic" in lines[active].lower()
    assert json.loads((versions["root"] / repository.POINTER).read_text())["active"] == active


def test_shadow_gets_a_copy_and_compare_equals_the_offline_comparison(vstack, versions, trained_settings,
                                                                      tiny_weights):
    """Every request copied to the shadow version: its agreement with the live answers, per class and on labels,
    equals comparing the two versions offline on the same photos."""
    from shared.learning import evaluation
    from shared.learning.data import balanced_subset, folder_records

    url = vstack.gateway_url
    live = _stack_active(url)
    shadow = versions["v1"] if live == versions["v2"] else versions["v2"]
    set_shadow = requests.post(url + "/v1/versions/shadow", json={"version": shadow, "percent": 100}, timeout=180)
    assert set_shadow.status_code == 200, set_shadow.text
    records = balanced_subset(folder_records(Path(trained_settings.datasets_dir) / "screenshots"), per_class=10,
                              seed=7)
    paths = [Path(path) for path, _label in records]
    request_ids = {}
    for path, label in records:
        body = _post(url, Path(path).read_bytes()).json()
        assert body["model_version"] == live and not body.get("canary")
        request_ids[Path(path)] = (body["request_id"], label)
    deadline = time.monotonic() + 60
    while (got := requests.get(url + "/v1/versions/compare", timeout=10).json())["answers"] < len(paths):
        assert time.monotonic() < deadline, got
        time.sleep(0.3)

    def offline(version: str) -> dict:
        scored = evaluation.score_files(repository.version_dir(versions["root"], version), tiny_weights, paths,
                                        trained_settings, progress=False)
        classes = scored.manifest["classes"]
        return {paths[i]: classes[int(scored.probas[evaluation.STACK][row].argmax())]
                for i, row in zip(scored.rows, range(len(scored.rows)))}

    live_labels, shadow_labels = offline(live), offline(shadow)
    agree = sum(live_labels[p] == shadow_labels[p] for p in paths)
    assert got["agreement"] == pytest.approx(agree / len(paths)) and got["live_versions"] == {live: len(paths)}
    for label, row in got["per_class"].items():
        mine = [p for p in paths if live_labels[p] == label]
        assert row["answers"] == len(mine)
        assert row["agreement"] == pytest.approx(sum(shadow_labels[p] == label for p in mine) / len(mine))
    # Labels on the live records score both versions.
    items = {i["request_id"]: i["id"] for i in requests.get(url + "/v1/history", params={"limit": 500},
                                                            timeout=10).json()["items"]}
    for path, (rid, label) in list(request_ids.items())[:8]:
        assert requests.post(f"{url}/v1/history/{items[rid]}/label", json={"label": label}, timeout=10).ok
    got = requests.get(url + "/v1/versions/compare", timeout=10).json()
    truth = {p: label for p, (_rid, label) in list(request_ids.items())[:8]}
    assert got["labelled"] == 8
    assert got["accuracy"]["live"]["accuracy"] == pytest.approx(sum(live_labels[p] == t for p, t in truth.items()) / 8)
    assert got["accuracy"]["shadow"]["accuracy"] == pytest.approx(
        sum(shadow_labels[p] == t for p, t in truth.items()) / 8)
    assert requests.post(url + "/v1/versions/shadow", json={"version": None, "percent": 0}, timeout=30).ok
