"""The sender's display name, to greet them by name in standard replies.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("sender_name", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sender_name")
