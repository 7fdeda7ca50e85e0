"""The gateway's own factory: its runtime, routes, cache, history and pages, built on serving's generic pieces."""
from __future__ import annotations

from shared.gateway.app import build_app
from shared.gateway.client import MemberClient, current_member_client
from shared.gateway.runtime import GatewayRuntime
from shared.history import HistoryStore, current_history
from shared.serving.admission import Admission, current_admission
from shared.serving.observability import Health, current_health
from shared.serving.runtime import current_runtime


def test_the_gateway_builds_its_runtime_routes_history_and_pages(tmp_path):
    app = build_app({"MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3", "LOAD_IN_BACKGROUND": False})
    with app.app_context():
        assert isinstance(current_runtime(GatewayRuntime), GatewayRuntime)
        assert isinstance(current_member_client(), MemberClient) and isinstance(current_history(), HistoryStore)
        assert isinstance(current_health(), Health) and isinstance(current_admission(), Admission)
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/", "/predict", "/v1/history", "/history", "/ui", "/v2/models/<name>/infer", "/v2/health/ready",
            "/metrics", "/openapi.json"} <= rules
    assert app.config["SETTINGS"].service_name == "stacking"


def test_the_gateway_is_the_gateway_whatever_service_name_it_is_given(tmp_path):
    app = build_app({"SERVICE_NAME": "ocr_nb", "MODELS_DIR": tmp_path, "HISTORY_ENABLED": False,
                     "LOAD_IN_BACKGROUND": False})
    with app.app_context():
        assert current_runtime().name == "stacking"
    assert app.test_client().get("/v2/health/live").get_json()["service"] == "stacking"
