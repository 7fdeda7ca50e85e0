"""Shadow answers in the history (both backends): written by the same background writer, apart from the
predictions, joined to the live record's label for the comparison; removed by retention with the predictions."""
from __future__ import annotations

from shared.gateway.versions import compare_answers
from tests.history.conftest import T0, record


def shadow(i: int, label: str, live_label: str, ts: float | None = None) -> dict:
    return {"ts": T0 + i if ts is None else ts, "request_id": f"req-{i}", "model_version": "v2", "live_version": "v1",
            "class_id": 0, "label": label, "proba": 0.7, "probas": {label: 0.7}, "live_label": live_label,
            "degraded": False, "latency_ms": 12.0}


def test_shadow_answers_are_kept_apart_and_joined_to_labels(store):
    for i in range(4):
        store.record(record(i))
    store.record_shadow(shadow(0, "cat", "cat"))
    store.record_shadow(shadow(1, "dog", "cat"))
    store.record_shadow(shadow(2, "dog", "dog"))
    assert store.flush()
    assert store.count() == 4  # the predictions people review: no shadow among them
    first = store.query(limit=10).items[-1]
    assert first["request_id"] == "req-0"
    store.set_label(first["id"], "dog", "tester")
    pairs = store.shadow_pairs("v2")
    assert sorted((p["label"], p["live_label"], p["true_label"]) for p in pairs) == [
        ("cat", "cat", "dog"), ("dog", "cat", None), ("dog", "dog", None)]
    got = compare_answers("v2", pairs)
    assert got["answers"] == 3 and got["agreement"] == 2 / 3 and got["live_versions"] == {"v1": 3}
    assert got["per_class"] == {"cat": {"answers": 2, "agreement": 0.5}, "dog": {"answers": 1, "agreement": 1.0}}
    assert got["labelled"] == 1 and got["accuracy"]["live"]["accuracy"] == 0.0
    assert store.shadow_pairs("v2", since=T0 + 2)[0]["label"] == "dog" and store.shadow_pairs("v9") == []


def test_retention_removes_old_shadow_answers(store):
    store.retention_days = 1
    store.record_shadow(shadow(0, "cat", "cat", ts=T0))
    store.record_shadow(shadow(1, "cat", "cat", ts=T0 + 3 * 86400))
    assert store.flush()
    store.apply_retention(now=T0 + 3 * 86400)
    assert [p["label"] for p in store.shadow_pairs("v2")] == ["cat"]


def test_max_rows_bounds_the_shadow_answers_too(store):
    store.max_rows = 2
    for i in range(5):
        store.record_shadow(shadow(i, "cat", "cat"))
    assert store.flush()
    store.apply_retention()
    assert len(store.shadow_pairs("v2")) == 2

