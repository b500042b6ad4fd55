"""The retention purge: everything about the messages past ``retention.days`` deleted,
with the mail and events tied to none, and SQLite's write-ahead log emptied of them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mailbot.core.statuses import OutboxStatus
from mailbot.store.engines import Engines
from mailbot.store.schema import corrections, events, message_keys, messages, outbox, outbox_bodies

log = logging.getLogger(__name__)


class RetentionPurge(Engines):
    """``purge``: personal data kept no longer than the retention."""

    def purge(self, before: datetime, now: datetime | None = None) -> int:
        """Delete everything about messages received before ``before`` (retention), or
        recorded before it but dated by the server after ``now`` (default: the clock's):
        such an INTERNALDATE (a wrong clock, a date a client gave a mail it copied in) kept
        them until that date. And the
        mail and events tied to no message made before it: digests and reports carry
        citizens' subjects, and one that failed or stayed pending kept them for ever. The
        bytes of an uncertain mail (never sent again) go whatever their age: a version
        before ``Transaction._give_up_bytes`` kept them until the retention. A mail failed
        for lack of time keeps its bytes for an operator's requeue (``app/requeue``) until
        its row goes here (its message's, or its own creation, before ``before``); schema
        0024 deleted those of the mails failed before it, refusals included."""
        with self.transaction() as tx:
            uncertain = sa.select(outbox.c.id).where(outbox.c.status == OutboxStatus.UNCERTAIN)
            tx.conn.execute(outbox_bodies.delete().where(outbox_bodies.c.outbox_id.in_(uncertain)))
            expired = _expired(before, datetime.now(UTC) if now is None else now)
            old = sa.select(messages.c.id).where(expired)
            tx.conn.execute(events.delete().where(events.c.message_pk.in_(old)))
            tx.conn.execute(outbox.delete().where(outbox.c.message_pk.in_(old)))
            unattached = outbox.c.message_pk.is_(None) & (outbox.c.created_at < before)
            tx.conn.execute(outbox.delete().where(unattached))
            tx.conn.execute(
                events.delete().where(events.c.message_pk.is_(None) & (events.c.at < before))
            )
            tx.conn.execute(corrections.delete().where(corrections.c.message_pk.in_(old)))
            tx.conn.execute(message_keys.delete().where(message_keys.c.message_pk.in_(old)))
            tx.conn.execute(
                messages.update().where(messages.c.parent_id.in_(old)).values(parent_id=None)
            )
            deleted = tx.conn.execute(messages.delete().where(expired))
        self._truncate_wal()
        return int(deleted.rowcount)

    def _truncate_wal(self) -> None:
        """On SQLite, the purged rows' pages also sit in the write-ahead log until it is
        overwritten: a worker keeps the database open for days, so the log is written back
        and emptied now (best effort: a reader of another process may hold it a while)."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection  # no transaction around it
            busy, *_pages = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("purge: the write-ahead log is in use, emptied at a later checkpoint")


def _expired(before: datetime, now: datetime) -> sa.ColumnElement[bool]:
    """The messages past their retention: received before ``before``, or dated by the
    server after ``now`` (still to come) but recorded before ``before``. Both read the
    index on ``received_at`` (the second, a range of the few rows dated in the future)."""
    c = messages.c
    return sa.or_(c.received_at < before, sa.and_(c.received_at > now, c.created_at < before))
