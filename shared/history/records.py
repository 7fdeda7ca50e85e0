"""A prediction record <-> its database row (schema.py) <-> its JSON item and CSV row."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

from shared.history.query import iso_time
from shared.weights import combine_parts

# The prediction's own columns, first in every CSV row; each member then adds MEMBER_CSV_COLUMNS.
CSV_COLUMNS = ("id", "time", "ts", "request_id", "sha256", "size_bytes", "class_id", "label", "proba", "latency_ms",
               "degraded", "source", "synthetic_weights", "cached", "model_version", "true_label", "labelled_by",
               "labelled_at", "in_training")
MEMBER_CSV_COLUMNS = ("label", "proba", "ok", "latency_ms", "error")


def row_from_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The predictions row (without id) of one record."""
    class_id = rec.get("class_id")
    if isinstance(class_id, (list, tuple)):
        class_id = class_id[0] if class_id else None
    return {
        "ts": float(rec.get("ts") or time.time()),
        "request_id": rec.get("request_id"),
        "sha256": rec.get("sha256"),
        "size_bytes": rec.get("size_bytes"),
        "class_id": None if class_id is None else int(class_id),
        "label": rec.get("label"),
        "proba": _maybe_float(rec.get("proba")),
        "latency_ms": _maybe_float(rec.get("latency_ms")),
        "degraded": int(bool(rec.get("degraded"))),
        "source": rec.get("source"),
        "synthetic": int(bool(rec.get("synthetic_weights"))),
        "members": json.dumps(compact_members(rec.get("members") or {}), separators=(",", ":")),
        "cached": int(bool(rec.get("cached"))),
        "model_version": rec.get("model_version"),
        "probas": json.dumps(_rounded(rec.get("probas") or {}), separators=(",", ":")) if rec.get("probas") else None,
        "priority": review_priority(rec.get("probas") or {}, rec.get("label"), rec.get("members") or {}),
        "in_training": int(bool(rec.get("in_training"))),
    }


def shadow_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The shadow_answers row of what a shadow version answered for a copy of a live request."""
    return {
        "ts": float(rec.get("ts") or time.time()), "request_id": rec.get("request_id"),
        "model_version": rec.get("model_version"), "live_version": rec.get("live_version"),
        "class_id": rec.get("class_id"), "label": rec.get("label"), "proba": _maybe_float(rec.get("proba")),
        "probas": json.dumps(_rounded(rec.get("probas") or {}), separators=(",", ":")),
        "live_label": rec.get("live_label"), "degraded": int(bool(rec.get("degraded"))),
        "latency_ms": _maybe_float(rec.get("latency_ms")),
    }


def review_priority(probas: Mapping[str, float], label: str | None, members: Mapping[str, Any]) -> float | None:
    """How much a person's label would teach, 0..2: (1 - the stack's margin between its top two classes) + the
    share of answering members whose top class is not the stack's. None without the stack's probabilities."""
    if not probas:
        return None
    top = sorted((float(p) for p in probas.values()), reverse=True)
    margin = top[0] - (top[1] if len(top) > 1 else 0.0)
    voters = [m.get("label") for m in members.values() if isinstance(m, Mapping) and m.get("ok", True)]
    disagreement = sum(v != label for v in voters) / len(voters) if voters else 0.0
    return round(1.0 - margin + disagreement, 6)


def compact_members(members: Mapping[str, Any]) -> dict:
    """Members' results with probabilities rounded, so a row stays small."""
    out = {}
    for name, m in members.items():
        m = dict(m or {})
        if m.get("probas") is not None:
            m["probas"] = _rounded(m["probas"])
        out[name] = m
    return out


def _rounded(probas: Any) -> Any:
    if isinstance(probas, Mapping):
        return {k: round(float(v), 5) for k, v in probas.items()}
    return [round(float(v), 5) for v in probas]


def item_from_row(row: Mapping[str, Any]) -> dict:
    """The JSON item of one listed row (schema.LISTED)."""
    members = json.loads(row["members"] or "{}")
    return {
        "id": row["id"],
        "ts": row["ts"],
        "time": iso_time(row["ts"]),
        "request_id": row["request_id"],
        "sha256": row["sha256"],
        "size_bytes": row["size_bytes"],
        "class_id": row["class_id"],
        "label": row["label"],
        "proba": row["proba"],
        "latency_ms": row["latency_ms"],
        "degraded": bool(row["degraded"]),
        "source": row["source"],
        "synthetic_weights": bool(row["synthetic"]),
        "cached": bool(row["cached"]),
        "weights": answer_weights(members),
        "members": members,
        "has_thumbnail": bool(row["has_thumbnail"]),
        "has_image": bool(row["has_image"]),
        "model_version": row["model_version"],
        "probas": json.loads(row["probas"]) if row["probas"] else None,
        "review_priority": row["priority"],
        "in_training": bool(row["in_training"]),
        "true_label": row["true_label"],
        "labelled_by": row["labelled_by"],
        "labelled_at": None if row["labelled_at"] is None else iso_time(row["labelled_at"]),
        "label_changes": row["label_changes"],
        "correct": None if row["true_label"] is None else row["true_label"] == row["label"],
    }


def answer_weights(members: Mapping[str, Any]) -> dict[str, str]:
    """{part: "real"|"synthetic"} behind a recorded answer, from its members' own (empty for older records)."""
    return combine_parts(m["weights"] for m in members.values() if isinstance(m, Mapping) and m.get("ok", True)
                         and isinstance(m.get("weights"), Mapping))


def csv_header(members: Sequence[str]) -> list[str]:
    """The CSV columns: the prediction's, then five per member."""
    return [*CSV_COLUMNS, *(f"{m}_{col}" for m in members for col in MEMBER_CSV_COLUMNS)]


def csv_row(item: dict, members: Sequence[str]) -> list:
    """One item as a CSV row under csv_header(members)."""
    row = [item[k] for k in CSV_COLUMNS]
    for name in members:
        m = item["members"].get(name) or {}
        row += [m.get("label"), member_top_proba(m), m.get("ok"), m.get("latency_ms"), m.get("error")]
    return row


def member_top_proba(member: Mapping[str, Any]) -> float | None:
    """The member's probability of its own top class."""
    probas = member.get("probas")
    values = list(probas.values()) if isinstance(probas, Mapping) else list(probas or [])
    return max(values) if values else None


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)
