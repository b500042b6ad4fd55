"""The agents' web console: who handles a message (``assignee``), a message closed
without a reply (``no_reply``: spam, a duplicate... — out of the queue and the indicators),
who has a message open (``viewings``, expiring), and the indexes of the queue.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("assignee", sa.String(64)))
        batch.add_column(sa.Column("no_reply", sa.String(16)))
    op.create_index(
        "ix_messages_open",
        "messages",
        ["service", "received_at"],
        sqlite_where=sa.text("first_reply_at IS NULL"),
        postgresql_where=sa.text("first_reply_at IS NULL"),
    )
    op.create_index("ix_outbox_message_pk", "outbox", ["message_pk"])
    op.create_table(
        "viewings",
        sa.Column(
            "message_pk",
            sa.Integer,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("viewings")
    op.drop_index("ix_outbox_message_pk", "outbox")
    op.drop_index("ix_messages_open", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("no_reply")
        batch.drop_column("assignee")
