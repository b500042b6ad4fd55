"""Several workers on one database, and what supervision needs (issue 16).

* ``leases``: who works on each mailbox folder (holder, the code it runs, expiry, a fence
  counter bumped at each change of holder);
* ``workers``: the processes alive (renewed like a lease): an item the outbox is sending
  is recovered as uncertain only when its claimer is dead;
* ``outbox.claimed_by``/``claimed_at``: which process took an item to send it;
* ``heartbeats``: per folder (and for SMTP), the last poll's start, success and error;
* ``probes``: each mystery mail sent to a watched mailbox and what became of its AR;
* ``messages.probe``: a verified probe mail, kept out of the indicators.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(340), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("schema", sa.String(16), nullable=False),
        sa.Column("fence", sa.BigInteger, nullable=False),
        sa.Column("acquired_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("schema", sa.String(16), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(340), primary_key=True),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("success_at", TZ),
        sa.Column("error_at", TZ),
        sa.Column("error", sa.Text),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "probes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run", sa.String(64), nullable=False),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sent_at", TZ, nullable=False),
        sa.Column("deadline_at", TZ, nullable=False),
        sa.Column("received_at", TZ),
        sa.Column("ar_at", TZ),
        sa.Column("latency_seconds", sa.Float),
        sa.Column("problems", sa.Text, nullable=False, server_default=""),
        sa.Column("checked_at", TZ),
        sa.UniqueConstraint("run", "mailbox", name="uq_probes_run_mailbox"),
    )
    op.create_index("ix_probes_mailbox_sent", "probes", ["mailbox", "sent_at"])
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(128)))
        batch.add_column(sa.Column("claimed_at", TZ))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("probe", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("probe")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
    op.drop_index("ix_probes_mailbox_sent", "probes")
    op.drop_table("probes")
    op.drop_table("heartbeats")
    op.drop_table("workers")
    op.drop_table("leases")
