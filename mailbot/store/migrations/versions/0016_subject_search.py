"""The console's search finds « ÉCHANGE » when « échange » or « echange » is typed:
``messages.subject_search``, the subject folded to case and accents (``core.fold``).

SQLite's ``lower()`` folds ASCII only (and PostgreSQL's, in a ``C`` locale), so a search
compared ``lower(subject)`` with the lower-cased words and missed capital accented
letters. The fold is done in Python when a row is written, the same on both databases;
the rows already recorded are folded here.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailbot.core.fold import search_fold

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("subject_search", sa.Text))
    conn = op.get_bind()
    table = sa.table("messages", sa.column("id"), sa.column("subject"), sa.column("subject_search"))
    update = (
        table.update()
        .where(table.c.id == sa.bindparam("pk"))
        .values(subject_search=sa.bindparam("folded"))
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, table.c.subject)
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        conn.execute(update, [{"pk": pk, "folded": search_fold(subject)} for pk, subject in rows])
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("subject_search")
