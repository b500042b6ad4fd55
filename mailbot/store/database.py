"""The ``Store``: the database opened, what mailbot saw, decided and sent.

SQLite (WAL) by default, PostgreSQL by URL alone. Opening a Store brings the schema to the
latest Alembic revision in one transaction: a new database is created at it from the models
(``store/fresh.py``), an older one is migrated (``mailbot/store/migrations``).

Its methods come from one mixin per concept over ``store/engines`` (``Engines``: the
engines, transactions and sessions): ``schema_upgrade`` (migrations, the schema's
version), ``reads`` (rows read outside a transaction), ``listings`` (the citizens'
messages listed), ``indicator_reads`` (the indicators' inputs), ``purge`` (retention).
What the parts share and call on one another is said in ``store/engines``. A transaction's
writes are ``Transaction``'s (``store/transaction``).
"""

from __future__ import annotations

import sqlalchemy as sa

from mailbot.core.leases import Fence
from mailbot.store.desk import WriteDesk
from mailbot.store.engines import shown_url
from mailbot.store.indicator_reads import IndicatorReads
from mailbot.store.purge import RetentionPurge
from mailbot.store.reads import Reads
from mailbot.store.schema_upgrade import MIGRATIONS, SchemaUpgrade

__all__ = ["MIGRATIONS", "Store", "shown_url"]


class Store(SchemaUpgrade, Reads, IndicatorReads, RetentionPurge):
    """Entry point to the database. Opening it brings the schema to the latest revision."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        self.engine = self._create_engine(url)
        # A worker sharing the database sets it: folder writes then check its leases.
        self.fence: Fence | None = None
        self.writer = self._writer_engine()  # batch() and session()
        # SQLite: the process's writers take turns, claims ride on intake parts (store/desk).
        self.desk = WriteDesk() if self.writer.dialect.name == "sqlite" else None
        if self.writer is not self.engine:  # a SQLite file
            for engine in (self.engine, self.writer):
                sa.event.listen(engine, "handle_error", self._read_only_met)
        if migrate:
            self.migrate()
