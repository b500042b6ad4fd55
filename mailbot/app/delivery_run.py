"""One delivery run (``Outbox.deliver_due``): the due mails claimed a group at a time before
their DATA, their 'sent' committed with the next write, the claims on internal mail renewed
before a keeper would queue it again, the bookkeeping at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.app.delivery_recovery import CLAIM_STALE
from mailbot.app.outbox_bookkeeping import finish_sent
from mailbot.app.settling import DeliveryReport, Tally
from mailbot.core.clock import utcnow
from mailbot.core.statuses import OutboxStatus
from mailbot.errors import DeliveryError, ForbiddenRecipientError
from mailbot.mail.smtp import Envelope
from mailbot.store import OutboxItem, Session, Transaction

if TYPE_CHECKING:
    from mailbot.app.delivery import Outbox

log = logging.getLogger(__name__)
# A delivery renews its claims on internal mail at its next mail once they are this old:
# a keeper queues such mail again only past CLAIM_STALE (app/delivery's docstring).
RENEW_AFTER = CLAIM_STALE / 2
Left = list[tuple[OutboxItem, datetime]]  # mails the server accepted, and when
# The 'sent' a transaction wrote: the mails it covered, and those of them it found queued
# again meanwhile (no row written: another delivery has them, they may arrive twice).
Written = tuple[Left, set[int]]


class Run:
    """One ``deliver_due``: its session, its items, and the 'sent' not committed yet.

    A committed claim ('sending') precedes each mail's DATA: the mails are claimed in groups
    (``Outbox.claim_group`` mails to citizens and the internal mails between them), in one
    commit, when the transport reaches the first of a group. The 'sent' of a group's mails
    commit with the next group's claim — a mail whose reply the transport had not read then
    (pipelined: up to 3 on two connections, ``Outbox.__init__``), with the write after; the
    last ones', at the end of the batch, with the bookkeeping of all of them
    (``finish_sent``). A crash in between leaves the group's mails 'sending' (those that
    left and those not yet sent alike), and those of the group before still unrecorded:
    those to citizens recovered as uncertain, flagged, never sent again; the internal ones
    queued again. A delivery slow enough for its claims on internal mail to near
    ``CLAIM_STALE`` renews them (``_renew``). A mail of a claimed group that the transport
    never reached (a shutdown, no connection) goes back to pending.
    """

    def __init__(
        self, outbox: Outbox, session: Session, items: dict[int, OutboxItem], report: DeliveryReport
    ) -> None:
        self.outbox = outbox
        self.session = session
        self.items = items
        self.report = report
        self.order = list(items)  # the transport sends in this order
        self.position = {item_id: n for n, item_id in enumerate(self.order)}
        self.claimed: dict[int, bool] = {}  # claimed with a group: may it leave?
        # When the oldest claim this run holds on internal mail was made or renewed (its
        # own clock); None while it holds none. Renewed at RENEW_AFTER (``_renew``).
        self.internal_since: datetime | None = None
        self.handled: set[int] = set()
        self.unrecorded: list[tuple[OutboxItem, datetime]] = []  # left, 'sent' not committed
        self.unfinished: list[tuple[OutboxItem, datetime]] = []  # 'sent', bookkeeping not yet

    def held_as(self, item_id: int) -> OutboxStatus | None:
        """What this delivery holds ``item_id`` as: 'sending' once claimed, 'pending' while
        only taken; None if its claim failed (another delivery has it, or it failed)."""
        if item_id not in self.claimed:
            return OutboxStatus.PENDING
        return OutboxStatus.SENDING if self.claimed[item_id] else None

    def before(self, envelope: Envelope) -> bool:
        item = self.items[int(envelope.name)]
        since = self.internal_since
        if since is not None and self.outbox.clock() - since >= RENEW_AFTER:
            self._renew()
        self.handled.add(item.id)
        if item.id not in self.claimed:
            self._claim_group(item.id)
        return self.claimed[item.id]

    def _renew(self) -> None:
        """This run's claims on internal mail, RENEW_AFTER old, dated now again, with the
        'sent' not committed yet, in one commit: a keeper queues internal mail again once
        its claim is CLAIM_STALE old (``requeue_stalled``), and a slow delivery (a relay
        taking 30 s a step, 32 forwards a group) must not see one it still holds sent by
        another. One found queued again meanwhile, not handed to the transport yet, is left
        to whoever has it now: never sent by this delivery."""
        held = [i for i, ok in self.claimed.items() if ok and not self.items[i].kind.at_most_once]
        self.internal_since = self.outbox.clock()
        holder = self.outbox.holder

        def renew(tx: Transaction) -> tuple[Written, set[int]]:
            return self._record_sent(tx), tx.renew_claims(held, holder, utcnow())

        sent, kept = self.session.write(renew)
        self._recorded(sent)
        for item_id in held:
            if item_id not in kept and item_id not in self.handled:
                self.claimed[item_id] = False
                log.warning(
                    "internal mail queued again while this delivery held it: left to another",
                    extra={"outbox": item_id, "kind": self.items[item_id].kind},
                )

    def _next_group(self, first: int) -> list[OutboxItem]:
        """``first`` and the mails after it not claimed yet: up to ``claim_group`` mails to
        citizens, and the internal mails between them (up to ``internal_group``)."""
        room = {True: self.outbox.claim_group, False: self.outbox.internal_group}
        group: list[OutboxItem] = []
        for n in range(self.position[first], len(self.order)):
            item = self.items[self.order[n]]
            if item.id in self.claimed:
                continue
            to_citizen = item.kind.at_most_once
            if not room[to_citizen]:
                break
            room[to_citizen] -= 1
            group.append(item)
        return group

    def _claim_group(self, first: int) -> None:
        """Claim ``first`` and the mails after it, up to a group, in one commit (alone, or
        with the intake part open meanwhile); a forbidden recipient or a mail without bytes
        fails there (if this delivery still holds it)."""
        group = self._next_group(first)
        if self.internal_since is None and not all(i.kind.at_most_once for i in group):
            self.internal_since = self.outbox.clock()  # before the claim: never later
        holder = self.outbox.holder

        def claim(tx: Transaction) -> tuple[Written, dict[int, bool], list[Tally]]:
            sent, claimed, tallies = self._record_sent(tx), {}, []
            for item in group:
                error = self.outbox.unsendable(item)
                if error is not None:
                    refused = isinstance(error, ForbiddenRecipientError)
                    pending = OutboxStatus.PENDING
                    tallies.append(self.outbox.fail(tx, item, error, refused, held_as=pending))
                    claimed[item.id] = False
                else:
                    claimed[item.id] = tx.claim_outbox(item.id, item.attempts + 1, holder)
            return sent, claimed, tallies

        sent, claimed, tallies = self.session.write(claim)
        self.claimed.update(claimed)
        self._recorded(sent)
        for tally in tallies:
            tally(self.report)

    def after(self, envelope: Envelope, error: DeliveryError | None) -> None:
        item = self.items[int(envelope.name)]
        if error is None:
            self.unrecorded.append((item, self.outbox.clock()))  # with the next write (claim)
        else:
            self.record(item, lambda tx: self.outbox.after_error(tx, item, error))

    def record(self, item: OutboxItem, write: Callable[[Transaction], Tally]) -> None:
        """Commit what happened to ``item`` (and the 'sent' still unrecorded); count it."""

        def work(tx: Transaction) -> tuple[Written, Tally]:
            return self._record_sent(tx), write(tx)

        sent, tally = self.session.write(work)
        self._recorded(sent)
        tally(self.report)

    def flush(self) -> None:
        """The batch is over: commit the 'sent' still unrecorded, the mails claimed but never
        handed to the transport released, and the bookkeeping of every mail that left
        (status mirror, events, purge), in one transaction."""
        idle = self.never_handed()
        if self.unrecorded or self.unfinished or idle:
            sent = self.session.write(lambda tx: self._finish(tx, idle))
            self._recorded(sent)
            self.unfinished = []

    def never_handed(self) -> list[OutboxItem]:
        """The mails this run claimed and never handed to the transport: none of their
        bytes left, so they can be queued again as they were."""
        return [self.items[i] for i, ok in self.claimed.items() if ok and i not in self.handled]

    def _finish(self, tx: Transaction, idle: Sequence[OutboxItem]) -> Written:
        sent = self._record_sent(tx)
        for item in idle:
            self.outbox.release(tx, item)
        left, missed = sent
        finish_sent(tx, [*self.unfinished, *(s for s in left if s[0].id not in missed)])
        return sent

    def _record_sent(self, tx: Transaction) -> Written:
        """Write the 'sent' still unrecorded in ``tx``; what it wrote, to be told to
        ``_recorded`` once ``tx`` committed. Nothing is forgotten before: a transaction the
        database refuses (a serialization failure, an intake part rolled back on SQLite)
        leaves them unrecorded, written by the next one, not 'sending' for ever."""
        left = list(self.unrecorded)
        written = tx.mark_sent([(item.id, at) for item, at in left], self.outbox.holder)
        return left, {item.id for item, _ in left} - written

    def _recorded(self, sent: Written) -> None:
        """``sent``'s 'sent' committed: their bookkeeping is due at the end; counted. One
        found queued again while it left (its claim taken for a dead sender's: a process
        paused, a stalled database, clocks apart) is another delivery's now, to be sent
        again: said, not counted (nor its bookkeeping written) by this one."""
        left, missed = sent
        del self.unrecorded[: len(left)]
        for item, at in left:
            if item.id in missed:
                log.warning(
                    "mail left, but queued again meanwhile: it may arrive twice",
                    extra={"outbox": item.id, "kind": item.kind},
                )
                continue
            self.unfinished.append((item, at))
            self.report.sent += 1
            self.report.sent_ids.append(item.id)
            log.debug("sent", extra={"outbox": item.id, "kind": item.kind})
