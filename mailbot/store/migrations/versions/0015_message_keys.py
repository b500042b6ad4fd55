"""One AR for a mail that reaches both mailboxes (To one, Cc the other): ``message_keys``.

Each mail handled (acknowledged, a follow-up or skipped; not a duplicate, not one left
unhandled) takes its fingerprint as a key, in the transaction that records its row; the
copy in another mailbox finds the key taken and is recorded as that row's duplicate. The
primary key is the guard between two workers recording the two copies at once.

The mails already recorded take their keys here (the first row of each fingerprint), so
that a copy still unread in the other mailbox is not acknowledged after the upgrade.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_keys",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column(
            "message_pk",
            sa.Integer,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.execute(
        "INSERT INTO message_keys (fingerprint, message_pk)"
        " SELECT fingerprint, MIN(id) FROM messages"
        " WHERE fingerprint IS NOT NULL AND fingerprint <> ''"
        " AND decision IN ('acknowledge', 'follow-up', 'skip')"
        " AND NOT (decision = 'skip' AND reasons = '[\"no-return-path\"]')"
        " GROUP BY fingerprint"
    )


def downgrade() -> None:
    op.drop_table("message_keys")
