"""A mail's transient database errors are counted in its folder's row:
``folders.transient_uid`` and ``folders.transient_count``.

A mail whose recording meets a transient database error (a lock, a serialization failure)
is read again at the next poll, and quarantined at the third attempt in a row. The count
was kept in the process's memory: a cron of `poll --once` started again from 0 at every
run and never quarantined it, failing the folder's batch at every run. It is kept in the
folder's row now, which every process reads.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column or one with a default).
    op.add_column("folders", sa.Column("transient_uid", sa.BigInteger()))
    op.add_column(
        "folders",
        sa.Column("transient_count", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("folders") as batch:
        batch.drop_column("transient_count")
        batch.drop_column("transient_uid")
