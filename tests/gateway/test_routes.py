"""The gateway's routes without members or models: readiness, input checked first, errors in words."""
from __future__ import annotations

import pytest

from shared.gateway.client import MemberAnswer, Outcome
from shared.gateway.routes import _nobody_answered
from shared.gateway.app import build_app
from tests.conftest import image_bytes


@pytest.fixture
def client(tmp_path):
    """A gateway whose models folder is empty: live, never ready."""
    app = build_app({"MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3", "LOAD_IN_BACKGROUND": False})
    return app.test_client()


def test_nobody_answered_is_504_on_timeouts_and_503_otherwise():
    late = {"a": MemberAnswer("a", Outcome.TIMEOUT, 1.0, error="slow")}
    down = {"a": MemberAnswer("a", Outcome.CONNECTION_ERROR, 1.0, error="refused"),
            "b": MemberAnswer("b", Outcome.DEADLINE, 1.0, error="late")}
    assert _nobody_answered(late).status == 504
    err = _nobody_answered(down)
    assert err.status == 503 and "a: refused" in err.message and "b: late" in err.message


def test_every_member_full_is_a_503_with_the_longest_retry_after_they_gave():
    full = {"a": MemberAnswer("a", Outcome.OVERLOADED, 1.0, status=503, error="HTTP 503: Too busy", retry_after=4),
            "b": MemberAnswer("b", Outcome.OVERLOADED, 1.0, status=503, error="HTTP 503: Too busy")}
    err = _nobody_answered(full)
    assert err.status == 503 and err.code == "overloaded" and err.retry_after == 4
    assert "too busy" in err.message


def test_app_without_models_is_live_not_ready_and_checks_input_first(client):
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and "manifest.json" in ready.get_json()["error"]
    assert client.post("/", data=b"not an image").status_code == 415  # input is checked before readiness
    assert client.get("/v2/models/clip_svm").status_code == 404


def test_a_valid_image_before_the_meta_models_load_is_503_saying_why(client):
    resp = client.post("/predict", data=image_bytes())
    error = resp.get_json()["error"]
    assert resp.status_code == 503 and error["code"] == "not_ready" and resp.headers["Retry-After"] == "1"
    assert error["message"].startswith("The gateway is still loading its meta-models; retry shortly. Loading failed:")


def test_the_gateway_serves_history_and_pages_too(client):
    assert client.get("/v1/history").get_json()["items"] == []
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 200
    assert client.get("/history").status_code == 200
