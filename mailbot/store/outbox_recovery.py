"""Outbox mail a crash, a dead sender, a lack of time or a restore left behind: internal
mail left 'sending' queued again, mail failed for lack of time requeued, mails to
citizens interrupted mid-send found, those queued before a restore. The statements only:
what each recovery means (uncertain, queued again with a WARNING) is decided by the use
cases of ``app/delivery_recovery``, ``app/requeue`` and ``app/restore``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mailbot.core.statuses import AT_LEAST_ONCE, AT_MOST_ONCE, OutboxKind, OutboxStatus
from mailbot.store.outbox_rows import ITEM_COLUMNS
from mailbot.store.records import OutboxItem, outbox_item
from mailbot.store.rows import Rows
from mailbot.store.schema import messages, outbox, outbox_bodies, workers

# The body of the outbox row a statement is about (a failed mail's, kept for a requeue).
_KEPT_BODY = outbox_bodies.c.outbox_id == outbox.c.id


def stalled_sends(
    now: datetime, stale: timedelta, alone: bool = False, own: str | None = None
) -> Any:
    """The condition of an internal mail left 'sending' that no live delivery can be
    sending any more (``Transaction.requeue_stalled``); never one ``own`` claimed (this
    process's holder: its claims are live)."""
    alive = sa.select(workers.c.id).where(workers.c.expires_at > now)
    gone = sa.and_(
        sa.or_(outbox.c.claimed_at.is_(None), outbox.c.claimed_at < now - stale),
        sa.or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by.not_in(alive)),
    )
    if alone:
        gone = sa.or_(gone, outbox.c.claimed_by.in_(sa.select(workers.c.id)))
    if own is not None:
        gone = sa.and_(gone, not_claimed_by(own))
    return sa.and_(outbox.c.status == OutboxStatus.SENDING, outbox.c.kind.in_(AT_LEAST_ONCE), gone)


def not_claimed_by(holder: str) -> Any:
    """An outbox row ``holder`` does not hold (unclaimed, or another's claim)."""
    return sa.or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by != holder)


_REQUEUED_ERROR = "queued again: its sender stopped while sending it (it may arrive twice)"
# What ``requeue_stalled`` returns of each mail it queued again (an OutboxItem, no bytes).
_REQUEUED = ITEM_COLUMNS


