"""Labels on history records, in the real store on both backends: stored and counted, filtered, queued for review by
priority, their images kept, safe under concurrent labelling."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import NotFound
from shared.history import HistoryFilter, HistoryStore
from shared.history.records import review_priority
from tests.history.conftest import LABELS, jpeg, query_plan, record


def answered(i: int, top: float = 0.6, **extra) -> dict:
    """record(i) as today's gateway hands it over: the stack's probabilities and the answering model version."""
    rec = record(i, **extra)
    rest = (1 - top) / (len(LABELS) - 1)
    rec.update(probas={lab: (top if lab == rec["label"] else rest) for lab in LABELS}, model_version="v1",
               proba=top, in_training=i == 0)
    return rec


def fill(store: HistoryStore, tops: list[float], **extra) -> list[int]:
    for i, top in enumerate(tops):
        store.record(answered(i, top, **extra))
    assert store.flush()
    return sorted(item["id"] for item in store.query(limit=500).items)


def test_a_label_is_stored_and_a_change_counted(store: HistoryStore) -> None:
    first = fill(store, [0.9, 0.5])[1]
    new = store.set_label(first, "milk", "key:abc", now=1000.0)
    assert (new["true_label"], new["labelled_by"], new["label_changes"], new["label_outcome"]) == \
        ("milk", "key:abc", 0, "new")
    assert new["labelled_at"] == "1970-01-01T00:16:40Z"
    assert store.set_label(first, "milk", "anonymous")["label_outcome"] == "same"
    changed = store.set_label(first, "apple", "anonymous")
    assert (changed["label_changes"], changed["label_outcome"], changed["labelled_by"]) == (1, "changed", "anonymous")
    assert store.get(first)["true_label"] == "apple"
    with pytest.raises(NotFound, match="retention"):
        store.set_label(10**6, "milk", "anonymous")


def test_a_record_still_queued_for_writing_can_be_labelled_at_once(store: HistoryStore) -> None:
    store.record(answered(7))
    found = store.record_for_request("req-7")  # waits for the writer rather than answering 404
    assert store.set_label(found, "apple", "anonymous")["true_label"] == "apple"
    with pytest.raises(NotFound, match="req-404"):
        store.record_for_request("req-404")


def test_concurrent_labels_of_one_record_serialise(store: HistoryStore) -> None:
    record_id = fill(store, [0.7])[0]
    values = [LABELS[i % 2] for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = [r["label_outcome"] for r in pool.map(lambda v: store.set_label(record_id, v, "t"), values)]
    assert outcomes.count("new") == 1
    assert store.get(record_id)["label_changes"] == outcomes.count("changed")


def test_filters_for_labelled_unlabelled_wrong_and_model_version(store: HistoryStore) -> None:
    ids = fill(store, [0.9, 0.8, 0.7, 0.6])
    items = {item["id"]: item for item in store.query().items}
    store.set_label(ids[0], items[ids[0]]["label"], "a")  # confirmed
    store.set_label(ids[1], next(lab for lab in LABELS if lab != items[ids[1]]["label"]), "a")  # corrected
    assert store.count(HistoryFilter(reviewed="labelled")) == 2
    assert store.count(HistoryFilter(reviewed="unlabelled")) == 2
    assert [i["id"] for i in store.query(HistoryFilter(reviewed="wrong")).items] == [ids[1]]
    assert store.count(HistoryFilter(model_version="v1")) == 4 and store.count(HistoryFilter(model_version="v0")) == 0
    assert [i["id"] for i in store.iter_labelled()] == [ids[1], ids[0]]
    assert store.get(ids[0])["correct"] is True and store.get(ids[1])["correct"] is False


def test_the_review_queue_orders_unlabelled_records_by_priority_and_pages_completely(store: HistoryStore) -> None:
    tops = [0.95, 0.4, 0.7, 0.34, 0.5, 0.9, 0.6, 0.45]
    ids = fill(store, tops)
    store.set_label(ids[3], "milk", "a")  # the most uncertain one, labelled: out of the queue
    seen, cursor = [], None
    while True:
        page = store.review_queue(limit=3, cursor=cursor)
        seen += page.items
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert ids[3] not in [i["id"] for i in seen] and len(seen) == len(tops) - 1
    priorities = [i["review_priority"] for i in seen]
    assert priorities == sorted(priorities, reverse=True)
    plan = query_plan(store, "SELECT id FROM predictions WHERE true_label IS NULL AND priority IS NOT NULL "
                             "ORDER BY priority DESC, id DESC LIMIT 50")
    assert "ix_predictions_review" in plan and "TEMP B-TREE" not in plan and "Sort" not in plan


def test_review_priority_is_uncertainty_plus_member_disagreement() -> None:
    sure = review_priority({"a": 0.9, "b": 0.1}, "a", {"m1": {"label": "a"}, "m2": {"label": "a"}})
    torn = review_priority({"a": 0.5, "b": 0.5}, "a", {"m1": {"label": "a"}, "m2": {"label": "a"}})
    disputed = review_priority({"a": 0.9, "b": 0.1}, "a", {"m1": {"label": "b"}, "m2": {"label": "a"},
                                                          "m3": {"ok": False, "label": None}})
    assert sure == pytest.approx(0.2) and torn == pytest.approx(1.0) and disputed == pytest.approx(0.7)
    assert review_priority({}, "a", {}) is None


def test_unlabelled_images_beyond_the_pending_bound_go_labelled_ones_stay(new_db) -> None:
    s = HistoryStore(new_db("p"), pending_images=2)
    first = fill(s, [0.6], image=jpeg())[0]
    s.set_label(first, "milk", "a")  # the oldest, labelled: keeps its image
    for i in range(1, 5):
        s.record(answered(i, image=jpeg()))
    assert s.flush()
    ids = sorted(item["id"] for item in s.query().items)
    s.apply_retention()
    kept = []
    for record_id in ids:
        try:
            s.image(record_id)
            kept.append(record_id)
        except NotFound:
            pass
        assert s.thumbnail(record_id)  # thumbnails always stay
    assert kept == [ids[0], ids[3], ids[4]]
    assert [s.get(i)["has_image"] for i in ids] == [True, False, False, True, True]
    s.close()


def test_no_pending_images_keeps_none_unless_keep_images(new_db) -> None:
    s = HistoryStore(new_db("n"), pending_images=0)
    record_id = fill(s, [0.6], image=jpeg())[0]
    assert s.get(record_id)["has_image"] is False
    s.close()
