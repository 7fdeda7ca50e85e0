"""The history's tables as SQLAlchemy Core sees them, the same on SQLite and PostgreSQL.

This is the schema the code reads and writes today. The database gets it through the Alembic revisions in
migrations/versions/, never from here: a change here needs a revision there, additive (docs/history.md).
"""
from __future__ import annotations

from sqlalchemy import (Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, exists,
                        select, text)

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", Float(53), nullable=False),
    Column("request_id", String),
    Column("sha256", String),
    Column("size_bytes", Integer),
    Column("class_id", Integer),
    Column("label", String),
    Column("proba", Float(53)),
    Column("latency_ms", Float(53)),
    Column("degraded", Integer, nullable=False, server_default="0"),
    Column("source", String),
    Column("synthetic", Integer, nullable=False, server_default="0"),
    Column("members", String),  # the members' answers, JSON
    Column("cached", Integer, nullable=False, server_default="0"),  # 1: answered from the gateway's response cache
    Column("model_version", String),  # the model that answered (NULL in records older than it)
    Column("probas", String),  # the stack's probability of every class, JSON
    Column("priority", Float(53)),  # how much a label would teach: records.review_priority
    Column("in_training", Integer, nullable=False, server_default="0"),  # 1: a photo the model was trained/tested on
    Column("true_label", String),  # the class a person gave it (NULL: not labelled)
    Column("labelled_by", String),
    Column("labelled_at", Float(53)),
    Column("label_changes", Integer, nullable=False, server_default="0"),  # times a label was replaced by another
    sqlite_autoincrement=True,  # ids are never reused after retention, as in the first release
)
# Blobs live apart so that listing and filtering scan small rows only.
images = Table(
    "images", metadata,
    Column("id", Integer, ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True),
    Column("thumbnail", LargeBinary),
    Column("image", LargeBinary),
)
# What a shadow version answered for a copy of a live request (joined to its prediction by request_id).
shadow_answers = Table(
    "shadow_answers", metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", Float(53), nullable=False),
    Column("request_id", String),  # the live request's
    Column("model_version", String),  # the shadow version
    Column("live_version", String),
    Column("class_id", Integer),
    Column("label", String),
    Column("proba", Float(53)),
    Column("probas", String),
    Column("live_label", String),
    Column("degraded", Integer, nullable=False, server_default="0"),
    Column("latency_ms", Float(53)),
    sqlite_autoincrement=True,
)
Index("ix_shadow_version_ts", shadow_answers.c.model_version, shadow_answers.c.ts, shadow_answers.c.id)
Index("ix_shadow_request", shadow_answers.c.request_id)
p = predictions.c
UNLABELLED, LABELLED = p.true_label.is_(None), p.true_label.is_not(None)
INDEXES = (
    Index("ix_predictions_ts", p.ts, p.id),
    Index("ix_predictions_label_ts", p.label, p.ts, p.id),
    Index("ix_predictions_degraded_ts", p.degraded, p.ts, p.id),
    Index("ix_predictions_request", p.request_id),
    Index("ix_predictions_version_ts", p.model_version, p.ts, p.id),
    # The review queue reads unlabelled rows by priority; quality and exports read the labelled ones.
    Index("ix_predictions_review", p.priority, p.id, sqlite_where=UNLABELLED, postgresql_where=UNLABELLED),
    Index("ix_predictions_labelled", p.ts, p.id, sqlite_where=LABELLED, postgresql_where=LABELLED),
)


def _has(column) -> object:
    return exists().where(images.c.id == p.id, column.is_not(None))


# What a listed row carries: the record's columns and whether it has a thumbnail and a full image.
LISTED = select(predictions, _has(images.c.thumbnail).label("has_thumbnail"),
                _has(images.c.image).label("has_image"))
# The distinct classes, by a skip-scan of the label index: one lookup per class instead of a pass over every row.
# Plain SQL that both backends run as it is.
LABELS_SQL = text(
    "WITH RECURSIVE seen(label) AS (SELECT MIN(label) FROM predictions UNION ALL"
    " SELECT (SELECT MIN(label) FROM predictions WHERE label > seen.label) FROM seen"
    " WHERE seen.label IS NOT NULL) SELECT label FROM seen WHERE label IS NOT NULL")