class OutboxRecovery(Rows):
    """The ``Transaction``'s recovery of outbox rows left behind."""

    def queued_before(self, before: datetime) -> list[OutboxItem]:
        """The outbox items queued before ``before`` and still waiting or leaving (pending,
        sending), without their bytes."""
        query = (
            sa.select(outbox)
            .where(
                outbox.c.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
                outbox.c.created_at < before,
            )
            .order_by(outbox.c.id)
        )
        return [outbox_item(row, raw=False) for row in self.conn.execute(query)]

    def requeue_stalled(
        self, now: datetime, stale: timedelta, alone: bool = False, own: str | None = None
    ) -> list[OutboxItem]:
        """Internal mail (forward, digest, report, probe alert) left 'sending' that no live
        delivery can be sending any more, back to 'pending', due now, for any worker: its
        claim older than ``stale`` (``CLAIM_STALE``: a live sender renews it before, see
        ``renew_claims``) and its claimer no live worker. ``alone`` (a worker's start on
        SQLite, whose sole-worker lock proves every other worker's process gone): a
        registered worker's claim at once, whatever its age — but never ``own``'s (this
        process's holder: its console may be delivering). One statement, its condition
        checked on the row as it is when written (a claim renewed meanwhile stays)."""
        return self._requeue_where(stalled_sends(now, stale, alone, own), now)

    def requeue_claims_of(self, holder: str, now: datetime) -> list[OutboxItem]:
        """``holder``'s internal mail left 'sending', whatever its claim's age, back to the
        queue as ``requeue_stalled`` does: a delivery of that (live) process that raised
        mid-run left it so (``app/delivery_recovery.recover_own``)."""
        mine = sa.and_(
            outbox.c.status == OutboxStatus.SENDING,
            outbox.c.kind.in_(AT_LEAST_ONCE),
            outbox.c.claimed_by == holder,
        )
        return self._requeue_where(mine, now)

    def _requeue_where(self, condition: Any, now: datetime) -> list[OutboxItem]:
        query = (
            outbox.update()
            .where(condition)
            .values(
                status=OutboxStatus.PENDING,
                next_attempt_at=now,
                claimed_by=None,
                claimed_at=None,
                last_error=_REQUEUED_ERROR,
            )
            .returning(*(outbox.c[name] for name in _REQUEUED))
        )
        found = [outbox_item(row, raw=False) for row in self.conn.execute(query)]
        return sorted(found, key=lambda item: item.id)

    def requeue_sending(self, item_id: int, now: datetime, error: str) -> bool:
        """``item_id`` back to 'pending', due ``now``, for any worker, if it is 'sending'
        (its bytes kept): internal mail a restored database had leaving (app/restore)."""
        query = (
            outbox.update()
            .where(outbox.c.id == item_id, outbox.c.status == OutboxStatus.SENDING)
            .values(
                status=OutboxStatus.PENDING,
                next_attempt_at=now,
                claimed_by=None,
                claimed_at=None,
                last_error=error,
            )
        )
        return self.conn.execute(query).rowcount == 1

    def failed_to_requeue(
        self, since: datetime | None, kinds: Sequence[OutboxKind], guarded: bool = True
    ) -> list[OutboxItem]:
        """Failed mails of ``kinds`` (failed at or after ``since``) that still hold their
        bytes: failed for lack of time, never refused (a refusal's and an uncertain mail's
        bytes are deleted when settled). ``guarded``: only those that may leave now without
        a mail sent twice or out of date — not when a later mail of the same kind was
        queued for the message since (an agent's second transfer notice, a reply sent
        again by hand), nor an AR when another AR of the message did not fail, nor an AR of
        a message answered meanwhile (the reply said more than the AR would)."""
        other = outbox.alias("sibling")
        superseded = sa.exists(
            sa.select(other.c.id).where(
                other.c.message_pk == outbox.c.message_pk,
                other.c.kind == outbox.c.kind,
                other.c.id != outbox.c.id,
                sa.or_(
                    other.c.id > outbox.c.id,
                    (outbox.c.kind == OutboxKind.AR) & (other.c.status != OutboxStatus.FAILED),
                ),
            )
        )
        answered = sa.exists(
            sa.select(messages.c.id).where(
                messages.c.id == outbox.c.message_pk, messages.c.first_reply_at.is_not(None)
            )
        )
        kept = sa.exists(sa.select(outbox_bodies.c.outbox_id).where(_KEPT_BODY))
        query = (
            sa.select(outbox)
            .where(outbox.c.status == OutboxStatus.FAILED, kept)
            .where(outbox.c.kind.in_([kind.value for kind in kinds]))
            .order_by(outbox.c.id)
        )
        if since is not None:
            query = query.where(outbox.c.failed_at >= since)
        if guarded:
            query = query.where(~superseded).where(
                sa.or_(outbox.c.kind != OutboxKind.AR, ~answered)
            )
        return [outbox_item(row, raw=False) for row in self.conn.execute(query)]

    def requeue_failed(self, item_id: int, now: datetime) -> bool:
        """Put a mail failed for lack of time back in the queue, due at once, its time in
        the queue and its backoff started again; False, nothing written, unless it is still
        failed and holds its bytes (another operator's requeue came first, or it was a
        refusal). Never an uncertain mail: it may have left."""
        kept = sa.exists(sa.select(outbox_bodies.c.outbox_id).where(_KEPT_BODY))
        result = self.conn.execute(
            outbox.update()
            .where(outbox.c.id == item_id, outbox.c.status == OutboxStatus.FAILED, kept)
            .values(
                status=OutboxStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                requeued_at=now,
                failed_at=None,
                claimed_by=None,
                claimed_at=None,
            )
        )
        return result.rowcount == 1

    def interrupted_sends(
        self, own: str | None = None, only: str | None = None
    ) -> list[OutboxItem]:
        """The mails to citizens left 'sending' (by a crash), without their bytes; internal
        mail left so is ``requeue_stalled``'s. Not ``own``'s (this process's holder): its
        claims are a live delivery's, not a crash's. ``only``: that holder's alone (its
        delivery raised mid-run: ``app/delivery_recovery.recover_own``)."""
        query = (
            sa.select(outbox)
            .where(outbox.c.status == OutboxStatus.SENDING, outbox.c.kind.in_(AT_MOST_ONCE))
            .order_by(outbox.c.id)
        )
        if own is not None:
            query = query.where(not_claimed_by(own))
        if only is not None:
            query = query.where(outbox.c.claimed_by == only)
        return [outbox_item(row, raw=False) for row in self.conn.execute(query)]
