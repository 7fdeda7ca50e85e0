"""The OpenAPI 3.0 document of each service, generated from its routes, and the interactive docs page.

Each view function documents its operations as YAML after `---` in its docstring; apispec's FlaskPlugin reads them
for every rule of the app (path parameters come from the rule itself). What several operations share is registered
here once: the schemas, the error responses and the image body. Two things are added from elsewhere: which routes
need a key (auth's open routes) and the gateway's 504 on the inference protocol's infer (its members time out).

`GET /openapi.json`: the document, built on first use (the routes are all registered by then). `GET /docs`:
Swagger UI, served from the `swagger-ui-bundle` wheel's own files (never a CDN).
"""
from __future__ import annotations

import copy
import json
import re
from functools import cached_property
from typing import Any

from apispec import APISpec
from apispec_webframeworks.flask import FlaskPlugin
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    send_from_directory,
)
from werkzeug.routing import Rule

import shared
from shared.members import GATEWAY

bp = Blueprint("openapi", __name__)

JSON = "application/json"
_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")
_EXTENSION = "openapi"  # app.extensions key; read through current_document()


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "OipError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Prediction": {
        "type": "object", "required": ["class_id", "proba", "label", "probas", "model", "model_version"],
        "properties": {
            "class_id": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 1},
            "proba": {"type": "number"}, "label": {"type": "string"},
            "probas": {"type": "object", "additionalProperties": {"type": "number"}},
            "model": {"type": "string"}, "model_version": {"type": "string"},
            "synthetic_weights": {"type": "boolean"},
            "weights": {"type": "object", "additionalProperties": {"type": "string"}},
            "members": {"type": "object", "description": "gateway: each member's outcome"},
            "degraded": {"type": "boolean"}, "failed": {"type": "object"},
            "latency_ms": {"type": "number"}, "request_id": {"type": "string"}}},
    "Health": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}}}},
    "TensorMetadata": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}},
    "ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                      "properties": {
                          "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                          "platform": {"type": "string"},
                          "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                          "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                          "parameters": {"type": "object", "description": "classes, artifacts, weights, ready"}}},
    "ModelReady": {"type": "object", "required": ["name", "ready"],
                   "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "InferRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "content_type": {"type": "string", "enum": ["base64", "str"]},
                "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object", "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string", "enum": ["image"]},
                    "datatype": {"type": "string", "enum": ["BYTES"]},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "parameters": {"type": "object", "properties": {
                        "content_type": {"type": "string", "enum": ["base64", "str"]},
                        "binary_data_size": {"type": "integer"}}},
                    "data": {"type": "array", "items": {"type": "string"},
                             "description": "encoded images: base64 (content_type base64) or one char per byte"}}}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "enum": ["probas", "class_id", "label"]},
                "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}}}},
    "InferResponse": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": {"type": "object", "description": "classes, then every other field of the raw "
                                                            "prediction body as a list, one entry per image"},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name", "datatype", "shape"],
                "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                               "shape": {"type": "array", "items": {"type": "integer"}},
                               "data": {"type": "array"}, "parameters": {"type": "object"}}}}}},
    "RepositoryIndex": {"type": "array", "items": {"type": "object", "required": ["name", "version", "state"],
                                                   "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "state": {"type": "string", "enum": ["READY", "LOADING", "UNAVAILABLE"]}, "reason": {"type": "string"},
        "active": {"type": "boolean"}, "replica": {"type": "string", "description": "gateway: the member replica"},
        "canary": {"type": "number"}, "shadow": {"type": "number"}}}},
    "RepositoryRequest": {"type": "object", "properties": {"parameters": {"type": "object", "properties": {
        "version": {"type": "string", "description": "default: the newest version in the repository"},
        "activate": {"type": "boolean", "description": "load only: switch to it once loaded (default true)"}}}}},
    "CandidateRequest": {"type": "object", "required": ["version", "percent"], "properties": {
        "version": {"type": "string", "nullable": True}, "percent": {"type": "number", "minimum": 0, "maximum": 100}}},
    "ServingState": {"type": "object", "properties": {
        "active": {"type": "string"}, "loaded": {"type": "array", "items": {"type": "string"}},
        "previous": {"type": "array", "items": {"type": "string"}}, "canary": {"type": "object", "nullable": True},
        "shadow": {"type": "object", "nullable": True}}},
    "HistoryPage": {"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"type": "object"}}, "next_cursor": {"type": "string", "nullable": True},
        "next_url": {"type": "string"}, "filters": {"type": "object"}, "recording": {"type": "boolean"}}},
}

