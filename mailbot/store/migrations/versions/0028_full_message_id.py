"""A long Message-ID kept as written, for threading: ``messages.full_message_id``.

A Message-ID longer than 250 characters (``schema.MAX_STORED_ID``; mail clients write some)
is stored in ``message_id`` as its hash, the key of the lookups and duplicates. The mails
answering it (an agent's reply, a transfer notice) took that hash for their In-Reply-To:
refused, the agent could not answer the citizen at all. The column holds the Message-ID as
written when ``message_id`` is its hash and a reply can carry it (985 characters at most:
``core.message.MAX_HEADER_ID_LENGTH``); NULL otherwise. Rows recorded before have none:
their replies leave without In-Reply-To (the hash is no Message-ID), with a WARNING.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the table is not rebuilt.
    op.add_column("messages", sa.Column("full_message_id", sa.String(998)))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), as 0027: batch mode would rebuild ``messages`` on
    # SQLite and drop the indicator triggers on it with the old table.
    op.execute("ALTER TABLE messages DROP COLUMN full_message_id")
