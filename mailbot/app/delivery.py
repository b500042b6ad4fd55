"""Delivering queued mail — to citizens at most once, to services at least once — with
retries for temporary failures.

Each mail is committed as 'sending' before it leaves (on SQLite with ``synchronous=FULL``:
on disk, even through a power failure) and as 'sent' once it left, in the same commit as
the next claim (or the write after it, for a mail whose reply came after that claim: at
most ``claim_group`` + 3 mails to citizens 'sending', ``Outbox.__init__``; + 16 with the SMTP
client in its own process, which is handed mails that far ahead, mail/smtp_process). A crash in
between leaves it 'sending'. What happens to it then depends on whom it was for
(``OutboxKind.at_most_once``):

* a mail to a **citizen** (AR, transfer notice, reply) becomes 'uncertain' at the next
  start (``recover_interrupted``) or once its worker is known dead (``recover_orphans``),
  and is never resent: one lost AR, flagged for an agent, is better than two;
* an **internal** mail to a configured service or operator address (forward, digest,
  report, probe alert) goes back to the queue (``requeue_stalled``) and leaves again: a
  second copy in a service's mailbox is harmless, a forward lost is the citizen's mail
  the service never sees. Only once no live delivery can be sending it: its claim is
  older than ``CLAIM_STALE`` and its claimer is no live worker (a dead one, or a process
  that never registers: the console, a command); at a SQLite worker's start, whose
  sole-worker lock proves every other worker's process gone, a worker's claim at once. A
  delivery renews its claims on internal mail before they are ``RENEW_AFTER`` old
  (``Run._renew``, with the 'sent' not committed yet), and never sends one found queued
  again. A send cut after its "." (a dropped connection, a timeout, a shutdown awaiting
  the reply) is retried as after a temporary failure (``Settling.after_error``). So a
  second copy needs a process that died after the server took the mail, or such a cut,
  or one mail's exchange with the server (its MAIL to the reply to its ".") lasting
  longer than ``CLAIM_STALE - RENEW_AFTER`` (2.5 min; the SMTP timeouts are 30 s a step),
  or a process paused that long mid-send (a frozen VM), or a database stalled that long
  under a delivery, or hosts' clocks that far apart; a 'sent' that finds its mail queued
  again meanwhile is a WARNING (``Run._recorded``). A worker's start never takes this
  process's own claims (``Outbox.holder``) for a crash's: its console may be delivering.

Claims come in groups (``outbox.claim_group``, 8) counted in mails to citizens: the
internal mails between them ride in the same commit (up to ``INTERNAL_GROUP`` times as
many), so a transferred mail's AR and forward cost one claim between them.

What a sent mail means elsewhere (its message's AR
status, its event, the purge of its bytes) is written once per delivery batch
(``finish_sent``); a crash before that leaves it 'sent' with its bytes, and the next
delivery writes it first (``Transaction.unfinished_sent``).

What an outbox status means beyond the outbox is decided by the delivery: an AR's status is its
message's AR status (the indicators count ARs sent), and an agent's reply accepted by the
server is the reply to the citizen. The use cases only queue; when to deliver is the
faces' decision (``deliver_due`` at once from the CLI, or the worker's delivery thread).

A mail a delivery took may be taken by another meanwhile (the same worker's next delivery,
a console, a worker that thinks it dead): only one claim ('pending' to 'sending') succeeds,
and every later write of a delivery is conditional on what it holds — 'sending' under its
own claim after a send attempt, 'pending' and taken by it before (``Settling._settle``). One
that failed to connect never writes over a mail the other sent: a sent AR is never put
back in the queue, to leave a second time (and empty, its bytes purged).

A temporary refusal (4xx) defers a mail with an exponential backoff (capped at
``retry_max_seconds``, an hour) for as long as it has been queued less than
``outbox.max_queue_hours`` (5 days, Postfix's ``maximal_queue_lifetime``): a relay down for
a night or a weekend loses no AR. Past it, the mail fails, keeping its bytes until the
retention purge, so that an operator can queue it again once the cause is mended
(``app/requeue``); `mailbot status` has said so for days by then (the oldest pending mail's
age, the deferred sends). A server that cannot be reached at all defers every mail without
end: nothing is wrong with the mails, and they leave once it is back. A permanent refusal
(5xx) fails a mail at once, its bytes deleted: sending it again would be refused again.

The parts are in ``mailbot.app``: ``delivery_run`` (``Run``: one delivery's claims in groups
and its 'sent'), ``settling`` (``Settling``, the ``Outbox``'s writes after a send attempt:
deferred, failed, uncertain, given back; the ``DeliveryReport``), ``outbox_bookkeeping``
(``mirror``, ``set_status``, ``finish_sent``: what a status means beyond the outbox),
``delivery_recovery`` (``recover_interrupted``, ``recover_orphans``, ``recover_own``,
``requeue_stalled``; ``CLAIM_STALE``) and ``delivery_loop`` (``DeliveryLoop``, the delivery
thread). This module is their face, with ``Outbox``: what may be sent, and ``deliver_due``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from datetime import datetime

from mailbot.app.delivery_recovery import (
    CLAIM_STALE,
    recover_interrupted,
    recover_orphans,
    recover_own,
    requeue_stalled,
)
from mailbot.app.delivery_run import Run
from mailbot.app.outbox_bookkeeping import finish_sent, mirror, set_status
from mailbot.app.settling import DeliveryReport, Settling, retry_delay, told_of
from mailbot.config import OutboxConfig
from mailbot.core.clock import Clock, utcnow
from mailbot.errors import DeliveryError, ForbiddenRecipientError
from mailbot.mail.smtp import Envelope, Transport
from mailbot.store import OutboxItem, Store, Transaction

__all__ = [
    "CLAIM_STALE",
    "DeliveryReport",
    "Outbox",
    "finish_sent",
    "mirror",
    "recover_interrupted",
    "recover_orphans",
    "requeue_stalled",
    "retry_delay",
    "set_status",
    "told_of",
]

log = logging.getLogger(__name__)
# Internal mails claimed in one group: up to this many times ``outbox.claim_group`` (a run
# of digests alone is claimed in bounded groups too).
INTERNAL_GROUP = 4


class Outbox(Settling):
    """The queue's delivery: what may be sent (``unsendable``, ``is_allowed``), and
    ``deliver_due``, one ``Run`` (``app/delivery_run``) at a time. Its writes after a send
    attempt are its ``Settling`` part's (``app/settling``), over ``clock``, ``holder`` and
    ``config`` set here; ``Run`` calls the public ones (``fail``, ``after_error``,
    ``release``), and ``_send`` the private ``Settling._retry_later`` (a mail left unsent
    when the transport could not connect)."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        config: OutboxConfig,
        allowed: set[str],
        holder: str | None = None,
        claim_group: int | None = None,
        max_bytes: int | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        # The time of its decisions: when a retry is due, how long a mail has waited, when
        # it failed (tests set it: a mail deferred for days without waiting days).
        self.clock = clock
        # Bytes of mail one delivery takes at most (polling.max_message_bytes; one mail at
        # least): they are in memory until it ends, and a forward carries the original.
        self.max_bytes = max_bytes
        # Mails to citizens claimed ('sending') in one commit before the first of them
        # leaves (``outbox.claim_group``, 8 by default), the internal mails between them
        # riding along (up to ``internal_group``). A crash leaves at most this many mails to
        # citizens 'sending', plus those of the group before still in flight when this
        # group's claim committed (their 'sent' commits with the next write): with
        # PIPELINING the mail whose "." reply is unread as the next one's commands leave, on
        # each connection, and the other connection's mail under way — 1 on one connection,
        # up to 3 on a batch of ``SHARED_FROM`` (16) or more, which shares a second
        # (mail/smtp); none one command at a time. Recovered as uncertain, for an agent to
        # check; the internal ones are queued again. One commit (one fsync) per group
        # instead of one per mail; on SQLite one cut of an open intake part per group
        # (store/desk). Measured (bench/run.py, bench/kill.py): 8 and 32 gave the same
        # throughput on mail that stays; 8 bounds what a crash leaves to check. Transferred
        # mail (an AR and a forward each): half the groups of counting every mail
        # (bench/README, issue 14).
        self.claim_group = max(1, config.claim_group if claim_group is None else claim_group)
        self.internal_group = INTERNAL_GROUP * self.claim_group
        # Who claims the mail it sends: this process, unique even after a restart.
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.transport = transport
        self.config = config
        for warning in config.warnings():
            log.warning(warning)
        self.allowed = {address.lower() for address in allowed}
        # Set by the worker on SIGTERM: a send in progress is interrupted, not waited for.
        self.stop = threading.Event()
        # One delivery at a time (``deliver_due``): the worker's delivery thread, its jobs,
        # the probe and the console's tasks all call it on the one Outbox.
        self._delivering = threading.Lock()
        # A delivery raised mid-run (a database error): its claims may be left 'sending',
        # settled by the next one (``recover_own``). Nothing read while none did.
        self._left_claims = False
        # And the mails it saw the server accept, their 'sent' not committed: recorded sent
        # then, not uncertain; and those it claimed and never handed to the server: queued
        # again as they were (``recover_own``).
        self._left_sent: list[tuple[OutboxItem, datetime]] = []
        self._left_unsent: list[OutboxItem] = []

    def unsendable(self, item: OutboxItem) -> DeliveryError | None:
        """Why ``item`` must not leave, if it must not: a recipient mailbot may not write to,
        or no bytes at all. A queued mail always has its bytes until it is sent (then they
        are purged): an empty one is a fault somewhere, and an empty mail to a citizen is
        worse than none, so it fails, logged, for an agent to look at."""
        if not self.is_allowed(item):
            return ForbiddenRecipientError(item.recipient)
        if not item.raw:
            return DeliveryError(
                "nothing to send: the mail's bytes are missing (never sent empty)",
                permanent=True,
            )
        return None

    def is_allowed(self, item: OutboxItem) -> bool:
        """Only the original sender of the message, or a configured address, may be mailed."""
        recipient = item.recipient.lower()
        if recipient in self.allowed:
            return True
        return (item.message_sender or "").lower() == recipient

    def deliver_due(
        self, now: datetime | None = None, limit: int = 500, citizens: int | None = None
    ) -> DeliveryReport:
        """Attempt every mail that is due; returns early (leaving mail queued) on ``stop``.

        One delivery at a time on this Outbox: a second caller waits for the first to end,
        then attempts what is still due. Waiting, not returning at once, so that every
        caller (``poll --once``, a job that just queued its digest) returns only once what
        was due when it called has been attempted. Two at once would take the same mails
        (``take_due``: what this Outbox took is free to it again); the conditional writes
        keep that safe, the lock keeps it from happening in one process. At most ``limit``
        mails, of which at most ``citizens`` to citizens (``Transaction.take_due``)."""
        with self._delivering:
            report = DeliveryReport()
            if self.stop.is_set():
                return report
            if self._left_claims:
                uncertain = recover_own(
                    self.store, self.holder, self._left_sent, self._left_unsent, self.release
                )
                if uncertain:
                    log.error(
                        "sends a failed delivery left marked uncertain", extra={"outbox": uncertain}
                    )
                self._left_claims, self._left_sent, self._left_unsent = False, [], []
            with self.store.session() as session:
                due = session.write(lambda tx: self._take(tx, now or self.clock(), limit, citizens))
                report.taken = len(due)
                if due:
                    self._left_claims = True  # until the run ends without raising
                    run = Run(self, session, {item.id: item for item in due}, report)
                    try:
                        self._send(run)
                    except BaseException:
                        self._left_sent = list(run.unrecorded)
                        self._left_unsent = run.never_handed()
                        raise
                    self._left_claims = False
            return report

    def _take(
        self, tx: Transaction, now: datetime, limit: int, citizens: int | None
    ) -> list[OutboxItem]:
        """The due mail, taken; first the bookkeeping a crash left undone."""
        finish_sent(tx, tx.unfinished_sent())
        return tx.take_due(now, limit, self.holder, CLAIM_STALE, self.max_bytes, citizens)

    def _send(self, run: Run) -> None:
        envelopes = [
            Envelope(
                item.envelope_from,
                item.recipient,
                item.raw,
                name=str(item.id),
                at_most_once=item.kind.at_most_once,
            )
            for item in run.items.values()
        ]
        try:
            self.transport.send_batch(envelopes, run.before, run.after, self.stop)
        except DeliveryError as error:
            # No connection: the mails not handed to the transport yet never left. Each is
            # retried later (a backoff: the delivery thread does not hammer a server that is
            # down) only as far as this delivery still holds it: one it took but never
            # claimed may have been claimed, even sent, by another delivery meanwhile.
            for item in run.items.values():
                held_as = run.held_as(item.id)
                if item.id not in run.handled and held_as is not None:
                    run.handled.add(item.id)
                    run.record(item, self._retry_later(item, error, held_as))
        finally:
            run.flush()
