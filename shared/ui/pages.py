"""The try-it page and the history page, served by the gateway (plain HTML + JS, no CDN)."""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlencode

from flask import Blueprint, Flask, current_app, render_template, request

from shared.config import Settings
from shared.errors import ClassifierError
from shared.features.registry import part_label, part_labels
from shared.feedback import drift_now, quality_now, serving_classes, serving_weights
from shared.history import (PAGE_SIZE, HistoryFilter, HistoryStore, HistoryUnavailable, current_history,
                            member_top_proba, parse_filter)

PREDICT_URL = "/"  # the gateway's prediction route (API clients POST raw bytes there too)
ACCEPTED_TYPES = "image/jpeg,image/png,image/webp,image/bmp,image/gif,image/tiff"
CANVAS_PX = 280

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/ui/static")


def init_app(app: Flask) -> None:
    """Register the pages: GET / and /ui (classify), GET /history, GET /review, GET /quality."""
    app.register_blueprint(bp)


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _history() -> HistoryStore | None:
    """The app's history store; None where it has none (the pages say so)."""
    try:
        return current_history()
    except HistoryUnavailable:
        return None


@bp.get("/")
@bp.get("/ui")
def classify_page() -> str:
    """The page: pick, drop or paste photos, or draw; see each prediction.
    ---
    get:
      summary: The page to try photos
      tags: [pages]
      responses:
        "200": Page
    """
    settings, history = _settings(), _history()
    return render_template(
        "classify.html",
        predict_url=PREDICT_URL,
        max_bytes=settings.max_image_bytes,
        accepted_types=ACCEPTED_TYPES,
        canvas_px=CANVAS_PX,
        part_labels=part_labels(),  # classify.js names the weights' parts as weights_note does
        history_on=history is not None and history.enabled,
    )


@bp.get("/history")
def history_page() -> tuple[str, int]:
    """Newest first, with filters and keyset paging; problems are shown in words on the page.
    ---
    get:
      summary: The history page
      tags: [pages]
      parameters: [HistoryFilters, limit, cursor]
      responses:
        "200": Page
        "400": Page
    """
    store = _history()
    context: dict[str, Any] = {"items": [], "labels": [], "error": None, "next_url": None, "args": request.args,
                               "csv_url": "/v1/history.csv", "recording": store is not None and store.enabled,
                               "write_error": store.last_error if store is not None else None,
                               "classes": serving_classes(), "drift": _drift_banner()}
    status = 200
    try:
        if store is None:
            raise ClassifierError("The prediction history is not set up in this gateway.", status=503)
        context.update(_history_listing(store))
    except ClassifierError as exc:
        context["error"], status = exc.message, exc.status
    return render_template("history.html", **context), status


@bp.get("/review")
def review_page() -> tuple[str, int]:
    """The review queue: unlabelled predictions, those a label would teach most first, each with a label control.
    ---
    get:
      summary: The review queue page
      tags: [pages]
      parameters: [limit, cursor]
      responses:
        "200": Page
        "400": Page
    """
    context: dict[str, Any] = {"items": [], "error": None, "next_url": None, "classes": serving_classes()}
    status = 200
    try:
        store = _history()
        if store is None:
            raise ClassifierError("The prediction history is not set up in this gateway.", status=503)
        page = store.review_queue(limit=_page_size(request.args.get("limit")), cursor=request.args.get("cursor"))
        context["items"] = [_display_item(item) for item in page.items]
        context["next_url"] = f"/review?{urlencode({'cursor': page.next_cursor})}" if page.next_cursor else None
        context["first_page"] = not request.args.get("cursor")
    except ClassifierError as exc:
        context["error"], status = exc.message, exc.status
    return render_template("review.html", **context), status


