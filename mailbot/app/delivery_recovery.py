"""Mail left 'sending' recovered: by a crash (``recover_interrupted``, at a SQLite
worker's start), by a dead worker (``recover_orphans``, a keeper's tick), by this
process's own delivery that raised mid-run (``recover_own``), or stalled
(``requeue_stalled``). A mail to a citizen becomes uncertain, never sent again; internal
mail is queued again, a WARNING each (it may arrive twice). The SQL is
``store/outbox_recovery``'s."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from mailbot.app.outbox_bookkeeping import finish_sent, mirror, set_status
from mailbot.core.clock import utcnow
from mailbot.core.statuses import EventKind, OutboxStatus
from mailbot.store import OutboxItem, Store, Transaction

log = logging.getLogger(__name__)
# Mail a live worker took but has not sent after this long is free for another to take
# (the send itself stays at most once: 'pending' to 'sending' is one conditional update);
# internal mail a dead or unregistered process left 'sending' this long goes back to the
# queue (``requeue_stalled``).
CLAIM_STALE = timedelta(minutes=5)


def recover_orphans(store: Store, found: list[tuple[OutboxItem, str | None]]) -> list[int]:
    """Items a dead worker left 'sending' (``Cluster.orphaned_sends``: each with its
    claimer), as at a restart: uncertain, never resent; only one still sending under the
    same claim when written: a mail given back and claimed meanwhile by a live worker is
    that worker's, leaving now, never flagged 'uncertain'."""
    recovered: list[int] = []
    with store.transaction() as tx:
        for item, claimed_by in found:
            uncertain = OutboxStatus.UNCERTAIN
            error = "worker died while sending"
            if not tx.settle_orphan(item.id, claimed_by, uncertain, last_error=error):
                continue
            mirror(tx, item, uncertain)
            tx.add_event(
                item.message_pk,
                EventKind.SEND_UNCERTAIN,
                f"outbox {item.id}: its worker died while sending",
            )
            recovered.append(item.id)
    return recovered


def recover_interrupted(store: Store, own: str | None = None) -> list[int]:
    """Outbox items left 'sending' by a crash, at a worker's start alone on the database
    (SQLite: its sole-worker lock): we cannot know whether they left.

    mailbot guarantees never two ARs for one message, so an interrupted send to a citizen
    is marked 'uncertain' and never retried; the event lets an agent check by hand. Its
    ids are returned. Internal mail a dead worker left so goes back to the queue at once;
    one an unregistered process (the console, a command) claimed less than ``CLAIM_STALE``
    ago may still be leaving, and waits for a keeper's ``requeue_stalled``.

    ``own``: this process's holder (``Outbox.holder``, unique per process): its claims are
    live, never a crash's — the console in the worker (``web.enabled``) starts first,
    shares the Outbox and may be delivering now. Left out, or its reply would be flagged
    uncertain as it leaves, and its forward queued again under it and sent twice.
    """
    with store.transaction() as tx:
        found = tx.interrupted_sends(own)
        _mark_uncertain(tx, found, "interrupted while sending", " interrupted while sending")
        requeued = _requeue(tx, alone=True, own=own)
    _say_requeued(requeued)
    return [item.id for item in found]


def _mark_uncertain(
    tx: Transaction, found: Sequence[OutboxItem], last_error: str, detail: str
) -> None:
    """Mails to citizens whose send may have left, never to be sent again: uncertain, an
    event on each message for an agent to check."""
    for item in found:
        set_status(tx, item, OutboxStatus.UNCERTAIN, last_error=last_error)
        tx.add_event(item.message_pk, EventKind.SEND_UNCERTAIN, f"outbox {item.id}{detail}")


def recover_own(
    store: Store,
    holder: str,
    accepted: Sequence[tuple[OutboxItem, datetime]],
    unsent: Sequence[OutboxItem],
    release: Callable[[Transaction, OutboxItem], None],
) -> list[int]:
    """The claims a delivery of this process (``holder``) left 'sending' when it raised
    mid-run (the database lost under it: its 'sent' and releases unwritten). Nobody else
    settles them — their claimer is a live worker, and they are not pending — so this
    process's next delivery does. ``accepted``: the mails that delivery saw the server
    accept (and when), their 'sent' never committed: recorded sent now, as they would have
    been. ``unsent``: those it claimed and never handed to the server, given back to the
    queue by ``release`` (``Outbox.release``, as its run's end would have): sent as if
    nothing happened. The others as after a crash: a mail to a citizen uncertain (it may
    have left), flagged; internal mail queued again. No delivery of ``holder`` is running
    (one at a time per Outbox). The uncertain ones' ids."""
    with store.transaction() as tx:
        for item in unsent:
            release(tx, item)
        if accepted:
            written = tx.mark_sent([(item.id, at) for item, at in accepted], holder)
            finish_sent(tx, [(item, at) for item, at in accepted if item.id in written])
        found = tx.interrupted_sends(only=holder)
        _mark_uncertain(
            tx,
            found,
            "its delivery failed mid-run",
            ": its delivery failed while sending (a database error)",
        )
        requeued = _requeue_said(tx, tx.requeue_claims_of(holder, utcnow()))
    _say_requeued(requeued)
    return [item.id for item in found]


def requeue_stalled(store: Store) -> list[int]:
    """Internal mail left 'sending' that no live delivery can be sending any more, back to
    the queue to leave again (a keeper's tick: ``Transaction.requeue_stalled``); the ids."""
    if not store.any_stalled_send(utcnow(), CLAIM_STALE):
        return []
    with store.transaction() as tx:
        requeued = _requeue(tx)
    _say_requeued(requeued)
    return [item.id for item in requeued]


def _requeue(tx: Transaction, alone: bool = False, own: str | None = None) -> list[OutboxItem]:
    """Internal mail stalled 'sending' queued again (``own``'s claims left: see
    ``recover_interrupted``), with an event on its message: its thread in the console says
    that its sender stopped while sending it, and that the service may receive it twice."""
    return _requeue_said(tx, tx.requeue_stalled(utcnow(), CLAIM_STALE, alone, own))


def _requeue_said(tx: Transaction, requeued: list[OutboxItem]) -> list[OutboxItem]:
    """An event on the message of each internal mail queued again (``_requeue``)."""
    for item in requeued:
        if item.message_pk is not None:
            detail = f"outbox {item.id} ({item.kind}): queued again, its sender stopped while"
            tx.add_event(
                item.message_pk,
                EventKind.SEND_DEFERRED,
                f"{detail} sending it (it may arrive twice)",
            )
    return requeued


def _say_requeued(requeued: Sequence[OutboxItem]) -> None:
    """Each requeue a WARNING naming the mail, once committed: not silent, as a second copy
    may reach its recipient."""
    for item in requeued:
        log.warning(
            "internal mail queued again: its sender stopped while sending it (it may arrive twice)",
            extra={"outbox": item.id, "kind": item.kind},
        )
