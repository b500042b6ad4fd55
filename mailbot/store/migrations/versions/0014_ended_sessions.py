"""The console's sessions ended server-side (``ended_sessions``): a session cookie is signed,
not stored, so logging out only cleared the browser's copy and a copy taken before stayed
valid until it expired. Each session now carries a random id; logging out (or a new login
in the same browser) records it here with the session's expiry, every request carrying a
recorded id is logged out, and ``mailbot purge`` deletes the rows past their expiry.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ended_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ended_sessions_expires_at", "ended_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ended_sessions_expires_at", table_name="ended_sessions")
    op.drop_table("ended_sessions")
