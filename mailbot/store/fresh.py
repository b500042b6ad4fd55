"""A new database created at the head revision from the models, not by replaying every
migration (Alembic's cookbook, "Building an Up to Date Database from Scratch").

Replaying 0001→head rebuilt tables on SQLite (``batch_alter_table``) for a schema nobody
had yet: 0.11–0.19 s on SQLite, 0.28 s on PostgreSQL, plus Alembic's import (0.13 s), at
every first start and for every database a test creates. Here: the models' tables
(``schema.metadata``), then what they do not hold (``store/triggers.py``: triggers,
PostgreSQL's functions, the first zone's rows), then the version row, in the caller's
transaction (``Store.migrate``: one transaction, so a kill leaves an empty database or a
complete one; the same lock, so two workers starting together create it once). Alembic is
not imported: the version table is written as Alembic writes it (below), and Alembic
reads and upgrades the database as one it migrated itself.

Adding a migration now:

1. change the tables in ``schema.py`` (a new column goes last in its table, where the
   migration adds it);
2. write ``migrations/versions/NNNN_*.py`` as before (it upgrades existing databases);
3. a trigger, a function, a view or rows the schema starts with: their SQL goes in
   ``store/triggers.py``, called from the migration AND from ``create_at_head`` below. A
   changed trigger is changed there; if an older migration can no longer run the new text
   on its older tables, freeze the old text into that migration first;
4. ``tests/test_fresh_schema.py`` compares a database created here with one migrated
   through every revision (tables, columns, indexes, constraints, triggers, functions,
   rows of ``indicator_zone``), on SQLite and PostgreSQL: it fails until both agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.store.indicator_days import refill
from mailbot.store.schema import metadata
from mailbot.store.triggers import FIRST_ZONE, days_triggers, facts_triggers

# Alembic's version table as Alembic creates it (``DefaultImpl.version_table_impl``):
# the schema comparison test checks it against Alembic's own.
VERSION_TABLE = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def is_empty(conn: Connection) -> bool:
    """No table at all: neither a version nor any table (ours or another's). Anything else
    is upgraded, or refused, by the migrations' path."""
    return not sa.inspect(conn).get_table_names()


def create_at_head(conn: Connection, head: str) -> None:
    """The schema at revision ``head`` on the empty database of ``conn``, in its
    transaction: tables and indexes, triggers and functions, first rows, version."""
    dialect = conn.dialect.name
    VERSION_TABLE.create(conn)
    metadata.create_all(conn, checkfirst=False)
    for statement in facts_triggers(dialect) + days_triggers(dialect):
        conn.exec_driver_sql(statement)
    refill(conn, FIRST_ZONE)
    conn.execute(VERSION_TABLE.insert().values(version_num=head))
