"""A partial index on the outbox rows that still hold their bytes (issue 14, point 2).

A mail the server accepted is committed 'sent' with the next mail's claim; its status
mirror, its event and the purge of its bytes are written once per delivery batch. A crash
in between leaves it 'sent' with its bytes: each delivery looks for such rows first, and
this index keeps that look from reading the many sent rows.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_unpurged",
        "outbox",
        ["status"],
        sqlite_where=sa.text("raw IS NOT NULL"),
        postgresql_where=sa.text("raw IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_unpurged", table_name="outbox")