# Error responses, by name: the operations' docstrings refer to them ("400": BadInput); each also in the inference
# protocol's flat error shape, named with an Oip prefix.
ERRORS = {400: ("BadInput", "Bad input (empty or corrupt image, malformed request)"),
          401: ("Unauthorized", "No key, or not a valid one"), 403: ("Forbidden", "Not an admin key (ADMIN_KEYS)"),
          404: ("NotFound", "Not found"), 409: ("Conflict", "Conflicts with the serving model's state"), 413: ("TooLarge", "Body or pixel count over the limit"),
          415: ("NotAnImage", "Not an image / unsupported type"), 422: ("Rejected", "A member rejected the input"),
          503: ("NotReady", "Not ready (loading, draining), no member answered, or the history database is down"),
          504: ("TimedOut", "No member answered in time")}

RESPONSES = {"Page": {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}

REQUEST_BODIES = {"Image": {
    "required": True, "description": "One image: the raw bytes (any Content-Type) or a multipart `file`.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"}}}}}}}

# Query parameters several operations share, by name: a docstring lists `HistoryFilters` (every history filter) or a
# parameter's own name; each is written out where it is used.
QUERY_PARAMETERS = {name: {"name": name, "in": "query", "required": False, "schema": schema, "description": why}
                    for name, schema, why in (
    ("label", {"type": "string"}, "the answered class"),
    ("since", {"type": "string"}, "answers from this time: epoch seconds, a date or an ISO datetime"),
    ("until", {"type": "string"}, "answers before this time (a date includes that day)"),
    ("degraded", {"type": "string"}, "true: degraded answers only; false: complete ones only"),
    ("reviewed", {"type": "string", "enum": ["labelled", "unlabelled", "wrong"]}, "by what people said of them"),
    ("model_version", {"type": "string"}, "answers of this model version"),
    ("limit", {"type": "integer"}, "records a page"),
    ("cursor", {"type": "string"}, "the page after the one that gave this cursor"),
)}
PARAMETER_GROUPS = {"HistoryFilters": ("label", "since", "until", "degraded", "reviewed", "model_version")}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "API_KEYS / API_KEY_FILE, when set"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}


def document(app: Flask, service: str) -> dict:
    """The OpenAPI document of `app`'s routes, as `service` (a member's name or the gateway's) serves them."""
    spec = APISpec(title=f"{service}: review-photo classifier", version=shared.__version__, openapi_version="3.0.3",
                   plugins=[_RulesPlugin()],
                   info={"description": "POST an image's bytes; or speak the Open Inference Protocol v2 at /v2."})
    _register_components(spec)
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if "---" in (view.__doc__ or ""):  # documented; the rest (static files, docs assets) is not the API
            spec.path(view=view, app=app, rule=rule)
    doc = spec.to_dict()
    _document_keys(doc["paths"])
    if service == GATEWAY:
        _gateway_timeouts(doc["paths"])
    return doc


def _register_components(spec: APISpec) -> None:
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema)
    for name, why in ERRORS.values():
        spec.components.response(name, _json(_ref("Error"), why))
        spec.components.response("Oip" + name, _json(_ref("OipError"), why))
    for name, response in RESPONSES.items():
        spec.components.response(name, response)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)


