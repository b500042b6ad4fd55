"""An SMTP outage no longer loses ARs: ``outbox.failed_at`` and ``outbox.requeued_at``.

A mail the SMTP server defers now waits up to ``outbox.max_queue_hours`` (5 days, as
Postfix's ``maximal_queue_lifetime``) before it fails, instead of 10 attempts (about 3
hours); one failed so, for lack of time, keeps its bytes (until the retention purge) so
that an operator can put it back in the queue after the outage (``mailbot outbox retry
--failed``). ``failed_at`` says when a mail failed (it may be days after it was queued:
`mailbot status` counts the last 24 hours' failures by it); ``requeued_at`` when an
operator put it back (its time in the queue counts from then).

The failures already recorded take their last claim (their last attempt), or their
creation, as ``failed_at``. Their bytes were deleted when they failed, but a version before
that deletion kept them until the next purge: those still there are deleted now, so that a
failed mail holding its bytes is always one that failed for lack of time.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the table is not rebuilt.
    op.add_column("outbox", sa.Column("failed_at", sa.DateTime(timezone=True)))
    op.add_column("outbox", sa.Column("requeued_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE outbox SET failed_at = COALESCE(claimed_at, created_at) WHERE status = 'failed'"
    )
    op.execute(
        "DELETE FROM outbox_bodies WHERE outbox_id IN"
        " (SELECT id FROM outbox WHERE status IN ('failed', 'uncertain'))"
    )


def downgrade() -> None:
    # The bytes kept for a retry go: the version before never sends a failed mail again.
    op.execute(
        "DELETE FROM outbox_bodies WHERE outbox_id IN"
        " (SELECT id FROM outbox WHERE status IN ('failed', 'uncertain'))"
    )
    op.execute("ALTER TABLE outbox DROP COLUMN requeued_at")
    op.execute("ALTER TABLE outbox DROP COLUMN failed_at")
