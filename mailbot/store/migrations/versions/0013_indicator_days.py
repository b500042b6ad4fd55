"""The indicators' daily buckets (issue 14, point 10): ``indicator_days``, per local day of
receipt and of first reply (-1: none), mailbox, service and category ('' for none), the
number of citizens' messages and the sums the figures need (AR sent, transfers, transfers
whose AR was sent, relances, signatures complete and checked). A delay in working days
depends on both its ends, so buckets by (received day, replied day) keep every figure exact,
the median too; a year of a million messages is a few thousand rows.

Kept by triggers on ``indicator_facts`` (itself kept by triggers on the messages, 0011):
each fact inserted adds its contribution to its bucket, each fact deleted takes it away
(an update of a message deletes and inserts its fact), and a bucket left empty is deleted.
Local days are in the zone whose UTC offsets ``indicator_zone`` lists (filled here for
Europe/Paris, the configuration's default; ``mailbot rebuild-indicators`` fills both
tables again for the configured zone, and the indicators read the facts meanwhile).

On PostgreSQL the buckets' triggers are deferred to the commit (constraint triggers): two
transactions changing the same bucket (same days, mailbox, service and category: a worker's
batch and an agent's reply to a mail of that day) take turns on its row during their commits
only, and a bucket's lock is never held while a transaction waits for a message's row.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailbot.store.indicator_days import CONTRIBUTION, KEY, SUMS, bucket_key, refill

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ZONE = "Europe/Paris"


def _add(row: str, sign: str) -> str:
    """Add (``sign`` '') or take away ('-') the fact ``row``'s contribution."""
    values = [*bucket_key(row), *(f"{sign}({e.format(r=row)})" for e in CONTRIBUTION)]
    update = ", ".join(f"{n} = indicator_days.{n} + excluded.{n}" for n in SUMS)
    return (
        f"INSERT INTO indicator_days ({KEY}, {', '.join(SUMS)}) VALUES ({', '.join(values)})"
        f" ON CONFLICT ({KEY}) DO UPDATE SET {update}"
    )


def _drop_empty(row: str) -> str:
    names = KEY.split(", ")
    where = " AND ".join(f"{n} = {e}" for n, e in zip(names, bucket_key(row), strict=True))
    return f"DELETE FROM indicator_days WHERE {where} AND mails = 0"


def _sqlite() -> list[str]:
    return [
        "CREATE TRIGGER indicator_days_insert AFTER INSERT ON indicator_facts"
        f" BEGIN {_add('NEW', '')}; END",
        "CREATE TRIGGER indicator_days_delete AFTER DELETE ON indicator_facts"
        f" BEGIN {_add('OLD', '-')}; {_drop_empty('OLD')}; END",
    ]


def _postgresql() -> list[str]:
    function = f"""
CREATE FUNCTION indicator_days_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_add("NEW", "")};
    ELSE
        {_add("OLD", "-")};
        {_drop_empty("OLD")};
    END IF;
    RETURN NULL;
END
$$"""
    # Deferred to the commit: a bucket's row is locked for the commit only, not for the
    # rest of a worker's batch (see above).
    run = "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE PROCEDURE indicator_days_sync()"
    return [
        function,
        f"CREATE CONSTRAINT TRIGGER indicator_days_insert AFTER INSERT ON indicator_facts {run}",
        f"CREATE CONSTRAINT TRIGGER indicator_days_delete AFTER DELETE ON indicator_facts {run}",
    ]


def upgrade() -> None:
    op.create_table(
        "indicator_zone",
        sa.Column("since", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("utc_offset", sa.Integer, nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
    )
    op.create_table(
        "indicator_days",
        sa.Column("received_day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("replied_day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("mailbox", sa.String(64), primary_key=True),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("category", sa.String(64), primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in SUMS),
        sqlite_with_rowid=False,
    )
    refill(op.get_bind(), ZONE)
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _sqlite() if sqlite else _postgresql():
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in ("insert", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS indicator_days_{name}{'' if sqlite else ' ON indicator_facts'}")
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS indicator_days_sync()")
    op.drop_table("indicator_days")
    op.drop_table("indicator_zone")
