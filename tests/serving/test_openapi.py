"""The OpenAPI document against the app itself: every route documented, nothing documented that is not a route; the
docs page and its assets come from the swagger-ui-bundle wheel."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import schemathesis

from shared.serving.app import create_app

IGNORED = {"/static/<path:filename>", "/ui/static/<path:filename>", "/docs/static/<path:filename>"}


@pytest.fixture(params=["clip_svm", "stacking"])
def app(request, tmp_path: Path):
    return create_app({"SERVICE_NAME": request.param, "MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3",
                       "LOAD_IN_BACKGROUND": False})


def _routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.rule in IGNORED:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_the_document_lists_exactly_the_apps_routes(app):
    doc = app.test_client().get("/openapi.json").get_json()
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == _routes(app)
    assert doc["openapi"].startswith("3.0") and doc["info"]["title"].startswith(app.extensions["runtime"].name)
    schema = schemathesis.openapi.from_dict(doc)  # loads and resolves every $ref
    assert len(list(schema.get_all_operations())) == len(documented)


def test_docs_page_is_served_from_the_wheel_not_a_cdn(app):
    client = app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http" not in html and "/openapi.json" in html
    for asset in re.findall(r'(?:src|href)="(docs/static/[^"]+)"', html):
        resp = client.get("/" + asset)
        assert resp.status_code == 200 and len(resp.data) > 100, asset
    assert client.get("/docs/static/index.html").status_code == 404
