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
The triggers' SQL is in ``mailbot/store/triggers.py``, which a new database created from the
models reads too.

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

from mailbot.store.indicator_days import SUMS, refill
from mailbot.store.triggers import FIRST_ZONE, days_triggers, drop_days_triggers

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# A fact's contribution as this revision computed it (flags of 0011: notices the transfers
# whose AR was sent, relances from bit 4; 0021 changed both).
CONTRIBUTION = (
    "1",
    "{r}.flags & 1",
    "({r}.flags / 2) & 1",
    "CASE WHEN ({r}.flags & 3) = 3 THEN 1 ELSE 0 END",
    "{r}.flags / 16",
    "CASE WHEN (({r}.flags / 4) & 3) = 2 THEN 1 ELSE 0 END",
    "CASE WHEN (({r}.flags / 4) & 3) > 0 THEN 1 ELSE 0 END",
)


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
    refill(op.get_bind(), FIRST_ZONE, CONTRIBUTION)
    for statement in days_triggers(op.get_bind().dialect.name, CONTRIBUTION):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_days_triggers(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("indicator_days")
    op.drop_table("indicator_zone")
