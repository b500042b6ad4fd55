"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sqlalchemy as sa
from alembic import op

# A new database is not migrated: it is created from store/schema.py (store/fresh.py).
# Change schema.py as this revision changes the tables; a trigger, a function or rows the
# schema starts with go in store/triggers.py, called here AND by fresh.create_at_head.
# tests/test_fresh_schema.py fails until both ways give the same schema.

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
