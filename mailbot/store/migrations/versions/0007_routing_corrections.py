"""Routing corrections by agents, and the "to check" flag of a weak routing decision.

A correction keeps the decision it replaces (service, category, target) with who made it
and when; the message row then carries the corrected values, so the indicators count the
mail where it belongs. ``to_check`` marks a mail that routing kept at its mailbox's own
service because the decision was weak (the console lists those first).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("to_check", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "message_pk",
            sa.Integer,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent", sa.String(64)),
        sa.Column("old_service", sa.String(64)),
        sa.Column("old_category", sa.String(64)),
        sa.Column("old_reorient", sa.String(64)),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("reorient", sa.String(64)),
    )
    op.create_index("ix_corrections_message_pk", "corrections", ["message_pk"])


def downgrade() -> None:
    op.drop_index("ix_corrections_message_pk", "corrections")
    op.drop_table("corrections")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("to_check")
