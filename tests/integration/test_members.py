"""The three members as real gunicorns: raw bytes with any Content-Type, multipart, metadata."""
from __future__ import annotations

import pytest
import requests

from shared.members import GATEWAY, member, member_names

MEMBERS = member_names()  # the member table's names, in table order
# The stack's weights (tiny_weights): REAL EasyOCR, tiny SYNTHETIC CLIP; each answer names only the parts behind it.
PARTS = {"ocr": "real", "clip": "synthetic"}


def expected_weights(model: str) -> dict[str, str]:
    """A member: its own extractor's part; the gateway (all members answering): every part."""
    return dict(PARTS) if model == GATEWAY else {member(model).extractor: PARTS[member(model).extractor]}


def check_prediction(body: dict, model: str) -> None:
    """The response contract: seed's class_id + proba, then label, probas by name, model, version, weights."""
    labels = list(body["probas"])
    (k,) = body["class_id"]
    assert isinstance(k, int) and 0 <= k < len(labels)
    assert body["label"] == labels[k]
    assert body["proba"] == pytest.approx(body["probas"][body["label"]])
    assert body["proba"] == pytest.approx(max(body["probas"].values()))
    assert sum(body["probas"].values()) == pytest.approx(1.0, abs=1e-6)
    assert body["model"] == model and body["model_version"]
    # Exactly the parts behind this answer; synthetic_weights only when one of them is synthetic.
    assert body["weights"] == expected_weights(model)
    if "synthetic" in body["weights"].values():
        assert body["synthetic_weights"] is True
    else:
        assert "synthetic_weights" not in body


@pytest.mark.parametrize("name", MEMBERS)
def test_member_classifies_raw_bytes(stack, jpeg, name):
    # curl --data-binary sends this Content-Type; the body is still the image
    resp = requests.post(stack.urls[name] + "/", data=jpeg,
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=60)
    assert resp.status_code == 200, resp.text
    check_prediction(resp.json(), name)


@pytest.mark.parametrize("name", MEMBERS)
def test_member_answers_the_same_for_predict_multipart_and_any_type(stack, jpeg, name):
    url = stack.urls[name]
    raw = requests.post(url + "/", data=jpeg, timeout=60).json()
    typed = requests.post(url + "/predict", data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=60).json()
    form = requests.post(url + "/predict", files={"file": ("photo.jpg", jpeg, "image/jpeg")}, timeout=60).json()
    assert typed["probas"] == pytest.approx(raw["probas"])
    assert form["probas"] == pytest.approx(raw["probas"])


@pytest.mark.parametrize("name", MEMBERS)
def test_member_metadata(stack, name):
    oip = requests.get(f"{stack.urls[name]}/v2/models/{name}", timeout=10).json()
    meta = oip["parameters"]  # the inference protocol's metadata; ours under parameters
    assert oip["name"] == name and oip["versions"] == [meta["model_version"]] and meta["ready"] is True
    assert meta["classes"] and meta["model_version"]
    assert meta["feature"]["kind"] in ("clip", "ocr")
    assert all(len(sha) == 64 for sha in meta["artifacts"].values())
    assert meta["weights"] == expected_weights(name) and meta["synthetic"] is (name != "ocr_nb")
    other = requests.get(f"{stack.urls[name]}/v2/models/stacking", timeout=10)
    assert other.status_code == 404 and "not 'stacking'" in other.json()["error"]


def test_members_agree_on_classes_and_version(stack):
    metas = [requests.get(f"{stack.urls[n]}/v2/models/{n}", timeout=10).json()["parameters"] for n in MEMBERS]
    assert len({tuple(m["classes"]) for m in metas}) == 1
    assert len({m["model_version"] for m in metas}) == 1


def batch_histogram(url: str, name: str) -> tuple[float, float]:
    """(images, forward passes) so far, from the member's classifier_batch_size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text)
              for s in family.samples if s.name.startswith("classifier_batch_size") and s.labels.get("service") == name}
    return values.get("classifier_batch_size_sum", 0.0), values.get("classifier_batch_size_count", 0.0)


@pytest.mark.parametrize("name", ["clip_svm", "clip_logreg"])
def test_clip_members_predict_through_the_dynamic_batcher(stack, jpeg, name):
    from concurrent.futures import ThreadPoolExecutor

    url = stack.urls[name]
    images_before, passes_before = batch_histogram(url, name)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: requests.post(url + "/", data=jpeg, timeout=60).status_code, range(8)))
    assert statuses == [200] * 8
    images, passes = batch_histogram(url, name)
    assert images - images_before == 8  # every image went through the batcher ...
    assert 1 <= passes - passes_before <= 8  # ... in at most as many forward passes
