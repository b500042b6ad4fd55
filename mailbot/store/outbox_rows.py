"""The outbox: mail queued (one at a time, or a batch part's at once), taken and claimed by
a delivery, settled, marked sent and its bookkeeping finished; the AR and transfer notice
statuses mirrored on the messages; our sent mails a bounce names."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mailbot.core.clock import utcnow
from mailbot.core.statuses import GIVEN_UP, ArStatus, OutboxKind, OutboxStatus
from mailbot.store.drivers import bind_param, driver_claim, driver_insert, driver_many, driver_rows
from mailbot.store.records import OutboxItem, SentMail, outbox_item
from mailbot.store.rows import Rows
from mailbot.store.schema import messages, outbox, outbox_bodies, workers

# The columns of an INSERT come from the parameters' keys; built once, their cache key is.
_INSERT_OUTBOX = outbox.insert()
_INSERT_BODY = outbox_bodies.insert()
# The SET clause of these comes from the parameters' keys (the columns to change).
_UPDATE_OUTBOX = outbox.update().where(outbox.c.id == bind_param("item_id"))
# What a delivery writes of a mail it holds, only while it still does: 'sending' under its
# own claim after a send attempt, or 'pending' and taken by it before (Transaction.settle).
_SETTLE_OUTBOX = outbox.update().where(
    outbox.c.id == bind_param("item_id"),
    outbox.c.status == bind_param("held_as"),
    outbox.c.claimed_by == bind_param("holder"),
)
_UPDATE_MESSAGE = messages.update().where(messages.c.id == bind_param("message_pk"))
# A transfer notice's status, on its message only while it is the latest notice.
_UPDATE_NOTICE = _UPDATE_MESSAGE.where(messages.c.notice_outbox == bind_param("notice_id"))
# A mail the server accepted: committed with the next mail's claim. Its bytes stay until
# the delivery batch's bookkeeping (``finish_sent``), which they mark as not done yet.
# Only under the sender's own claim, as every write after a send (``settle``).
_MARK_SENT = (
    outbox.update()
    .where(
        outbox.c.id == bind_param("item_id"),
        outbox.c.status == OutboxStatus.SENDING,
        outbox.c.claimed_by == bind_param("holder"),
    )
    .values(status=OutboxStatus.SENT, sent_at=bind_param("at"), last_error=None)
)
# The sent items still holding their bytes: looked for from the few bodies, each one's
# status read by its id (a join let SQLite's planner walk every sent row by the status
# index instead, having no statistics to know better).
_OF_BODY = outbox.alias("of_body")
_BODY_STATUS = (
    sa.select(_OF_BODY.c.status)
    .where(_OF_BODY.c.id == outbox_bodies.c.outbox_id)
    .correlate(outbox_bodies)
    .scalar_subquery()
)
_SENT_UNFINISHED = sa.select(outbox_bodies.c.outbox_id).where(_BODY_STATUS == OutboxStatus.SENT)
# A mail's size, for a delivery's ``max_bytes``.
_BODY_SIZE = (
    sa.select(sa.func.length(outbox_bodies.c.raw))
    .where(outbox_bodies.c.outbox_id == outbox.c.id)
    .scalar_subquery()
)
# What a delivery reads of the items it took (``outbox_item``): not their other times,
# each parsed from text into a datetime on SQLite for nothing; since when each waits, for
# its time in the queue (``outbox.max_queue_hours``).
ITEM_COLUMNS = (
    "id",
    "message_pk",
    "kind",
    "recipient",
    "envelope_from",
    "email_message_id",
    "attempts",
    "created_at",
    "requeued_at",
)
_TAKEN = (*(outbox.c[name] for name in ITEM_COLUMNS), outbox_bodies.c.raw)
_OUTBOX_KEYS = (
    "message_pk",
    "kind",
    "recipient",
    "envelope_from",
    "email_message_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)

_BODY_KEYS = ("outbox_id", "raw")
_AT_MOST_ONCE = frozenset(kind.value for kind in OutboxKind if kind.at_most_once)


def _to_citizens(rows: list[Any], citizens: int | None) -> list[Any]:
    """The first of ``rows`` (id, size, kind) up to ``citizens`` mails to citizens."""
    if citizens is None:
        return rows
    kept: list[Any] = []
    for row in rows:
        if row[2] in _AT_MOST_ONCE:
            if citizens == 0:
                break
            citizens -= 1
        kept.append(row)
    return kept


def _within(rows: list[Any], max_bytes: int | None) -> list[int]:
    """The ids of ``rows`` (id, size, …) up to ``max_bytes`` of mail, one at least."""
    ids: list[int] = []
    total = 0
    for item_id, size, *_kind in rows:
        total += int(size)
        if ids and max_bytes is not None and total > max_bytes:
            break
        ids.append(int(item_id))
    return ids


class OutboxRows(Rows):
    """The ``Transaction``'s writes and reads of the ``outbox`` rows."""

    def sent_mails(self, message_ids: Sequence[str], kinds: Sequence[OutboxKind]) -> list[SentMail]:
        """Our mails of these kinds to a citizen's message with one of these Message-IDs
        (``ix_outbox_email_message_id``): what a bounce naming them is about."""
        if not message_ids:
            return []
        query = (
            sa.select(
                outbox.c.id,
                outbox.c.message_pk,
                outbox.c.kind,
                outbox.c.recipient,
                outbox.c.sent_at,
            )
            .where(
                outbox.c.email_message_id.in_(list(message_ids)),
                outbox.c.kind.in_([k.value for k in kinds]),
                outbox.c.message_pk.is_not(None),
            )
            .order_by(outbox.c.id)
        )
        return [
            SentMail(r.id, r.message_pk, OutboxKind(r.kind), r.recipient, r.sent_at)
            for r in self.conn.execute(query)
        ]

    # -- outbox -------------------------------------------------------------------------
    def enqueue(
        self,
        message_pk: int | None,
        kind: OutboxKind,
        recipient: str,
        envelope_from: str,
        email_message_id: str,
        raw: bytes,
    ) -> int:
        now = utcnow()
        result = self.conn.execute(
            _INSERT_OUTBOX,
            {
                "message_pk": message_pk,
                "kind": kind,
                "recipient": recipient,
                "envelope_from": envelope_from,
                "email_message_id": email_message_id,
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
        item_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        self.conn.execute(_INSERT_BODY, {"outbox_id": item_id, "raw": raw})
        return item_id

    def take_due(
        self,
        now: datetime,
        limit: int,
        holder: str,
        stale: timedelta,
        max_bytes: int | None = None,
        citizens: int | None = None,
    ) -> list[OutboxItem]:
        """Due mail for ``holder`` to send: pending items nobody else took, or taken by a
        dead worker, or long ago. What it took itself is free to it again: one Outbox
        delivers one batch at a time (``Outbox.deliver_due``), so that is what an earlier
        delivery of its left. Another delivery may thus hold what is taken here: each
        claim, and every write after it, is conditional (``claim_outbox``,
        ``settle_outbox``). ``FOR UPDATE SKIP LOCKED``: two workers asking at the
        same moment get different items and never wait on each other (SQLite, which
        serves one worker, ignores it). With ``max_bytes``, no more mail than that (one
        item at least): what is taken is held in memory until it is sent, and a forward
        carries the citizen's original, scans and all. With ``citizens``, no more mails to
        citizens than that among the ``limit``: a delivery takes a FETCH batch's ARs and the
        forwards between them, and a batch's worth of ARs alone (worker, DeliveryLoop)."""
        alive = sa.select(workers.c.id).where(workers.c.expires_at > now)
        free = sa.or_(
            outbox.c.claimed_by.is_(None),
            outbox.c.claimed_by == holder,
            outbox.c.claimed_by.not_in(alive),
            outbox.c.claimed_at < now - stale,
        )
        due = self.conn.execute(
            sa.select(outbox.c.id, sa.func.coalesce(_BODY_SIZE, 0), outbox.c.kind)
            .where(outbox.c.status == OutboxStatus.PENDING, outbox.c.next_attempt_at <= now)
            .where(free)
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = _within(_to_citizens(list(due), citizens), max_bytes)
        if not ids:
            return []
        self.conn.execute(
            outbox.update().where(outbox.c.id.in_(ids)).values(claimed_by=holder, claimed_at=now)
        )
        query = (
            sa.select(*_TAKEN, messages.c.sender)
            .select_from(outbox)
            .outerjoin(messages, messages.c.id == outbox.c.message_pk)
            .outerjoin(outbox_bodies, outbox_bodies.c.outbox_id == outbox.c.id)
            .where(outbox.c.id.in_(bind_param("ids", expanding=True)))
            .order_by(outbox.c.id)
        )
        rows = self.conn.execute(query, {"ids": ids})
        return [outbox_item(row, message_sender=row.sender) for row in rows]

    def claim_outbox(self, item_id: int, attempts: int, holder: str | None = None) -> bool:
        """Move a pending item to 'sending'; False if another worker got it first. The
        claimer is recorded: its send is recovered as uncertain only once it is dead."""
        values = {
            "item_id": item_id,
            "status": OutboxStatus.SENDING,
            "attempts": attempts,
            "claimed_by": holder,
            "claimed_at": utcnow(),
        }
        return driver_claim(self.conn.dialect).run(self.conn, values) == 1

    def renew_claims(self, item_ids: Sequence[int], holder: str, at: datetime) -> set[int]:
        """A slow delivery's claims on internal mail it still holds 'sending' (``holder``'s),
        dated ``at`` again: a keeper queues such a mail again once its claim is older than
        ``CLAIM_STALE`` (``requeue_stalled``), and must not while its sender lives. The ids
        still held; one missing was queued again meanwhile: the sender leaves it alone."""
        if not item_ids:
            return set()
        query = (
            outbox.update()
            .where(
                outbox.c.id.in_(bind_param("ids", expanding=True)),
                outbox.c.status == OutboxStatus.SENDING,
                outbox.c.claimed_by == holder,
            )
            .values(claimed_at=at)
            .returning(outbox.c.id)
        )
        return {int(i) for i in self.conn.execute(query, {"ids": list(item_ids)}).scalars()}

    def settle_orphan(
        self, item_id: int, claimed_by: str | None, status: OutboxStatus, **values: Any
    ) -> bool:
        """``set_outbox_status`` only while the item is still 'sending' under the claim it
        was found with (``claimed_by``, None included); False, and nothing written, once
        it was given back or claimed by another (a live) worker meanwhile. On PostgreSQL the
        UPDATE waits for a concurrent claim's lock and checks the row as it then is."""
        result = self.conn.execute(
            outbox.update()
            .where(
                outbox.c.id == item_id,
                outbox.c.status == OutboxStatus.SENDING,
                outbox.c.claimed_by.is_not_distinct_from(claimed_by),
            )
            .values(status=status, **values)
        )
        if result.rowcount != 1:
            return False
        self._give_up_bytes(item_id, status)
        return True

    def set_outbox_status(self, item_id: int, status: OutboxStatus, **values: Any) -> None:
        self.conn.execute(_UPDATE_OUTBOX, {"item_id": item_id, "status": status, **values})
        self._give_up_bytes(item_id, status)

    def _give_up_bytes(self, item_id: int, status: OutboxStatus) -> None:
        """A mail failed or uncertain is not sent again by mailbot: its bytes (an AR's
        subject, a forward's whole citizen's mail) are deleted with the status that says
        so, in its transaction, as a sent mail's are after its bookkeeping. (A mail failed
        for lack of time keeps them: ``settle_outbox(keep_bytes=True)``.)"""
        if status in GIVEN_UP:
            self.conn.execute(outbox_bodies.delete().where(outbox_bodies.c.outbox_id == item_id))

    def settle_outbox(
        self,
        item_id: int,
        holder: str,
        held_as: OutboxStatus,
        status: OutboxStatus,
        keep_bytes: bool = False,
        **values: Any,
    ) -> bool:
        """``set_outbox_status`` only while ``holder`` still holds the item as ``held_as``
        ('sending': its own claim; 'pending': taken by it, not claimed yet); False, and
        nothing written, once another delivery has it (claimed, sent, taken again). A
        delivery writing over a mail it no longer holds could put a sent AR back to
        'pending', and it would leave a second time. ``keep_bytes``: a mail failed only for
        lack of time (temporary errors for longer than ``outbox.max_queue_hours``) keeps
        its bytes until the retention purge, for an operator's ``requeue_failed``."""
        params = {"item_id": item_id, "holder": holder, "held_as": held_as}
        result = self.conn.execute(_SETTLE_OUTBOX, {**params, "status": status, **values})
        if result.rowcount != 1:
            return False
        if not (keep_bytes and status == OutboxStatus.FAILED):
            self._give_up_bytes(item_id, status)
        return True

    def set_ar_status(self, message_pk: int, status: ArStatus) -> None:
        self.conn.execute(_UPDATE_MESSAGE, {"message_pk": message_pk, "ar_status": status})

    def set_ar_statuses(self, message_pks: Sequence[int], status: ArStatus) -> None:
        """``set_ar_status`` for many messages in one executemany (a delivery batch)."""
        self._set_statuses("ar_status", message_pks, status)

    def set_latest_notice(self, message_pk: int, notice_id: int) -> None:
        """An agent's transfer queued the notice ``notice_id`` (pending): from now on the
        message's notice status is this one's, the latest transfer's, whatever an earlier
        notice's delivery writes later (``set_notice_status``). Written with the transfer's
        service, in its transaction: the last transfer committed is the one that holds."""
        values = {"notice_outbox": notice_id, "notice_status": OutboxStatus.PENDING}
        self.conn.execute(_UPDATE_MESSAGE, {"message_pk": message_pk, **values})

    def set_notice_status(self, message_pk: int, notice_id: int, status: OutboxStatus) -> None:
        """The outbox status of the transfer notice ``notice_id`` on its message, only while
        it is the message's latest (``set_latest_notice``): the transfer is announced to the
        citizen once that one is 'sent'. An earlier notice settled later writes nothing. On
        PostgreSQL an UPDATE waiting for a transfer's lock checks the row as it committed."""
        self.set_notice_statuses([(message_pk, notice_id)], status)

    def set_notice_statuses(self, notices: Sequence[tuple[int, int]], status: OutboxStatus) -> None:
        """``set_notice_status`` for many (message, notice) in one executemany (a delivery
        batch)."""
        if notices:
            rows = [
                {"message_pk": pk, "notice_id": notice_id, "notice_status": status}
                for pk, notice_id in notices
            ]
            driver_many(self.conn.dialect, _UPDATE_NOTICE, ("notice_status",)).run(self.conn, rows)

    def _set_statuses(self, column: str, message_pks: Sequence[int], status: str) -> None:
        if message_pks:
            rows = [{"message_pk": pk, column: status} for pk in message_pks]
            driver_many(self.conn.dialect, _UPDATE_MESSAGE, (column,)).run(self.conn, rows)

    def mark_sent(self, sent: Sequence[tuple[int, datetime]], holder: str) -> set[int]:
        """Outbox items the server accepted (id, when): 'sent', their bytes kept until
        ``finish_sent`` (a crash in between leaves them for ``unfinished_sent``). Only those
        still 'sending' under ``holder``'s claim (see ``settle_outbox``): the ids written.
        One missing was queued again while it left (it may arrive twice). The common case,
        every row written, costs no read: only a count short of them looks which."""
        if not sent:
            return set()
        rows = [{"item_id": i, "at": at, "holder": holder} for i, at in sent]
        ids = {i for i, _ in sent}
        if driver_many(self.conn.dialect, _MARK_SENT, ()).run(self.conn, rows) == len(ids):
            return ids
        query = sa.select(outbox.c.id).where(
            outbox.c.id.in_(ids),
            outbox.c.status == OutboxStatus.SENT,
            outbox.c.claimed_by == holder,
        )
        return {int(i) for i in self.conn.execute(query).scalars()}

    def finish_sent(self, item_ids: Sequence[int]) -> set[int]:
        """Purge the bytes of sent items whose bookkeeping is being written; the ids this
        call purged. An item another call finished first is not among them, so its status
        mirror and events are never written twice (the DELETE locks the body until commit,
        and finds it gone after)."""
        if not item_ids:
            return set()
        query = (
            outbox_bodies.delete()
            .where(
                outbox_bodies.c.outbox_id.in_(bind_param("ids", expanding=True)),
                _BODY_STATUS == OutboxStatus.SENT,
            )
            .returning(outbox_bodies.c.outbox_id)
        )
        return {int(i) for i in self.conn.execute(query, {"ids": list(item_ids)}).scalars()}

    def unfinished_sent(self, limit: int = 1000) -> list[tuple[OutboxItem, datetime]]:
        """Sent items whose bookkeeping a crash (or a failed commit) left undone, with
        when they left (found from the few rows of ``outbox_bodies``)."""
        query = (
            sa.select(outbox)
            .where(outbox.c.id.in_(_SENT_UNFINISHED))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [(outbox_item(r, raw=False), r.sent_at) for r in self.conn.execute(query)]

    # -- an intake batch's rows, written at its end ---------------------------------------
    def queue_rows(
        self, rows: Sequence[tuple[int, OutboxKind, str, str, str, bytes, datetime]]
    ) -> None:
        """Outbox mails of many messages, as ``enqueue`` writes each: (message, kind,
        recipient, envelope from, Message-ID, bytes, when queued). Each row is inserted
        on the driver's cursor for its id, their bodies in one executemany."""
        if not rows:
            return
        insert = driver_insert(self.conn.dialect, _OUTBOX_KEYS, outbox)
        bodies = [
            {
                "outbox_id": insert.run(
                    self.conn,
                    {
                        "message_pk": pk,
                        "kind": kind,
                        "recipient": recipient,
                        "envelope_from": envelope_from,
                        "email_message_id": message_id,
                        "status": OutboxStatus.PENDING,
                        "attempts": 0,
                        "next_attempt_at": at,
                        "created_at": at,
                    },
                ),
                "raw": raw,
            }
            for pk, kind, recipient, envelope_from, message_id, raw, at in rows
        ]
        driver_rows(self.conn.dialect, outbox_bodies, _BODY_KEYS).run(self.conn, bodies)
