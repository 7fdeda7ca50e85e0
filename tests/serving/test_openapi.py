"""The OpenAPI document against the app itself: every route documented, nothing documented that is not a route; the
docs page and its assets come from the swagger-ui-bundle wheel; the generated document says what the hand-written one
said (the snapshot in openapi_snapshot/, taken before apispec; an API change updates it: `python -m
tests.serving.test_openapi` rewrites it from the current apps)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import schemathesis

import shared
from shared.gateway.app import build_app
from shared.members import GATEWAY, member_names
from shared.serving.app import create_app

SNAPSHOTS = Path(__file__).parent / "openapi_snapshot"
IGNORED = {"/static/<path:filename>", "/ui/static/<path:filename>", "/docs/static/<path:filename>"}


@pytest.fixture(params=["clip_svm", "stacking"])
def app(request, tmp_path: Path):
    factory = build_app if request.param == "stacking" else create_app
    return factory({"SERVICE_NAME": request.param, "MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3",
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


@pytest.mark.parametrize("service", [*member_names(), GATEWAY])
def test_the_generated_document_says_what_the_snapshot_says(service, tmp_path):
    """Paths, methods, parameters, bodies, responses (their shared components inlined), schemas, security."""
    expected = json.loads(_snapshot_path(service).read_text())
    expected["info"].update(title=expected["info"]["title"].format(service=service), version=shared.__version__)
    assert comparable(_document(service, tmp_path)) == expected


def comparable(doc: dict) -> dict:
    """The document with its shared responses written out where they are used, as the hand-written one had them."""
    components = doc["components"]
    return {**doc, "paths": _inline(doc["paths"], components.get("responses", {})),
            "components": {k: v for k, v in components.items() if k != "responses"}}


def _inline(node, responses: dict):
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/components/responses/"):
            return _inline(responses[ref.rsplit("/", 1)[1]], responses)
        return {k: _inline(v, responses) for k, v in node.items()}
    return [_inline(v, responses) for v in node] if isinstance(node, list) else node


def _document(service: str, tmp_path: Path) -> dict:
    factory = build_app if service == GATEWAY else create_app
    app = factory({"SERVICE_NAME": service, "MODELS_DIR": tmp_path, "HISTORY_DB": tmp_path / "h.sqlite3",
                   "LOAD_IN_BACKGROUND": False})
    return app.test_client().get("/openapi.json").get_json()


def _snapshot_path(service: str) -> Path:
    return SNAPSHOTS / ("stacking.json" if service == GATEWAY else "member.json")


def write_snapshots(tmp_path: Path) -> None:
    """Rewrite the snapshots from the current apps (a member's stands for every member)."""
    for service in (member_names()[0], GATEWAY):
        doc = comparable(_document(service, tmp_path))
        doc["info"].update(title="{service}: review-photo classifier", version="{version}")
        _snapshot_path(service).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    write_snapshots(Path(tempfile.mkdtemp()))
