"""The OpenAPI 3.0 document of each service, written once as data, and the interactive docs page.

`GET /openapi.json`: the document (the members' operations; the gateway adds its pages and history). `GET /docs`:
Swagger UI, served from the `swagger-ui-bundle` wheel's own files (never a CDN).
"""
from __future__ import annotations

import json
import re
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    send_from_directory,
)

import shared
from shared.members import GATEWAY

bp = Blueprint("openapi", __name__)

JSON = "application/json"
_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int, schema: str = "Error") -> dict:
    why = {400: "Bad input (empty or corrupt image, malformed request)", 401: "A key is needed",
           404: "Not found", 413: "Body or pixel count over the limit", 415: "Not an image / unsupported type",
           422: "A member rejected the input", 503: "Not ready (loading, draining) or no member answered",
           504: "No member answered in time"}
    return {str(s): _json(_ref(schema), why[s]) for s in statuses}


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
    "HistoryPage": {"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"type": "object"}}, "next_cursor": {"type": "string", "nullable": True},
        "next_url": {"type": "string"}, "filters": {"type": "object"}, "recording": {"type": "boolean"}}},
}

_IMAGE_BODY = {"required": True, "description": "One image: the raw bytes (any Content-Type) or a multipart `file`.",
               "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                           "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                               "file": {"type": "string", "format": "binary"}}}}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_RECORD = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
_HTML = {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}


def _predict(gateway: bool) -> dict:
    errors = (400, 413, 415, 422, 503, 504) if gateway else (400, 413, 415, 503)
    return {"post": {"summary": "Classify one image (raw bytes or multipart `file`)", "tags": ["predict"],
                     "requestBody": _IMAGE_BODY,
                     "responses": {"200": _ok_prediction(gateway), **_errors(*errors)}}}


def _ok_prediction(gateway: bool) -> dict:
    ok = _json(_ref("Prediction"), "The prediction")
    if gateway:
        ok["headers"] = {"X-Cache": {"description": "hit or miss, when the response cache is on (CACHE_MAX_ENTRIES)",
                                     "schema": {"type": "string", "enum": ["hit", "miss"]}}}
    return ok


