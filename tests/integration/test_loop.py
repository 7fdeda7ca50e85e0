"""The loop through the real stack: photos served by real gunicorns (tiny SYNTHETIC CLIP, real OCR), labelled over
HTTP, the review queue, live quality against `evaluate` on the same photos, drift, the gauges, the export read by
`train --calibration-data` and by `restack`, and the faults (bad labels, keys, a history that cannot be written).
"""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests

from shared.learning.data import balanced_subset, folder_records, write_csv
from tests.conftest import trained_models_settings
from tests.integration.conftest import (REPO, Stack, base_env, private_gateway, stop_all, wait_for_metric,
                                       wait_for_records)

TRAFFIC_PER_CLASS = 12


@pytest.fixture(scope="module")
def photos(trained_models: Path) -> dict:
    """New photos of each class (not among the 30 + 30 the model was trained on) and two it was trained on."""
    settings = trained_models_settings(trained_models.parent)
    every = folder_records(Path(settings.datasets_dir) / "screenshots")
    trained = set(balanced_subset(every, per_class=30, seed=0))
    new = [r for r in every if r not in trained]
    by_class: dict[str, list] = {}
    for path, label in new:
        by_class.setdefault(label, []).append((path, label))
    traffic = [r for rows in by_class.values() for r in rows[:TRAFFIC_PER_CLASS]]
    return {"traffic": traffic, "trained": sorted(trained)[:2], "by_class": by_class}


