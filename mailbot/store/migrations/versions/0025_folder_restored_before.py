"""Restoring a backup never acknowledges mail again: ``folders.restored_before``.

A database restored from a backup remembers each folder's UID mark as it was at the
backup: the mail that arrived since is read again. The lost database acknowledged it up to
its failure; ``mailbot restored --acknowledged-until`` writes that moment here, and until
the folder is read whole, a mail that arrived before it and that the restored database
does not hold is recorded without an AR (``ar_status`` ``restored``), as a UIDVALIDITY
change's ``resync_before`` does (0017).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it for a nullable column): the table is not rebuilt.
    op.add_column("folders", sa.Column("restored_before", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("folders") as batch:
        batch.drop_column("restored_before")
