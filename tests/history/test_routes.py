"""The /v1/history endpoints on a real Flask app, over each backend: filters, cursors, CSV, thumbnails, errors as
JSON."""
from __future__ import annotations

import csv
import io

import pytest
from flask import Flask

from shared import history
from shared.config import Settings
from shared.errors import ClassifierError
from tests.history.conftest import jpeg, record


@pytest.fixture
def client(new_db):
    app = Flask(__name__)
    settings = Settings.from_env({}, history_db=new_db("api"))
    s = history.init_app(app, settings)

    @app.errorhandler(ClassifierError)
    def _error(exc):  # the gateway maps errors the same way
        return exc.to_dict(), exc.status

    s.record(record(1, image=jpeg()))
    for i in range(2, 8):
        s.record(record(i, degraded=(i == 5)))
    assert s.flush()
    yield app.test_client()
    s.close()


def test_api_lists_with_filters_and_cursor(client):
    body = client.get("/v1/history?limit=3").get_json()
    assert [i["request_id"] for i in body["items"]] == ["req-7", "req-6", "req-5"]
    assert body["next_cursor"] and body["next_url"].startswith("/v1/history?")
    nxt = client.get(body["next_url"]).get_json()
    assert [i["request_id"] for i in nxt["items"]] == ["req-4", "req-3", "req-2"]
    degraded = client.get("/v1/history?degraded=true").get_json()
    assert [i["request_id"] for i in degraded["items"]] == ["req-5"]
    assert client.get("/v1/history?label=banana").get_json()["items"][0]["label"] == "banana"


def test_api_csv_and_thumbnail(client):
    for url in ("/v1/history.csv?label=banana", "/v1/history?format=csv&label=banana"):
        resp = client.get(url)
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
        assert [r["request_id"] for r in rows] == ["req-7", "req-4", "req-1"]
    first = client.get("/v1/history?label=banana").get_json()["items"][-1]
    thumb = client.get(first["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert client.get(f"/v1/history/{first['id']}").get_json()["request_id"] == "req-1"


def test_api_errors_are_json_in_words(client):
    resp = client.get("/v1/history?degraded=maybe")
    assert resp.status_code == 400 and "degraded must be" in resp.get_json()["error"]["message"]
    resp = client.get("/v1/history/999999/thumbnail")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
