"""The follow-ups by their time of receipt: ``ix_messages_follow_ups``.

The indicators as of a day take away the relances received after it (``relances_after``):
the follow-ups received from that day on. Read through ``ix_messages_received_at``, that
walked every message received since, follow-up or not: as of a past day (a report for an
earlier week, each row of its table per mailbox and service) tens of thousands of rows for
a few follow-ups — 20–35 ms a call on a year of a million messages, nine calls in the weekly
report. A partial index holds the follow-ups alone (a few per cent of the rows).

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

FOLLOW_UPS = "decision = 'follow-up'"


def upgrade() -> None:
    op.create_index(
        "ix_messages_follow_ups",
        "messages",
        ["received_at"],
        sqlite_where=sa.text(FOLLOW_UPS),
        postgresql_where=sa.text(FOLLOW_UPS),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_follow_ups", "messages")