class _RulesPlugin(FlaskPlugin):
    """FlaskPlugin for one rule at a time: a view may have several (`/` and `/predict`), FlaskPlugin takes its first.

    Each operation's path parameters come from the rule (`<int:...>` an integer >= 0), ahead of the docstring's own;
    `requestBody: <name>` is one of REQUEST_BODIES.
    """

    def path_helper(self, path: str | None = None, operations: dict | None = None, parameters: list | None = None,
                    *, rule: Rule, **kwargs: Any) -> str | None:
        self._rule = rule  # for _rule_for_view, which FlaskPlugin's path_helper asks
        path = super().path_helper(path, operations, parameters, **kwargs)
        for operation in (operations or {}).values():
            if isinstance(operation.get("requestBody"), str):  # a shared body by name; apispec registers none
                operation["requestBody"] = copy.deepcopy(REQUEST_BODIES[operation["requestBody"]])
            parameters = [*_path_parameters(rule), *_named_parameters(operation.get("parameters", []))]
            if parameters:
                operation["parameters"] = parameters
        return path

    def _rule_for_view(self, view: Any, app: Flask | None = None) -> Rule:
        return self._rule


def _named_parameters(parameters: list) -> list[dict]:
    """A docstring's parameters with the shared ones (QUERY_PARAMETERS, PARAMETER_GROUPS) written out."""
    out = []
    for item in parameters:
        names = PARAMETER_GROUPS.get(item, (item,)) if isinstance(item, str) else ()
        out += [copy.deepcopy(QUERY_PARAMETERS[name]) for name in names] or [item]
    return out


def _path_parameters(rule: Rule) -> list[dict]:
    params = []
    for converter, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule.rule):
        schema = {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _document_keys(paths: dict) -> None:
    """The routes that need a key when keys are on: 401 documented, the key optional (keys are off by default)."""
    from shared.serving import auth

    open_paths = {FlaskPlugin.flaskpath2openapi(rule) for rule in auth.OPEN_RULES}
    for path, ops in paths.items():
        for method, op in ops.items():
            if path in open_paths or (path in auth.OPEN_PAGES and method == "get"):
                continue
            op["security"] = [{}, {"bearer": []}, {"apiKey": []}]
            op["responses"].setdefault("401", _json(_ref("OipError" if path.startswith("/v2/models") else "Error"),
                                                    "An API key is needed (API_KEYS set)"))
            if path in auth.HTML_PAGES:  # a browser gets the page that asks for the key
                op["responses"]["401"]["content"]["text/html"] = {"schema": {"type": "string"}}


def _gateway_timeouts(paths: dict) -> None:
    """The gateway's infer also answers 504 (no member in time); the view is every service's, so it is added here."""
    for path, ops in paths.items():
        if path.endswith("/infer"):
            ops["post"]["responses"]["504"] = {"$ref": "#/components/responses/OipTimedOut"}


class _Document:
    """The app's document, built on first use: init_app runs before the other components register their routes.

    (Two threads asking first may both build it; the result is the same.)
    """

    def __init__(self, app: Flask, service: str):
        self.app, self.service = app, service

    @cached_property
    def value(self) -> dict:
        return document(self.app, self.service)


def init_app(app: Flask, service: str) -> None:
    """Serve /openapi.json and /docs for `service`."""
    app.extensions[_EXTENSION] = _Document(app, service)
    app.register_blueprint(bp)


def current_document() -> dict:
    """The current app's OpenAPI document."""
    return current_app.extensions[_EXTENSION].value


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """This document.
    ---
    get:
      summary: This document
      tags: [docs]
      responses:
        "200":
          description: OpenAPI 3.0
          content: {application/json: {schema: {type: object}}}
    """
    return jsonify(current_document())


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI over this document.
    ---
    get:
      summary: Interactive docs (Swagger UI)
      tags: [docs]
      responses:
        "200": Page
    """
    title = current_document()["info"]["title"]
    page = _PAGE.replace("{title}", title).replace("{url}", json.dumps("/openapi.json"))
    return Response(page, mimetype="text/html")


@bp.get("/docs/static/<path:filename>")
def docs_asset(filename: str) -> Response:
    """Swagger UI's files, from the swagger-ui-bundle wheel."""
    if filename not in _ASSETS:
        abort(404)
    from swagger_ui_bundle import swagger_ui_path  # imported here: only /docs needs it

    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css"><link rel="icon" href="docs/static/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/static/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: {url}, dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
</script></body></html>
"""
