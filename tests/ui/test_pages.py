"""The pages render from a real Flask app with a real history store: accessibility hooks, filters, paging, errors."""
from __future__ import annotations

import html as html_text
import json
import re
import time

import pytest
from flask import Flask

from shared import history, ui
from shared.config import Settings
from shared.features import register_extractor, unregister_extractor
from shared.history import HistoryStore


def _app(tmp_path, **settings) -> tuple[Flask, HistoryStore]:
    app = Flask(__name__)
    config = Settings.from_env({}, history_db=tmp_path / "ui.sqlite3", **settings)
    app.config["SETTINGS"] = config
    store = history.init_app(app, config)
    ui.init_app(app)
    return app, store


def _record(store: HistoryStore, i: int, label: str, degraded: bool = False, ocr_ok: bool = False) -> None:
    ocr = ({"ok": True, "latency_ms": 5.0, "label": label, "probas": {label: 0.9, "other": 0.1},
            "weights": {"ocr": "real"}} if ocr_ok else {"ok": False, "latency_ms": 5.0, "error": "connection failed"})
    store.record({"ts": time.time() - 1000 + i, "request_id": f"req-{i}", "sha256": "ab" * 32, "size_bytes": 2048,
                  "class_id": 0, "label": label, "proba": 0.75, "latency_ms": 12.0, "degraded": degraded,
                  "source": "ui", "synthetic_weights": True,
                  "members": {"ocr_nb": ocr,
                              "clip_svm": {"ok": True, "latency_ms": 9.0, "label": label,
                                           "probas": {label: 0.6, "other": 0.4}, "weights": {"clip": "synthetic"}}}})


@pytest.fixture
def seeded(tmp_path):
    app, store = _app(tmp_path)
    for i in range(7):
        _record(store, i, "apple" if i % 2 else "pear", degraded=(i == 3))
    assert store.flush()
    yield app.test_client()
    store.close()


@pytest.mark.parametrize("url", ["/", "/ui"])
def test_classify_page_has_its_controls_and_live_region(tmp_path, url):
    app, store = _app(tmp_path, max_image_bytes=1234567)
    html = app.test_client().get(url).get_data(as_text=True)
    assert '<label for="file-input"' in html and 'type="file"' in html and "multiple" in html
    assert 'aria-live="polite"' in html and 'id="pad"' in html and 'id="clear"' in html
    assert 'data-max-bytes="1234567"' in html and 'data-predict-url="/"' in html
    assert "cdn" not in html.lower() and "https://" not in html  # works offline
    store.close()


def test_static_assets_are_served(tmp_path):
    app, store = _app(tmp_path)
    client = app.test_client()
    assert client.get("/ui/static/classify.js").status_code == 200
    assert client.get("/ui/static/app.css").status_code == 200
    store.close()


def test_history_page_lists_newest_first_with_filters(seeded):
    html = seeded.get("/history").get_data(as_text=True)
    assert re.findall(r'data-request-id="(req-\d)"', html) == [f"req-{i}" for i in range(6, -1, -1)]
    assert "failed (connection failed)" in html
    # The badge names the parts behind each answer: here only clip_svm answered.
    assert '<span class="badge badge-synthetic">CLIP: synthetic weights</span>' in html
    apples = seeded.get("/history?label=apple").get_data(as_text=True)
    assert re.findall(r'data-request-id="(req-\d)"', apples) == ["req-5", "req-3", "req-1"]
    degraded = seeded.get("/history?degraded=true").get_data(as_text=True)
    assert re.findall(r'data-request-id="(req-\d)"', degraded) == ["req-3"]
    assert 'href="/v1/history.csv?degraded=true"' in degraded


def test_history_page_pages_with_a_cursor(seeded):
    first = seeded.get("/history?limit=3").get_data(as_text=True)
    assert re.findall(r'data-request-id="(req-\d)"', first) == ["req-6", "req-5", "req-4"]
    next_url = re.search(r'href="(/history\?[^"]*cursor=[^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = seeded.get(next_url).get_data(as_text=True)
    assert re.findall(r'data-request-id="(req-\d)"', second) == ["req-3", "req-2", "req-1"]


def test_history_page_explains_a_bad_filter_in_words(seeded):
    resp = seeded.get("/history?since=last-tuesday")
    assert resp.status_code == 400
    assert 'role="alert"' in resp.get_data(as_text=True) and "since must be" in resp.get_data(as_text=True)


def test_history_page_when_empty_or_off(tmp_path):
    app, store = _app(tmp_path, history_enabled=False)
    html = app.test_client().get("/history").get_data(as_text=True)
    assert "Recording is off" in html and "No predictions yet" in html
    store.close()


def test_history_page_with_an_unreadable_database_says_so(tmp_path):
    (tmp_path / "ui.sqlite3").write_bytes(b"not a database" * 200)
    app, store = _app(tmp_path)
    resp = app.test_client().get("/history")
    assert resp.status_code == 503 and "cannot be" in resp.get_data(as_text=True)
    store.close()


def test_history_badge_names_each_part_and_never_calls_a_real_part_synthetic(tmp_path):
    app, store = _app(tmp_path)
    _record(store, 1, "apple", ocr_ok=True)
    assert store.flush()
    html = app.test_client().get("/history").get_data(as_text=True)
    assert '<span class="badge badge-synthetic">CLIP: synthetic weights · OCR: real</span>' in html
    store.close()


def test_pages_name_weights_parts_as_the_extractor_registry_does(tmp_path):
    # A lazy entry is never imported to be named: the gateway serves these pages without torch.
    register_extractor("tests.features.test_registry_third_kind:ImageStatsExtractorDouble", kind="stats_double",
                       label="Image stats (test)")
    try:
        app, store = _app(tmp_path)
        page = app.test_client().get("/").get_data(as_text=True)
        labels = json.loads(html_text.unescape(re.search(r"data-part-labels='([^']*)'", page).group(1)))
        assert labels == {"clip": "CLIP", "ocr": "OCR", "stats_double": "Image stats (test)"}
        store.record({"ts": time.time(), "request_id": "req-s", "sha256": "cd" * 32, "size_bytes": 10, "class_id": 0,
                      "label": "pear", "proba": 0.5, "latency_ms": 1.0, "degraded": False, "source": "ui",
                      "synthetic_weights": True, "members": {"stats_nb": {"ok": True, "latency_ms": 1.0,
                      "label": "pear", "probas": {"pear": 1.0}, "weights": {"stats_double": "synthetic"}}}})
        assert store.flush()
        assert "Image stats (test): synthetic weights" in app.test_client().get("/history").get_data(as_text=True)
        store.close()
    finally:
        unregister_extractor("stats_double")