@bp.get("/quality")
def quality_page() -> tuple[str, int]:
    """Live quality on the labelled predictions (tables, confusion matrix, reliability, accuracy by day) and drift.
    ---
    get:
      summary: The live quality and drift page
      tags: [pages]
      parameters:
      - since
      - until
      - model_version
      responses:
        "200": Page
        "400": Page
    """
    context: dict[str, Any] = {"quality": None, "drift": None, "error": None, "drift_error": None,
                               "args": request.args}
    status = 200
    try:
        flt = parse_filter(request.args)
        context["quality"] = quality_now(HistoryFilter(since=flt.since, until=flt.until,
                                                       model_version=flt.model_version))
        context["synthetic"] = weights_note(serving_weights()) if "synthetic" in serving_weights().values() else None
        stack = context["quality"]["models"].get("stack")
        context["confusion"] = confusion_view(stack["confusion"], stack["labels"]) if stack else None
    except ClassifierError as exc:
        context["error"], status = exc.message, exc.status
    try:
        context["drift"] = drift_now(max_age_s=_settings().loop_metrics_every_s)
    except ClassifierError as exc:
        context["drift_error"] = exc.message
    return render_template("quality.html", **context), status


def confusion_view(matrix: list[list[int]], labels: list[str]) -> dict:
    """The confusion matrix for the page: only classes with a count, when the model has more than 20."""
    keep = list(range(len(labels)))
    if len(labels) > 20:
        keep = [i for i in keep if matrix[i][i] or any(matrix[i]) or any(row[i] for row in matrix)]
    rows = [{"label": labels[i], "cells": [matrix[i][j] for j in keep]} for i in keep]
    return {"labels": [labels[i] for i in keep], "rows": rows, "hidden": len(keep) < len(labels),
            "max": max([1] + [n for row in rows for n in row["cells"]])}


def _drift_banner() -> dict | None:
    """The newest drift verdict for the history page's line, when drift is flagged; None otherwise or unknown."""
    try:
        report = drift_now(max_age_s=_settings().loop_metrics_every_s)
    except ClassifierError:
        return None
    return report["windows"][0] if report["flagged"] else None


def _history_listing(store: HistoryStore) -> dict[str, Any]:
    flt = parse_filter(request.args)
    limit = _page_size(request.args.get("limit"))
    page = store.query(flt, limit=limit, cursor=request.args.get("cursor"))
    query = flt.to_query()
    return {
        "items": [_display_item(item) for item in page.items],
        "labels": store.labels(),
        "flt": flt,
        "csv_url": "/v1/history.csv" + (f"?{urlencode(query)}" if query else ""),
        "next_url": f"/history?{urlencode({**query, 'limit': limit, 'cursor': page.next_cursor})}"
        if page.next_cursor else None,
        "first_page": not request.args.get("cursor"),
        "filtered": bool(query),
    }


def _page_size(value: str | None) -> int:
    try:
        return max(1, min(int(value), 200)) if value else PAGE_SIZE
    except ValueError:
        return PAGE_SIZE


def _display_item(item: dict) -> dict:
    """A record with its members summarised as (name, label, proba, ok, error) for the table."""
    members = []
    for name, m in sorted(item["members"].items()):
        members.append({"name": name, "label": m.get("label"), "proba": member_top_proba(m),
                        "ok": m.get("ok", True), "error": m.get("error")})
    return {**item, "member_rows": members, "date": item["time"][:10], "clock": item["time"][11:19],
            "weights_note": weights_note(item.get("weights") or {})}


def weights_note(weights: Mapping[str, str]) -> str:
    """'CLIP: synthetic weights · OCR: real' (synthetic parts first), as classify.js's weightsNote writes it."""
    ordered = sorted(weights.items(), key=lambda part: part[1] != "synthetic")
    return " · ".join(f"{part_label(kind)}: {'synthetic weights' if what == 'synthetic' else 'real'}"
                      for kind, what in ordered)


@bp.app_template_filter("pct")
def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@bp.app_template_filter("num")
def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@bp.app_template_filter("kb")
def _kb(value: int | None) -> str:
    return "—" if value is None else (f"{value / 1024:.0f} KB" if value < 1024 * 1024 else f"{value / 1048576:.1f} MB")

