"""The indicators' own table (issue 14, point 10): ``indicator_facts``, one row per citizen's
message with just what the indicators read — receipt and first reply as Unix seconds, the
flags packed into one integer, and the three columns they filter or split on — maintained by
database triggers on ``messages`` (insert, update, delete, so a purge too) on SQLite and
PostgreSQL. A year of a million messages is then read without converting a timestamp per
row, from a narrow table ordered by receipt (WITHOUT ROWID on SQLite).

The triggers' SQL (what a citizen's message is, the ``flags``) is in
``mailbot/store/triggers.py``, which a new database created from the models reads too.

Beware: on SQLite, a later ``batch_alter_table("messages")`` recreates the table and drops
its triggers; such a migration must create them again (``tests/test_indicator_facts.py``
compares the table with the messages at head).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailbot.store.triggers import (
    CITIZEN,
    COLUMNS,
    drop_facts_triggers,
    epoch,
    fact_values,
    facts_triggers,
)

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The flags and the watched columns as this revision wrote them: bits 4 and up the relances,
# a transfer announced whenever the AR was sent (0021 changed both: messages.notice_status).
FLAGS = (
    "(CASE WHEN {r}.ar_status = 'sent' THEN 1 ELSE 0 END)"
    " + (CASE WHEN {r}.transferred <> 0 THEN 2 ELSE 0 END)"
    " + (COALESCE({r}.first_reply_complete, -1) + 1) * 4"
    " + {r}.relances * 16"
)
WATCHED = (
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


def upgrade() -> None:
    op.create_table(
        "indicator_facts",
        sa.Column("received", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("message_pk", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("replied", sa.BigInteger),
        sa.Column("flags", sa.Integer, nullable=False),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("service", sa.String(64)),
        sa.Column("category", sa.String(64)),
        sqlite_with_rowid=False,
    )
    dialect = op.get_bind().dialect.name
    op.execute(
        f"INSERT INTO indicator_facts ({COLUMNS})"
        f" SELECT {fact_values('messages', epoch(dialect), FLAGS)}"
        f" FROM messages WHERE {CITIZEN.format(r='messages')}"
    )
    for statement in facts_triggers(dialect, FLAGS, WATCHED):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_facts_triggers(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("indicator_facts")
