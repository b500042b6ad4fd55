"""An outbox mail's bytes in a table of their own: ``outbox_bodies`` (issue 14, point 2).

Each status update of an outbox row (taken, claimed, sent) rewrote the whole record with its
~14 KB AR, and the purge after sending once more: ~60 µs of CPU and tens of KB of WAL a
mail. The bytes now sit in ``outbox_bodies`` (one row per mail still holding them, deleted
by the purge, and with the outbox row); the status updates rewrite a small record.

The bytes of the rows that still hold them (pending, sending, failed, uncertain, sent but
not yet purged) move there; ``ix_outbox_unpurged`` (0012) goes with the column: a row of
``outbox_bodies`` is a mail still holding its bytes. On SQLite the outbox is rebuilt
without the column (batch mode) before the new table refers to it: dropping the old table
with foreign keys on would delete the moved bodies with it (ON DELETE CASCADE).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_MOVING = "_outbox_bodies_moving"


def upgrade() -> None:
    op.drop_index("ix_outbox_unpurged", table_name="outbox")
    op.create_table(
        _MOVING,
        sa.Column("outbox_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    op.execute(f"INSERT INTO {_MOVING} (outbox_id, raw) SELECT id, raw FROM outbox WHERE raw IS NOT NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("raw")
    op.create_table(
        "outbox_bodies",
        sa.Column(
            "outbox_id",
            sa.Integer,
            sa.ForeignKey("outbox.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    op.execute(f"INSERT INTO outbox_bodies (outbox_id, raw) SELECT outbox_id, raw FROM {_MOVING}")
    op.drop_table(_MOVING)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("raw", sa.LargeBinary))
    op.execute(
        "UPDATE outbox SET raw = (SELECT raw FROM outbox_bodies WHERE outbox_id = outbox.id)"
    )
    op.drop_table("outbox_bodies")
    op.create_index(
        "ix_outbox_unpurged",
        "outbox",
        ["status"],
        sqlite_where=sa.text("raw IS NOT NULL"),
        postgresql_where=sa.text("raw IS NOT NULL"),
    )