def _oip(gateway: bool, versioned: bool) -> dict[str, dict]:
    base = "/v2/models/{name}" + ("/versions/{version}" if versioned else "")
    params = [_NAME, _VERSION] if versioned else [_NAME]
    infer_errors = (400, 404, 413, 415, 503, 504) if gateway else (400, 404, 413, 415, 503)
    return {
        base: {"get": {"summary": "Model metadata (Open Inference Protocol)", "tags": ["inference protocol"],
                       "parameters": params, "responses": {"200": _json(_ref("ModelMetadata"), "Metadata"),
                                                           **_errors(404, 503, schema="OipError")}}},
        base + "/ready": {"get": {"summary": "Model readiness", "tags": ["inference protocol"], "parameters": params,
                                  "responses": {"200": _json(_ref("ModelReady"), "Ready"),
                                                "503": _json(_ref("ModelReady"), "Not ready"),
                                                **_errors(404, schema="OipError")}}},
        base + "/infer": {"post": {
            "summary": "Classify one or more images (a BYTES tensor; JSON or Triton's binary tensor extension)",
            "tags": ["inference protocol"], "parameters": params,
            "requestBody": {"required": True, "content": {
                JSON: {"schema": _ref("InferRequest")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                             "description": "JSON header + binary tensors; needs the "
                                                            "Inference-Header-Content-Length header"}}},
            "responses": {"200": {"description": "Output tensors", "content": {
                JSON: {"schema": _ref("InferResponse")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(*infer_errors, schema="OipError")}}},
    }


def document(service: str) -> dict:
    """The OpenAPI document of `service` (a member's name or the gateway's)."""
    gateway = service == GATEWAY
    paths: dict[str, Any] = {
        "/predict": _predict(gateway),
        "/v2/health/live": {"get": {"summary": "Liveness", "tags": ["health"],
                                    "responses": {"200": {"description": "The process is up"}}}},
        "/v2/health/ready": {"get": {"summary": "Readiness (loaded, warmed up, not draining)", "tags": ["health"],
                                     "responses": {"200": _json(_ref("Health"), "Ready"),
                                                   "503": _json(_ref("Health"), "Not ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["health"], "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/v2": {"get": {"summary": "Server metadata (Open Inference Protocol)", "tags": ["inference protocol"],
                        "responses": {"200": _json(_ref("ServerMetadata"), "Metadata")}}},
        **_oip(gateway, versioned=False), **_oip(gateway, versioned=True),
        "/openapi.json": {"get": {"summary": "This document", "tags": ["docs"],
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}},
        "/docs": {"get": {"summary": "Interactive docs (Swagger UI)", "tags": ["docs"], "responses": {"200": _HTML}}},
    }
    paths["/"] = dict(_predict(gateway))
    if gateway:
        paths["/"]["get"] = {"summary": "The page to try photos", "tags": ["pages"], "responses": {"200": _HTML}}
        paths.update(_gateway_paths())
    _document_keys(paths)
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{service}: review-photo classifier", "version": shared.__version__,
                 "description": "POST an image's bytes; or speak the Open Inference Protocol v2 at /v2."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "API_KEYS / API_KEY_FILE, when set"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }


def _document_keys(paths: dict) -> None:
    """The routes that need a key when keys are on: 401 documented, the key optional (keys are off by default)."""
    from shared.serving import auth

    open_paths = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule) for rule in auth.OPEN_RULES}
    for path, ops in paths.items():
        for method, op in ops.items():
            if path in open_paths or (path in auth.OPEN_PAGES and method == "get"):
                continue
            op["security"] = [{}, {"bearer": []}, {"apiKey": []}]
            op["responses"].setdefault("401", _json(_ref("OipError" if path.startswith("/v2/models") else "Error"),
                                                    "An API key is needed (API_KEYS set)"))
            if path in auth.HTML_PAGES:  # a browser gets the page that asks for the key
                op["responses"]["401"]["content"]["text/html"] = {"schema": {"type": "string"}}


def _gateway_paths() -> dict[str, Any]:
    filters = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
               for n in ("label", "since", "until", "degraded")]
    page = [*filters, {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}]
    csv = {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}
    image = {"description": "The image", "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}
    return {
        "/ui": {"get": {"summary": "The page to try photos", "tags": ["pages"], "responses": {"200": _HTML}}},
        "/history": {"get": {"summary": "The history page", "tags": ["pages"],
                             "parameters": [*filters, {"name": "page_size", "in": "query", "required": False,
                                                       "schema": {"type": "integer"}}],
                             "responses": {"200": _HTML, "400": _HTML}}},
        "/v1/history": {"get": {"summary": "Recorded predictions, newest first, paged", "tags": ["history"],
                                "parameters": page, "responses": {"200": _json(_ref("HistoryPage"), "A page"),
                                                                  **_errors(400)}}},
        "/v1/history.csv": {"get": {"summary": "The matching records as CSV", "tags": ["history"],
                                    "parameters": filters, "responses": {"200": csv, **_errors(400)}}},
        "/v1/history/{record_id}": {"get": {"summary": "One record", "tags": ["history"], "parameters": [_RECORD],
                                            "responses": {"200": _json({"type": "object"}, "The record"),
                                                          **_errors(404)}}},
        "/v1/history/{record_id}/thumbnail": {"get": {"summary": "A record's JPEG thumbnail", "tags": ["history"],
                                                      "parameters": [_RECORD],
                                                      "responses": {"200": image, **_errors(404)}}},
        "/v1/history/{record_id}/image": {"get": {"summary": "A record's image (HISTORY_KEEP_IMAGES=1)",
                                                  "tags": ["history"], "parameters": [_RECORD],
                                                  "responses": {"200": image, **_errors(404)}}},
    }


def init_app(app: Flask, service: str) -> None:
    """Serve /openapi.json and /docs for `service`."""
    app.extensions["openapi"] = document(service)
    app.register_blueprint(bp)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(current_app.extensions["openapi"])


@bp.get("/docs")
def docs() -> Response:
    title = current_app.extensions["openapi"]["info"]["title"]
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
