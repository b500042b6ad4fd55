"""A citizen's mail after the answer reaches an agent: ``messages.written_again_at``.

A follow-up received after a message was answered is no relance (the indicators count
reminders of mail left waiting) and reopens nothing, so it reached nobody: the citizen
contesting a re-orientation, or sending the documents a ``demande-precisions`` asked for,
wrote into the void. The column holds when the first such follow-up came, until an agent
replies again or marks it read; while set, the message is back in its service's queue.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the table is not rebuilt.
    op.add_column("messages", sa.Column("written_again_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), as 0022: batch mode would rebuild ``messages`` on
    # SQLite and drop the indicator triggers on it with the old table.
    op.execute("ALTER TABLE messages DROP COLUMN written_again_at")
