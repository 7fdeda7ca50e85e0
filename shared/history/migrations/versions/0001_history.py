"""Revision 1: the history as the releases before Alembic left it, on SQLite or PostgreSQL.

A new database gets every table, column and index. A SQLite file from an earlier release (no alembic_version
table) keeps its rows and gains what it lacks: the columns those releases added on open, and their indexes.
Frozen: a later change is a new revision, additive (docs/history.md).

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

REAL = sa.Float(53)
COUNT = {"nullable": False, "server_default": "0"}
# Columns added on open by releases before this revision (records.ADDED_COLUMNS there).
ADDED = (("cached", sa.Integer, COUNT), ("model_version", sa.String, {}), ("probas", sa.String, {}),
         ("priority", REAL, {}), ("in_training", sa.Integer, COUNT), ("true_label", sa.String, {}),
         ("labelled_by", sa.String, {}), ("labelled_at", REAL, {}), ("label_changes", sa.Integer, COUNT))


def _added() -> list[sa.Column]:
    return [sa.Column(name, kind, **options) for name, kind, options in ADDED]


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "predictions" not in have:
        op.create_table(
            "predictions",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("ts", REAL, nullable=False),
            sa.Column("request_id", sa.String),
            sa.Column("sha256", sa.String),
            sa.Column("size_bytes", sa.Integer),
            sa.Column("class_id", sa.Integer),
            sa.Column("label", sa.String),
            sa.Column("proba", REAL),
            sa.Column("latency_ms", REAL),
            sa.Column("degraded", sa.Integer, **COUNT),
            sa.Column("source", sa.String),
            sa.Column("synthetic", sa.Integer, **COUNT),
            sa.Column("members", sa.String),
            *_added(),
            sqlite_autoincrement=True,
        )
    else:
        present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("predictions")}
        for column in _added():
            if column.name not in present:
                op.add_column("predictions", column)
    if "images" not in have:
        op.create_table(
            "images",
            sa.Column("id", sa.Integer, sa.ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("thumbnail", sa.LargeBinary),
            sa.Column("image", sa.LargeBinary),
        )
    unlabelled, labelled = sa.text("true_label IS NULL"), sa.text("true_label IS NOT NULL")
    for name, columns, where in (
        ("ix_predictions_ts", ["ts", "id"], None),
        ("ix_predictions_label_ts", ["label", "ts", "id"], None),
        ("ix_predictions_degraded_ts", ["degraded", "ts", "id"], None),
        ("ix_predictions_request", ["request_id"], None),
        ("ix_predictions_version_ts", ["model_version", "ts", "id"], None),
        ("ix_predictions_review", ["priority", "id"], unlabelled),
        ("ix_predictions_labelled", ["ts", "id"], labelled),
    ):
        op.create_index(name, "predictions", columns, if_not_exists=True, sqlite_where=where, postgresql_where=where)