@pytest.fixture(scope="module")
def served(stack: Stack, photos: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A private gateway that has answered the traffic photos and two training photos, in that order."""
    run_dir = tmp_path_factory.mktemp("loop")
    svc = private_gateway(stack, run_dir, DRIFT_WINDOW="12", LOOP_METRICS_EVERY_S="0")
    answers = []
    for path, label in [*photos["traffic"], *photos["trained"]]:
        resp = requests.post(svc.url + "/", data=path.read_bytes(), timeout=60)
        assert resp.status_code == 200, resp.text
        answers.append({"path": path, "true": label, **resp.json()})
    assert len(wait_for_records(svc.url, len(answers))) == len(answers)
    yield {"svc": svc, "answers": answers, "run_dir": run_dir}
    stop_all([svc])


def records(url: str, **params: str) -> list[dict]:
    out, next_url = [], f"{url}/v1/history"
    while next_url:
        body = requests.get(next_url if next_url.startswith("http") else url + next_url,
                            params=params if next_url.endswith("/v1/history") else None, timeout=10).json()
        out += body["items"]
        next_url = body.get("next_url")
    return out


def label(url: str, record_id: int, value: str, **headers: str) -> requests.Response:
    return requests.post(f"{url}/v1/history/{record_id}/label", json={"label": value}, headers=headers, timeout=10)


def label_all(served: dict) -> None:
    """Give every served photo its true class (idempotent: tests that need the labels call it)."""
    url = served["svc"].url
    by_request = {i["request_id"]: i for i in records(url)}
    for answer in served["answers"]:
        assert label(url, by_request[answer["request_id"]]["id"], answer["true"]).status_code == 200


def test_every_record_keeps_the_answering_version_the_stack_probabilities_and_whether_it_was_a_training_photo(
        served: dict) -> None:
    items = {i["request_id"]: i for i in records(served["svc"].url)}
    for answer in served["answers"]:
        item = items[answer["request_id"]]
        assert item["model_version"] == answer["model_version"]
        assert item["probas"] == pytest.approx(answer["probas"], abs=1e-5)
        assert item["in_training"] is (answer is served["answers"][-1] or answer is served["answers"][-2])
        assert 0 <= item["review_priority"] <= 2
        assert item["true_label"] is None and item["correct"] is None


def test_a_label_is_stored_with_who_and_when_and_a_changed_one_is_counted(served: dict) -> None:
    url, answer = served["svc"].url, served["answers"][0]
    record_id = next(i["id"] for i in records(url) if i["request_id"] == answer["request_id"])
    other = next(c for c in answer["probas"] if c != answer["true"])
    first = label(url, record_id, other)
    assert first.status_code == 200, first.text
    expected = {"true_label": other, "labelled_by": "anonymous", "label_changes": 0, "label_outcome": "new"}
    assert {key: first.json()[key] for key in expected} == expected
    again = label(url, record_id, answer["true"]).json()
    assert again["true_label"] == answer["true"] and again["label_changes"] == 1 and again["label_outcome"] == "changed"
    assert again["labelled_at"] and again["correct"] is (answer["label"] == answer["true"])
    assert label(url, record_id, answer["true"]).json()["label_changes"] == 1  # the same label again: no change
    listed = requests.get(f"{url}/v1/history/{record_id}", timeout=10).json()
    assert listed["true_label"] == answer["true"]


def test_feedback_by_request_id_labels_the_record_that_answered_it(served: dict) -> None:
    url, answer = served["svc"].url, served["answers"][1]
    resp = requests.post(url + "/v1/feedback", json={"request_id": answer["request_id"], "label": answer["true"]},
                         timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["request_id"] == answer["request_id"] and resp.json()["true_label"] == answer["true"]


def test_bad_labels_get_a_clear_error(served: dict) -> None:
    url = served["svc"].url
    record_id = records(url)[0]["id"]
    unknown = label(url, record_id, "giraffe")
    assert unknown.status_code == 400
    assert "camera" in unknown.json()["error"]["message"] and "screenshots" in unknown.json()["error"]["message"]
    assert label(url, 10**9, "camera").status_code == 404
    for body in ("not json", "[]", '{"label": 3}'):
        resp = requests.post(f"{url}/v1/history/{record_id}/label", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert resp.status_code == 400 and resp.json()["error"]["message"], body
    assert requests.post(url + "/v1/feedback", json={"label": "camera"}, timeout=10).status_code == 400
    missing = requests.post(url + "/v1/feedback", json={"request_id": "nobody-sent-this", "label": "camera"}, timeout=10)
    assert missing.status_code == 404 and "nobody-sent-this" in missing.json()["error"]["message"]


def test_concurrent_labels_of_one_record_each_count_against_the_label_they_replaced(served: dict) -> None:
    url = served["svc"].url
    record_id = next(i["id"] for i in records(url) if i["request_id"] == served["answers"][2]["request_id"])
    choices = ["camera", "screenshots"] * 8
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda value: label(url, record_id, value), choices))
    assert all(r.status_code == 200 for r in answers)
    outcomes = [r.json()["label_outcome"] for r in answers]
    final = requests.get(f"{url}/v1/history/{record_id}", timeout=10).json()
    assert final["label_changes"] == outcomes.count("changed") and outcomes.count("new") == 1
    label(url, record_id, served["answers"][2]["true"])


def test_the_review_queue_lists_unlabelled_records_most_uncertain_first(served: dict) -> None:
    url = served["svc"].url
    items = requests.get(url + "/v1/review", params={"limit": 5}, timeout=10).json()
    more = requests.get(url + items["next_url"], timeout=10).json() if items.get("next_url") else {"items": []}
    queue = items["items"] + more["items"]
    assert queue and all(i["true_label"] is None for i in queue)
    priorities = [i["review_priority"] for i in queue]
    assert priorities == sorted(priorities, reverse=True)
    unlabelled = [i for i in records(url) if i["true_label"] is None]
    assert max(i["review_priority"] for i in unlabelled) == priorities[0]


def test_live_quality_equals_evaluate_on_the_same_photos(served: dict, trained_models: Path, tiny_weights: Path,
                                                         tmp_path: Path) -> None:
    from shared.learning.evaluation import evaluate_models

    url = served["svc"].url
    label_all(served)
    quality = requests.get(url + "/v1/quality", timeout=30).json()
    scored = [(a["path"], a["true"]) for a in served["answers"][:-2]]  # the two training photos are left out
    assert quality["n"] == len(scored) and quality["left_out"] == {"in_training": 2}
    offline = evaluate_models(trained_models, write_csv(scored, tmp_path / "labelled.csv"), tiny_weights,
                              trained_models_settings(trained_models.parent), out=tmp_path / "eval")
    for name, m in offline["models"].items():
        live = quality["models"][name]
        assert live["n"] == m["n"]
        assert live["accuracy"] == pytest.approx(m["accuracy"]) and live["macro_f1"] == pytest.approx(m["macro_f1"])
        assert live["ece"] == pytest.approx(m["ece"], abs=1e-3)
        assert live["confusion"] == m["confusion"]
        low, high = live["accuracy_interval"]
        assert low <= live["accuracy"] <= high
    by_version = requests.get(url + "/v1/quality", params={"model_version": "nope"}, timeout=10).json()
    assert by_version["n"] == 0 and by_version["models"] == {}


def test_quality_and_drift_are_gauges_and_pages(served: dict) -> None:
    url, answer = served["svc"].url, served["answers"][3]
    label(url, next(i["id"] for i in records(url) if i["request_id"] == answer["request_id"]), answer["true"])
    metrics = requests.get(url + "/metrics", timeout=30).text
    assert 'classifier_live_accuracy{model="stack"}' in metrics
    assert "classifier_drift_flagged" in metrics and 'classifier_drift_p_value{test="stack_classes"}' in metrics
    page = requests.get(url + "/quality", timeout=30)
    assert page.status_code == 200 and 'id="quality-table"' in page.text and "SYNTHETIC" in page.text
    assert 'id="drift-table"' in page.text
    review = requests.get(url + "/review", timeout=30)
    assert review.status_code == 200


def test_drift_is_flagged_on_a_shifted_stream_and_not_on_the_one_like_training(stack: Stack, photos: dict,
                                                                              tmp_path: Path) -> None:
    svc = private_gateway(stack, tmp_path, DRIFT_WINDOW="16", DRIFT_WINDOWS="1")  # DRIFT_REFERENCE=traffic, the default
    try:
        mixed = [r for pair in zip(*(rows[TRAFFIC_PER_CLASS:TRAFFIC_PER_CLASS + 16]
                                     for rows in photos["by_class"].values())) for r in pair]
        for path, _ in mixed[:16]:
            assert requests.post(svc.url + "/", data=path.read_bytes(), timeout=60).status_code == 200
        wait_for_records(svc.url, 16)
        baseline_only = requests.get(svc.url + "/v1/drift", timeout=30).json()
        assert baseline_only["windows"] == [] and baseline_only["reference"]["source"] == "traffic"
        for path, _ in mixed[16:]:
            assert requests.post(svc.url + "/", data=path.read_bytes(), timeout=60).status_code == 200
        wait_for_records(svc.url, 32)
        like_before = requests.get(svc.url + "/v1/drift", timeout=30).json()
        assert len(like_before["windows"]) == 1 and like_before["flagged"] is False, like_before
        one_class = next(iter(photos["by_class"].values()))[TRAFFIC_PER_CLASS + 16:TRAFFIC_PER_CLASS + 32]
        for path, _ in one_class:
            assert requests.post(svc.url + "/", data=path.read_bytes(), timeout=60).status_code == 200
        wait_for_records(svc.url, 48)
        shifted = requests.get(svc.url + "/v1/drift", timeout=30).json()
        assert shifted["flagged"] is True, shifted
        assert shifted["windows"][0]["tests"]["stack_classes"]["p_corrected"] < shifted["alpha"]
        assert requests.get(svc.url + "/v1/drift", params={"window": "3"}, timeout=10).status_code == 400
    finally:
        stop_all([svc])


def test_export_feeds_calibration_and_restack(served: dict, trained_models: Path, tiny_weights: Path,
                                              tmp_path: Path) -> None:
    svc = served["svc"]
    label_all(served)
    out = tmp_path / "export"
    run = [sys.executable, "-m", "shared", "history", "export", "--labelled", "--out", str(out),
           "--db", svc.env["HISTORY_DB"]]
    done = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n = len(served["answers"]) - 2
    assert f"Exported {n} labelled photos" in done.stdout and "2 photos the model was trained or tested on" in done.stdout
    rows = (out / "labels.csv").read_text().splitlines()
    assert rows[0] == "path,label" and len(rows) == n + 1
    assert all((out / line.split(",")[0]).is_file() for line in rows[1:])
    again = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "not an empty folder" in again.stderr

    done = subprocess.run([sys.executable, "-m", "shared", "restack", "--models", str(trained_models), "--data",
                           str(out), "--out", str(tmp_path / "restacked"), "--folds", "3"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"on {n} labelled photos" in done.stdout and "SYNTHETIC" in done.stdout
    from shared import artifacts, repository

    restacked = repository.active_dir(tmp_path / "restacked")  # a new version, active in a new repository
    from shared.learning.meta_model import MetaEnsemble
    from shared.learning.reference import load_reference

    old, new = artifacts.load_manifest(trained_models), artifacts.load_manifest(restacked)
    assert new["model_version"] != old["model_version"] and new["restack"]["lineage"] == [old["model_version"]]
    assert {k: v for k, v in new["files"].items() if k.startswith("learners/")} == \
        {k: v for k, v in old["files"].items() if k.startswith("learners/")}
    assert set(new["calibration"]["temperatures"]) == set(MetaEnsemble.load(restacked).models)
    assert new["restack"]["traffic_weight"] in new["restack"]["traffic_weights_tried"]
    assert new["restack"]["traffic_weights_tried"][0] == 0.0  # "the stack as trained" is always a candidate
    assert len(load_reference(restacked, new).images) == len(load_reference(trained_models, old).images) + n

    settings = trained_models_settings(trained_models.parent)
    train_csv = write_csv(balanced_subset(folder_records(Path(settings.datasets_dir) / "screenshots"), 30, seed=0),
                          tmp_path / "train.csv")
    calibrated = tmp_path / "calibrated"
    env = {**base_env(trained_models, tiny_weights, tmp_path), "FEATURE_CACHE_DIR": str(settings.cache_dir)}
    done = subprocess.run([sys.executable, "-m", "shared", "train", "--data", str(train_csv), "--out", str(calibrated),
                           "--weights", str(tiny_weights), "--folds", "3", "--calibration-data",
                           str(out / "labels.csv")], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert artifacts.load_manifest(repository.active_dir(calibrated))["calibration"]["data"]["images"] == n


def test_label_calls_need_a_key_when_keys_are_on_and_name_it(stack: Stack, photos: dict, tmp_path: Path) -> None:
    svc = private_gateway(stack, tmp_path, API_KEYS="alpha-key,beta-key")
    try:
        path, true = photos["traffic"][0]
        answer = requests.post(svc.url + "/", data=path.read_bytes(), headers={"X-API-Key": "beta-key"}, timeout=60)
        assert answer.status_code == 200
        record_id = wait_for_records(svc.url, 1, headers={"X-API-Key": "beta-key"})[0]["id"]
        assert label(svc.url, record_id, true).status_code == 401
        assert label(svc.url, record_id, true, **{"X-API-Key": "wrong"}).status_code == 401
        done = label(svc.url, record_id, true, Authorization="Bearer beta-key").json()
        assert done["labelled_by"].startswith("key:") and "beta" not in done["labelled_by"]
        other = label(svc.url, record_id, true, **{"X-API-Key": "alpha-key"}).json()
        assert other["labelled_by"] != done["labelled_by"]
        assert "beta-key" not in svc.log_text() and "alpha-key" not in svc.log_text()
    finally:
        stop_all([svc])


def test_a_history_that_cannot_be_written_fails_labels_with_503_while_predictions_answer(
        stack: Stack, photos: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the history's folder should be")
    svc = private_gateway(stack, tmp_path, HISTORY_DB=str(blocker / "history.sqlite3"), HISTORY_RETRY_S="0.5")
    try:
        path, true = photos["traffic"][0]
        for _ in range(3):
            assert requests.post(svc.url + "/", data=path.read_bytes(), timeout=60).status_code == 200
        refused = label(svc.url, 1, true)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert "history" in refused.json()["error"]["message"]
        feedback = requests.post(svc.url + "/v1/feedback", json={"request_id": "x", "label": true}, timeout=10)
        assert feedback.status_code == 503
        assert requests.get(svc.url + "/v1/review", timeout=10).status_code == 503
        assert requests.get(svc.url + "/v1/quality", timeout=10).status_code == 503
        assert wait_for_metric(svc.url, 'history_record_failures_total{reason="storage_error"}')
    finally:
        stop_all([svc])
