"""The history over HTTP: /v1/history (JSON pages, CSV), one record, its thumbnail and image; and init_app."""
from __future__ import annotations

import atexit

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for

from shared.config import Settings
from shared.history.query import parse_filter, parse_limit
from shared.history.store import HistoryStore, HistoryUnavailable

IMAGE_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif", b"RIFF": "image/webp",
               b"BM": "image/bmp", b"II*\x00": "image/tiff", b"MM\x00*": "image/tiff"}

_EXTENSION = "history"  # this app's HistoryStore, in app.extensions
bp = Blueprint("history_api", __name__)


def init_app(app: Flask, settings: Settings) -> HistoryStore:
    """Give the app a HistoryStore (read back with current_history) and register the /v1/history endpoints."""
    store = HistoryStore.from_settings(settings)
    app.extensions[_EXTENSION] = store
    atexit.register(store.close)  # a stopping worker writes what is still queued
    app.register_blueprint(bp)
    return store


def current_history() -> HistoryStore:
    """The current app's history store; HistoryUnavailable (503) where the app has none."""
    store = current_app.extensions.get(_EXTENSION)
    if store is None:
        raise HistoryUnavailable("The prediction history is not set up in this app.")
    return store


@bp.get("/v1/history")
def list_records() -> Response:
    """One page, newest first, with thumbnail links and the next page's URL; `format=csv` exports instead.
    ---
    get:
      summary: Recorded predictions, newest first, paged
      tags: [history]
      parameters: [HistoryFilters, limit, cursor]
      responses:
        "200": {description: A page, content: {application/json: {schema: HistoryPage}}}
        "400": BadInput
    """
    if request.args.get("format", "json").lower() == "csv":
        return export_csv()
    flt, store = parse_filter(request.args), current_history()
    page = store.query(flt, limit=parse_limit(request.args.get("limit")), cursor=request.args.get("cursor"))
    for item in page.items:
        if item["has_thumbnail"]:
            item["thumbnail_url"] = url_for("history_api.thumbnail", record_id=item["id"])
    body = {"items": page.items, "next_cursor": page.next_cursor, "filters": flt.to_query(),
            "recording": store.enabled}
    if page.next_cursor:
        body["next_url"] = url_for("history_api.list_records", cursor=page.next_cursor,
                                   limit=len(page.items), **flt.to_query())
    return jsonify(body)


@bp.get("/v1/history.csv")
def export_csv() -> Response:
    """Every matching record as CSV, streamed.
    ---
    get:
      summary: The matching records as CSV
      tags: [history]
      parameters: [HistoryFilters]
      responses:
        "200": {description: CSV, content: {text/csv: {schema: {type: string}}}}
        "400": BadInput
    """
    flt = parse_filter(request.args)
    headers = {"Content-Disposition": 'attachment; filename="history.csv"'}
    return Response(current_history().iter_csv(flt), mimetype="text/csv", headers=headers)


@bp.get("/v1/history/<int:record_id>")
def one_record(record_id: int) -> Response:
    """One record as JSON.
    ---
    get:
      summary: One record
      tags: [history]
      responses:
        "200": {description: The record, content: {application/json: {schema: {type: object}}}}
        "404": NotFound
    """
    return jsonify(current_history().get(record_id))


@bp.get("/v1/history/<int:record_id>/thumbnail")
def thumbnail(record_id: int) -> Response:
    """The record's JPEG thumbnail.
    ---
    get:
      summary: A record's JPEG thumbnail
      tags: [history]
      responses:
        "200": {description: The image, content: {image/*: {schema: {type: string, format: binary}}}}
        "404": NotFound
    """
    return _image_response(current_history().thumbnail(record_id))


@bp.get("/v1/history/<int:record_id>/image")
def image(record_id: int) -> Response:
    """The record's full image (only kept with HISTORY_KEEP_IMAGES=1).
    ---
    get:
      summary: A record's image (HISTORY_KEEP_IMAGES=1)
      tags: [history]
      responses:
        "200": {description: The image, content: {image/*: {schema: {type: string, format: binary}}}}
        "404": NotFound
    """
    return _image_response(current_history().image(record_id))


def _image_response(data: bytes) -> Response:
    mimetype = next((m for magic, m in IMAGE_MAGIC.items() if data.startswith(magic)), "application/octet-stream")
    # Records never change once written, so a browser may keep them.
    return Response(data, mimetype=mimetype, headers={"Cache-Control": "private, max-age=86400"})
