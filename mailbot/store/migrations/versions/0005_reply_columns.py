"""First reply, transfer and relance count kept on the message row.

The indicators read one row per message (a year is a million rows): keeping these
facts on the row, updated in the same transaction as their events, makes that one scan.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("first_reply_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("first_reply_complete", sa.Integer))
        batch.add_column(sa.Column("transferred", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("relances", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE messages SET first_reply_at = (SELECT MIN(at) FROM events "
        "WHERE events.message_pk = messages.id AND events.kind IN ('reply', 'reply_sent'))"
    )
    op.execute(
        "UPDATE messages SET transferred = 1 WHERE id IN "
        "(SELECT message_pk FROM events WHERE kind = 'transferred')"
    )
    op.execute(
        "UPDATE messages SET relances = (SELECT COUNT(*) FROM messages AS child "
        "WHERE child.parent_id = messages.id AND child.decision = 'follow-up')"
    )
    op.execute("UPDATE messages SET first_reply_complete = 1 WHERE first_reply_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for column in ("relances", "transferred", "first_reply_complete", "first_reply_at"):
            batch.drop_column(column)
