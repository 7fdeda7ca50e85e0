"""API keys: off by default; with keys set, the closed routes need one (Bearer or X-API-Key), the open ones do not."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.config import Settings
from shared.gateway.app import build_app
from shared.members import MemberSpec
from shared.serving import auth
from shared.serving.app import create_app
from tests.conftest import image_bytes
from tests.serving.test_app import COLOURS, DOUBLE, double_member, train_double  # noqa: F401 - the fixture

RED = image_bytes("PNG", color=COLOURS["red"])
KEY, OTHER = "k-3f9a1c", "k-second"


@pytest.fixture
def make_client(double_member: MemberSpec, tmp_path: Path):  # noqa: F811 - the imported fixture
    train_double(tmp_path / "models", double_member)

    def make(**config):
        app = create_app({"SERVICE_NAME": DOUBLE, "MODELS_DIR": tmp_path / "models", "WEIGHTS_DIR": tmp_path,
                          "LOAD_IN_BACKGROUND": False, **config})
        return app.test_client()
    return make


def test_keys_are_off_by_default(make_client):
    client = make_client()
    assert client.post("/", data=RED).status_code == 200
    assert client.get(f"/v2/models/{DOUBLE}").status_code == 200


def test_without_a_key_401_with_one_200_health_open(make_client, caplog):
    client = make_client(API_KEYS=f"{KEY}, {OTHER}")
    caplog.set_level(logging.DEBUG)
    missing = client.post("/", data=RED)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.get_json()["error"]["code"] == "unauthorized"
    wrong = client.post("/", data=RED, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.get_json()["error"]["message"]
    assert client.post("/", data=RED, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.post("/predict", data=RED, headers={"X-API-Key": OTHER}).status_code == 200
    infer = client.post(f"/v2/models/{DOUBLE}/infer", json={})
    assert infer.status_code == 401 and isinstance(infer.get_json()["error"], str)  # the protocol's error shape
    assert client.get(f"/v2/models/{DOUBLE}").status_code == 401
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", f"/v2/models/{DOUBLE}/ready", "/metrics",
                 "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
    assert client.get("/nope").status_code == 404
    assert KEY not in caplog.text and OTHER not in caplog.text  # never logged


def test_metrics_can_need_a_key_and_keys_come_from_a_file(make_client, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# ops\n\n{KEY}\n")
    client = make_client(API_KEY_FILE=str(keyfile), METRICS_REQUIRE_KEY=True)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_the_gateway_sends_its_member_key(tmp_path):
    settings = {"SERVICE_NAME": "stacking", "MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3",
                "LOAD_IN_BACKGROUND": False}
    first = build_app({**settings, "API_KEYS": f"{KEY},{OTHER}"})
    assert first.extensions["members"].session.headers["Authorization"] == f"Bearer {KEY}"
    chosen = build_app({**settings, "API_KEYS": KEY, "GATEWAY_MEMBER_KEY": OTHER})
    assert chosen.extensions["members"].session.headers["Authorization"] == f"Bearer {OTHER}"
    assert "Authorization" not in build_app(settings).extensions["members"].session.headers
    page = first.test_client()
    assert page.get("/").status_code == 200  # the page shell; its POST needs the key
    history = page.get("/history", headers={"Accept": "text/html"})
    assert history.status_code == 401 and "sessionStorage" in history.get_data(as_text=True)
    assert page.get("/v1/history").status_code == 401


def test_keys_compare_in_constant_time_against_every_key():
    keys = [b"a" * 8, b"b" * 8]
    assert auth.matches(b"b" * 8, keys) and not auth.matches(b"a" * 7, keys)
    assert auth.load_keys(Settings(api_keys=" x, ,y,x ")) == ["x", "y"]


def test_how_a_key_may_be_presented(make_client):
    client = make_client(API_KEYS=KEY)
    needed, invalid = "An API key is needed", "not valid"
    cases = [({"Authorization": f"bearer  {KEY} "}, 200), ({"X-API-Key": f" {KEY} "}, 200),
             ({"Authorization": "Basic eDp5", "X-API-Key": KEY}, 200),  # another scheme: the X-API-Key counts
             ({"Authorization": "Bearer nope", "X-API-Key": KEY}, invalid),  # Bearer first
             ({"X-API-Key": " "}, needed), ({"Authorization": "Basic eDp5"}, needed), ({}, needed)]
    for headers, expected in cases:
        resp = client.post("/predict", data=RED, headers=headers)
        if expected == 200:
            assert resp.status_code == 200, headers
        else:
            assert resp.status_code == 401 and expected in resp.get_json()["error"]["message"], headers
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="classifier"'
    assert client.options("/predict").status_code == 200  # preflight: no key asked


def test_the_app_says_whether_keys_are_on(make_client):
    for config, on in (({}, False), ({"API_KEYS": KEY}, True)):
        app = make_client(**config).application
        with app.app_context():
            assert auth.keys_on() is on
