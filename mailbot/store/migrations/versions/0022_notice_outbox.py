"""A message transferred twice by agents: its notice status is its latest notice's,
``messages.notice_outbox``.

Migration 0021 mirrored each transfer notice's outbox status onto its message
(``notice_status``). A message transferred twice has two notices, and the delivery that
settled one last wrote over the other: the first notice sent after the second was refused
counted the transfer as announced, although the citizen was never told of the service that
holds it now. The message now keeps its latest notice's outbox id, set with the transfer,
and only that notice's status is mirrored (``Transaction.set_notice_status``). Rows already
recorded get their latest notice (the highest outbox id, as 0021 read it) and that notice's
status: the facts' triggers (``notice_status`` is watched) move the indicators with it.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

LATEST_NOTICE = (
    "SELECT max(o.id) FROM outbox o WHERE o.message_pk = messages.id AND o.kind = 'notice'"
)
ITS_STATUS = "SELECT o.status FROM outbox o WHERE o.id = messages.notice_outbox"


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the triggers stay.
    op.add_column("messages", sa.Column("notice_outbox", sa.Integer()))
    op.execute(
        f"UPDATE messages SET notice_outbox = ({LATEST_NOTICE})"
        " WHERE id IN (SELECT message_pk FROM outbox WHERE kind = 'notice')"
    )
    op.execute(
        f"UPDATE messages SET notice_status = ({ITS_STATUS})"
        f" WHERE notice_outbox IS NOT NULL AND COALESCE(notice_status, '') <> ({ITS_STATUS})"
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+): batch mode would rebuild ``messages`` on SQLite and
    # drop the indicator triggers on it with the old table. ``notice_status`` stays as it is.
    op.execute("ALTER TABLE messages DROP COLUMN notice_outbox")
