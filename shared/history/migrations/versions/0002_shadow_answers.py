"""Revision 2: shadow_answers, what a shadow version answered for a copy of a live request (docs/versions.md).

Additive: one new table and its indexes; a release before it never reads the table.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

REAL = sa.Float(53)


def upgrade() -> None:
    if "shadow_answers" not in set(sa.inspect(op.get_bind()).get_table_names()):
        op.create_table(
            "shadow_answers",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("ts", REAL, nullable=False),
            sa.Column("request_id", sa.String),
            sa.Column("model_version", sa.String),
            sa.Column("live_version", sa.String),
            sa.Column("class_id", sa.Integer),
            sa.Column("label", sa.String),
            sa.Column("proba", REAL),
            sa.Column("probas", sa.String),
            sa.Column("live_label", sa.String),
            sa.Column("degraded", sa.Integer, nullable=False, server_default="0"),
            sa.Column("latency_ms", REAL),
            sqlite_autoincrement=True,
        )
    op.create_index("ix_shadow_version_ts", "shadow_answers", ["model_version", "ts", "id"], if_not_exists=True)
    op.create_index("ix_shadow_request", "shadow_answers", ["request_id"], if_not_exists=True)
