"""Deduplicate on content, not on Message-ID alone: the fingerprint of each message.

A different mail reusing a recorded Message-ID used to be dropped as a duplicate. The
fingerprint (identity headers and body, trace headers aside) tells a second copy of one
mail from a different mail. Rows recorded before this revision have none, and are matched
on their Message-ID as before, so an upgrade never acknowledges old mail twice.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64)))
    op.create_index("ix_messages_fingerprint", "messages", ["mailbox", "fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_messages_fingerprint", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("fingerprint")
