"""Mail failed for lack of time put back in the queue by an operator, after an outage.

A mail the SMTP server kept deferring fails once it has been queued for longer than
``outbox.max_queue_hours`` (5 days; ``app/delivery``); a relay down longer than that, or
mended only then, leaves ARs failed that are still owed (the mission is to acknowledge every
citizen's mail: an AR late is still the only acknowledgement). Such a mail keeps its bytes
(until the retention purge), and ``requeue_failed`` queues it again: due at once, its
backoff and its time in the queue started again, its message's AR status back to pending.

Only such mail: a refusal (5xx, a forbidden recipient) lost its bytes when it failed and
would be refused again; an uncertain mail may have left and is never sent again, whatever
an operator asks. Nor a mail that would now be out of date or a second one: an AR when
another AR of its message did not fail, or when the message was answered meanwhile; any
mail when a later one of the same kind was queued for its message (an agent's second
transfer notice, a reply written again). Each mail is put back by one conditional update:
two operators at once, or a second run, requeue nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailbot.app.outbox_bookkeeping import mirror
from mailbot.core.clock import Clock, utcnow
from mailbot.core.statuses import EventKind, OutboxKind, OutboxStatus
from mailbot.store import OutboxItem, Store

# What ``requeue_failed`` takes unless told: the mail a citizen or a service is owed. A
# digest, a report or a probe's alert days late is out of date (the next one says more).
CITIZENS_MAIL = (OutboxKind.AR, OutboxKind.FORWARD, OutboxKind.NOTICE, OutboxKind.REPLY)


@dataclass(frozen=True)
class Requeued:
    """What a requeue did (or, ``dry_run``, would do)."""

    items: list[OutboxItem]  # put back in the queue
    held_back: int  # failed for lack of time too, but superseded or answered since


def requeue_failed(
    store: Store,
    *,
    since: datetime | None = None,
    kinds: Sequence[OutboxKind] = CITIZENS_MAIL,
    who: str = "",
    dry_run: bool = False,
    clock: Clock = utcnow,
) -> Requeued:
    """Put back in the queue the mail of ``kinds`` that failed for lack of time (at or
    after ``since``), in one transaction; delivery is the face's to start. ``who``: the
    operator, named in each mail's ``send_requeued`` event."""
    now = clock()
    with store.transaction() as tx:
        candidates = tx.failed_to_requeue(since, kinds)
        held_back = len(tx.failed_to_requeue(since, kinds, guarded=False)) - len(candidates)
        if dry_run:
            return Requeued(candidates, held_back)
        done = []
        for item in candidates:
            if not tx.requeue_failed(item.id, now):
                continue  # another requeue took it first
            mirror(tx, item, OutboxStatus.PENDING)
            by = f" by {who}" if who else ""
            detail = f"outbox {item.id}: failed for lack of time, put back in the queue{by}"
            tx.add_event(item.message_pk, EventKind.SEND_REQUEUED, detail)
            done.append(item)
    return Requeued(done, held_back)
