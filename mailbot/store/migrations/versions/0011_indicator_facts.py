"""The indicators' own table (issue 14, point 10): ``indicator_facts``, one row per citizen's
message with just what the indicators read — receipt and first reply as Unix seconds, the
flags packed into one integer, and the three columns they filter or split on — maintained by
database triggers on ``messages`` (insert, update, delete, so a purge too) on SQLite and
PostgreSQL. A year of a million messages is then read without converting a timestamp per
row, from a narrow table ordered by receipt (WITHOUT ROWID on SQLite).

A citizen's message is what ``Store._citizens`` says: acknowledged, quarantined, or skipped
only for lack of a Return-Path; not closed as needing no reply; not a probe. The status
values below are frozen here as the database holds them (``core/statuses.py``).

``flags``: bit 0 the AR was sent, bit 1 transferred, bits 2-3 the first reply's signature
(0 unchecked or no reply, 1 incomplete, 2 complete), bits 4 and up the relances.

Beware: on SQLite, a later ``batch_alter_table("messages")`` recreates the table and drops
its triggers; such a migration must create them again (``tests/test_indicator_facts.py``
compares the table with the messages at head).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The columns whose change can change a message's facts: an update of any other column
# (assignee, to_check, ar_message_id...) fires no trigger.
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
CITIZEN = (
    "({r}.decision IN ('acknowledge', 'quarantine')"
    " OR ({r}.decision = 'skip' AND {r}.reasons = '[\"no-return-path\"]'))"
    " AND {r}.no_reply IS NULL AND {r}.probe = 0"
)
FLAGS = (
    "(CASE WHEN {r}.ar_status = 'sent' THEN 1 ELSE 0 END)"
    " + (CASE WHEN {r}.transferred <> 0 THEN 2 ELSE 0 END)"
    " + (COALESCE({r}.first_reply_complete, -1) + 1) * 4"
    " + {r}.relances * 16"
)
COLUMNS = "received, message_pk, replied, flags, mailbox, service, category"
# Unix seconds, floored (a reply at 23:59:59.9997 stays on its day): SQLite's date functions
# round to the millisecond, so the fraction is cut from the stored text first.
SQLITE_EPOCH = "CAST(strftime('%s', substr({}, 1, 19)) AS INTEGER)"
PG_EPOCH = "floor(extract(epoch FROM {}))::bigint"


def _values(row: str, epoch: str) -> str:
    return ", ".join(
        [
            epoch.format(f"{row}.received_at"),
            f"{row}.id",
            epoch.format(f"{row}.first_reply_at"),
            FLAGS.format(r=row),
            f"{row}.mailbox",
            f"{row}.service",
            f"{row}.category",
        ]
    )


def _insert(row: str, epoch: str) -> str:
    return (
        f"INSERT INTO indicator_facts ({COLUMNS}) SELECT {_values(row, epoch)}"
        f" WHERE {CITIZEN.format(r=row)}"
    )


def _delete(row: str, epoch: str) -> str:
    return (
        f"DELETE FROM indicator_facts WHERE received = {epoch.format(f'{row}.received_at')}"
        f" AND message_pk = {row}.id"
    )


def _changed(distinct: str) -> str:
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in WATCHED)


def _sqlite() -> list[str]:
    e = SQLITE_EPOCH
    return [
        f"CREATE TRIGGER indicator_facts_insert AFTER INSERT ON messages"
        f" WHEN {CITIZEN.format(r='NEW')} BEGIN {_insert('NEW', e)}; END",
        f"CREATE TRIGGER indicator_facts_update AFTER UPDATE OF {', '.join(WATCHED)}"
        f" ON messages WHEN {_changed('IS NOT')}"
        f" BEGIN {_delete('OLD', e)}; {_insert('NEW', e)}; END",
        f"CREATE TRIGGER indicator_facts_delete AFTER DELETE ON messages"
        f" BEGIN {_delete('OLD', e)}; END",
    ]


def _postgresql() -> list[str]:
    e = PG_EPOCH
    function = f"""
CREATE FUNCTION indicator_facts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        {_delete("OLD", e)};
    END IF;
    IF TG_OP <> 'DELETE' THEN
        {_insert("NEW", e)};
    END IF;
    RETURN NULL;
END
$$"""
    run = "FOR EACH ROW EXECUTE PROCEDURE indicator_facts_sync()"
    return [
        function,
        f"CREATE TRIGGER indicator_facts_insert AFTER INSERT ON messages {run}",
        f"CREATE TRIGGER indicator_facts_update AFTER UPDATE OF {', '.join(WATCHED)}"
        f" ON messages FOR EACH ROW WHEN ({_changed('IS DISTINCT FROM')})"
        " EXECUTE PROCEDURE indicator_facts_sync()",
        f"CREATE TRIGGER indicator_facts_delete AFTER DELETE ON messages {run}",
    ]


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
    sqlite = op.get_bind().dialect.name == "sqlite"
    epoch = SQLITE_EPOCH if sqlite else PG_EPOCH
    op.execute(
        f"INSERT INTO indicator_facts ({COLUMNS}) SELECT {_values('messages', epoch)}"
        f" FROM messages WHERE {CITIZEN.format(r='messages')}"
    )
    for statement in _sqlite() if sqlite else _postgresql():
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in ("insert", "update", "delete"):
        on = "" if sqlite else " ON messages"
        op.execute(f"DROP TRIGGER IF EXISTS indicator_facts_{name}{on}")
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS indicator_facts_sync()")
    op.drop_table("indicator_facts")
