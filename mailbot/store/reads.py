"""The rows read outside any transaction of their own: a message, its events, the outbox
(commands, the console, the tests), the mail due, the last one-time claim."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mailbot.core.statuses import OutboxStatus
from mailbot.store.counter_rows import newest_claim
from mailbot.store.engines import Engines
from mailbot.store.outbox_recovery import stalled_sends
from mailbot.store.records import OutboxItem, outbox_item
from mailbot.store.schema import events, messages, outbox, outbox_bodies


class Reads(Engines):
    """Reads that need no transaction of their own."""

    def message(self, **where: Any) -> sa.Row[Any] | None:
        query = sa.select(messages)
        for column, value in where.items():
            query = query.where(messages.c[column] == value)
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(messages.c.id).limit(1)).first()

    def messages(self, mailbox: str | None = None) -> list[sa.Row[Any]]:
        query = sa.select(messages).order_by(messages.c.id)
        if mailbox:
            query = query.where(messages.c.mailbox == mailbox)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def events(self, message_pk: int | None = None) -> list[sa.Row[Any]]:
        query = sa.select(events).order_by(events.c.id)
        if message_pk is not None:
            query = query.where(events.c.message_pk == message_pk)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def outbox_items(self, status: OutboxStatus | None = None) -> list[sa.Row[Any]]:
        """The outbox rows, each with its bytes as ``raw`` (None once purged)."""
        query = (
            sa.select(outbox, outbox_bodies.c.raw)
            .outerjoin(outbox_bodies, outbox_bodies.c.outbox_id == outbox.c.id)
            .order_by(outbox.c.id)
        )
        if status:
            query = query.where(outbox.c.status == status)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def due_outbox(self, now: datetime, limit: int = 500) -> list[OutboxItem]:
        query = (
            sa.select(outbox, outbox_bodies.c.raw, messages.c.sender)
            .outerjoin(messages, messages.c.id == outbox.c.message_pk)
            .outerjoin(outbox_bodies, outbox_bodies.c.outbox_id == outbox.c.id)
            .where(outbox.c.status == OutboxStatus.PENDING, outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [outbox_item(row, message_sender=row.sender) for row in conn.execute(query)]

    def last_claim(self, prefix: str, before: str | None = None) -> str | None:
        """The greatest one-time action claimed under ``prefix``, below ``prefix + before``
        if given, without the prefix: e.g. the day of the last digest sent before today
        (``app/alerts``). A read: no write transaction (on SQLite, no write lock) taken."""
        with self.engine.connect() as conn:
            return newest_claim(conn, prefix, before)

    def any_stalled_send(self, now: datetime, stale: timedelta) -> bool:
        """Whether ``Transaction.requeue_stalled`` would queue any mail again: read first,
        so that a keeper's tick takes no write lock (SQLite's is the intake's too) when
        nothing is stalled, which is nearly always."""
        query = sa.select(outbox.c.id).where(stalled_sends(now, stale)).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def outbox_status(self, item_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(outbox.c.status).where(outbox.c.id == item_id)
            ).scalar_one_or_none()
