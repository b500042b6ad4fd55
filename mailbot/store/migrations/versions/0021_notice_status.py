"""A transfer counts as announced to the citizen when the mail that announced it was sent:
``messages.notice_status``, and bit 4 of ``indicator_facts.flags``.

``transfer_notice_share`` counted a transferred message as announced when its AR was sent.
A transfer at receipt is announced by the AR, which says so; a transfer an agent makes
later (console, CLI) is announced by a notice of its own, whose status never reached the
message: the first AR, which said nothing of the transfer, counted, and a notice failed or
still queued counted as sent. The notice's outbox status is now mirrored on its message (as
an AR's is, ``ar_status``), backfilled here from the outbox (the latest notice of each
message), and the facts' flags say whether the transfer was announced: bit 4, the relances
from bit 5 (they were from bit 4). The facts and the daily buckets are computed again, in
the zone the buckets are in. The triggers' SQL is in ``mailbot/store/triggers.py``; 0011
and 0013 keep the text they created.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailbot.store.indicator_days import CONTRIBUTION, refill, zone_of
from mailbot.store.triggers import (
    CITIZEN,
    COLUMNS,
    FIRST_ZONE,
    FLAGS,
    WATCHED,
    days_triggers,
    drop_days_triggers,
    drop_facts_triggers,
    epoch,
    fact_values,
    facts_triggers,
)

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# The flags, watched columns and contribution of 0011 and 0013, for the downgrade.
FLAGS_0020 = (
    "(CASE WHEN {r}.ar_status = 'sent' THEN 1 ELSE 0 END)"
    " + (CASE WHEN {r}.transferred <> 0 THEN 2 ELSE 0 END)"
    " + (COALESCE({r}.first_reply_complete, -1) + 1) * 4"
    " + {r}.relances * 16"
)
WATCHED_0020 = (
    "received_at",
    "decision",
    "reasons",
    "no_reply",
    "probe",
    "ar_status",
    "transferred",
    "first_reply_at",
    "first_reply_complete",
    "relances",
    "mailbox",
    "service",
    "category",
)
CONTRIBUTION_0020 = (
    "1",
    "{r}.flags & 1",
    "({r}.flags / 2) & 1",
    "CASE WHEN ({r}.flags & 3) = 3 THEN 1 ELSE 0 END",
    "{r}.flags / 16",
    "CASE WHEN (({r}.flags / 4) & 3) = 2 THEN 1 ELSE 0 END",
    "CASE WHEN (({r}.flags / 4) & 3) > 0 THEN 1 ELSE 0 END",
)
LATEST_NOTICE = (
    "SELECT o.status FROM outbox o WHERE o.message_pk = messages.id AND o.kind = 'notice'"
    " ORDER BY o.id DESC LIMIT 1"
)


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the triggers stay.
    op.add_column("messages", sa.Column("notice_status", sa.String(16)))
    op.execute(
        f"UPDATE messages SET notice_status = ({LATEST_NOTICE})"
        " WHERE id IN (SELECT message_pk FROM outbox WHERE kind = 'notice')"
    )
    _rebuild(FLAGS, WATCHED, CONTRIBUTION)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in drop_facts_triggers(dialect):
        op.execute(statement)
    # On SQLite the batch recreates the table: its triggers would be dropped with it.
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("notice_status")
    _rebuild(FLAGS_0020, WATCHED_0020, CONTRIBUTION_0020)


def _rebuild(flags: str, watched: tuple[str, ...], contribution: tuple[str, ...]) -> None:
    """The facts computed again from the messages with ``flags``, the buckets from the
    facts with ``contribution`` (in their zone), and the triggers of both created again:
    dropped first, so that no row is added to a bucket one by one."""
    conn = op.get_bind()
    dialect = conn.dialect.name
    for statement in drop_days_triggers(dialect) + drop_facts_triggers(dialect):
        op.execute(statement)
    op.execute("DELETE FROM indicator_facts")
    op.execute(
        f"INSERT INTO indicator_facts ({COLUMNS})"
        f" SELECT {fact_values('messages', epoch(dialect), flags)}"
        f" FROM messages WHERE {CITIZEN.format(r='messages')}"
    )
    refill(conn, zone_of(conn) or FIRST_ZONE, contribution)
    for statement in facts_triggers(dialect, flags, watched) + days_triggers(dialect, contribution):
        op.execute(statement)
