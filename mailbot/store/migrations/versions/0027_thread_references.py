"""The citizen's mail's thread, for the References of a reply: ``messages.thread_references``.

An agent's reply and a transfer notice gave References the citizen's Message-ID alone,
cutting the thread their mail client shows when the citizen's mail was itself a reply (RFC
5322 §3.6.4: the parent's References, or its In-Reply-To, then its Message-ID). The column
holds those Message-IDs, space-separated, the first and the latest 19 at most
(``core.message.parent_thread``); nothing but Message-IDs is kept. Rows recorded before
have none: their replies thread as before, on the Message-ID.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the table is not rebuilt.
    op.add_column("messages", sa.Column("thread_references", sa.Text()))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), as 0026: batch mode would rebuild ``messages`` on
    # SQLite and drop the indicator triggers on it with the old table.
    op.execute("ALTER TABLE messages DROP COLUMN thread_references")
