"""A UIDVALIDITY change never acknowledges old mail: ``folders.read_until`` and
``folders.resync_before``.

``read_until``: every mail that arrived in the folder before this moment was read under its
current UIDVALIDITY (recorded, or passed over on purpose by a backfill). When the
UIDVALIDITY changes (a folder restored or recreated), that moment becomes
``resync_before``: while the folder is read again from UID 1, a mail that arrived before it
and that the database does not hold (older than a backfill's ``--since``, or purged by
retention) is recorded without an AR, never acknowledged a second time or years late.

The folders already followed take their last write (``updated_at``, when their mark last
moved) as ``read_until``: the next poll that reads new mail replaces it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the table is not rebuilt.
    op.add_column("folders", sa.Column("read_until", sa.DateTime(timezone=True)))
    op.add_column("folders", sa.Column("resync_before", sa.DateTime(timezone=True)))
    op.execute("UPDATE folders SET read_until = updated_at")


def downgrade() -> None:
    with op.batch_alter_table("folders") as batch:
        batch.drop_column("resync_before")
        batch.drop_column("read_until")
