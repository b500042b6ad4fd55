"""Routing: service, category, priority, re-orientation, language and rule hits per message.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("service", sa.String(64)))
        batch.add_column(sa.Column("category", sa.String(64)))
        batch.add_column(sa.Column("priority", sa.String(16)))
        batch.add_column(sa.Column("reorient", sa.String(64)))
        batch.add_column(sa.Column("language", sa.String(8)))
        batch.add_column(sa.Column("routing", sa.Text))
    op.create_index("ix_messages_service", "messages", ["service", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_service", "messages")
    with op.batch_alter_table("messages") as batch:
        for column in ("routing", "language", "reorient", "priority", "category", "service"):
            batch.drop_column(column)
