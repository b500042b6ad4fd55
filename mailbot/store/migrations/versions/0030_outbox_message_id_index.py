"""The outbox's mails by their Message-ID: ``ix_outbox_email_message_id``.

A delivery report (a bounce) names the mail it is about by its Message-ID; the intake
looks it up among the outbox's mails to tell the agents that the citizen never received
our AR, notice or reply (core/bounces, app/intake). Without the index each bounce would
read the whole outbox (kept for the retention period).

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-04
"""

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_email_message_id", "outbox", ["email_message_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_email_message_id", "outbox")
