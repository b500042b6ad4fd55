"""An agent's reply to the citizen's From or Reply-To is an answer:
``messages.answer_addresses``.

The reader of Sent folders (and of the tracking mailbox) counted a reply only when it was
written to ``messages.sender``, the Return-Path where the AR goes (RFC 3834). An agent's
mail client answers the From or the Reply-To: when the citizen's provider rewrites the
envelope (SRS, BATV), the answered mail stayed unanswered and overdue. The From and
Reply-To addresses that differ from the sender are kept now (a JSON list, NULL when none);
rows already recorded have none, and are matched at their sender as before.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column).
    op.add_column("messages", sa.Column("answer_addresses", sa.Text()))


def downgrade() -> None:
    # Plain DROP COLUMN too (SQLite 3.35+): batch mode would rebuild ``messages`` on SQLite
    # and drop the indicator triggers on it with the old table.
    op.execute("ALTER TABLE messages DROP COLUMN answer_addresses")
