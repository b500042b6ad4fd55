"""Initial schema: folder sync state, messages, events, outbox, counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "folders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger, nullable=False),
        sa.Column("last_uid", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("mailbox", "folder", name="uq_folders_mailbox_folder"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger, nullable=False),
        sa.Column("uid", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.String(998)),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(32), unique=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("sender", sa.String(320)),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("in_reply_to", sa.String(998)),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("messages.id")),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("ar_status", sa.String(16), nullable=False),
        sa.Column("ar_message_id", sa.String(998)),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("defects", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("mailbox", "folder", "uidvalidity", "uid", name="uq_messages_location"),
    )
    op.create_index("ix_messages_message_id", "messages", ["mailbox", "message_id"])
    op.create_index("ix_messages_content_hash", "messages", ["mailbox", "content_hash"])
    op.create_index("ix_messages_ar_message_id", "messages", ["ar_message_id"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index("ix_messages_sender", "messages", ["mailbox", "sender"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_pk", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE")),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_index("ix_events_message_pk", "events", ["message_pk"])
    op.create_index("ix_events_kind_at", "events", ["kind", "at"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_pk", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE")),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("envelope_from", sa.String(320), nullable=False),
        sa.Column("email_message_id", sa.String(998), nullable=False),
        sa.Column("raw", sa.LargeBinary),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sent_at", TZ),
    )
    op.create_index("ix_outbox_status_next", "outbox", ["status", "next_attempt_at"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("counters", "outbox", "events", "messages", "folders"):
        op.drop_table(table)
