"""Delivering queued mail — to citizens at most once, to services at least once — with
retries for temporary failures.

Each mail is committed as 'sending' before it leaves (on SQLite with ``synchronous=FULL``:
on disk, even through a power failure) and as 'sent' once it left, in the same commit as
the next claim (or the write after it, for a mail whose reply came after that claim: at
most ``claim_group`` + 3 mails to citizens 'sending', ``Outbox.__init__``). A crash in
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
  (``_Run._renew``, with the 'sent' not committed yet), and never sends one found queued
  again. A send cut after its "." (a dropped connection, a timeout, a shutdown awaiting
  the reply) is retried as after a temporary failure (``Outbox._after_error``). So a
  second copy needs a process that died after the server took the mail, or such a cut,
  or one mail's exchange with the server (its MAIL to the reply to its ".") lasting
  longer than ``CLAIM_STALE - RENEW_AFTER`` (2.5 min; the SMTP timeouts are 30 s a step),
  or a process paused that long mid-send (a frozen VM), or a database stalled that long
  under a delivery, or hosts' clocks that far apart; a 'sent' that finds its mail queued
  again meanwhile is a WARNING (``_Run._recorded``). A worker's start never takes this
  process's own claims (``Outbox.holder``) for a crash's: its console may be delivering.

Claims come in groups (``outbox.claim_group``, 8) counted in mails to citizens: the
internal mails between them ride in the same commit (up to ``INTERNAL_GROUP`` times as
many), so a transferred mail's AR and forward cost one claim between them.

What a sent mail means elsewhere (its message's AR
status, its event, the purge of its bytes) is written once per delivery batch
(``finish_sent``); a crash before that leaves it 'sent' with its bytes, and the next
delivery writes it first (``Transaction.unfinished_sent``).

What an outbox status means beyond the outbox is decided here: an AR's status is its
message's AR status (the indicators count ARs sent), and an agent's reply accepted by the
server is the reply to the citizen. The use cases only queue; when to deliver is the
faces' decision (``deliver_due`` at once from the CLI, or the worker's delivery thread).

A mail a delivery took may be taken by another meanwhile (the same worker's next delivery,
a console, a worker that thinks it dead): only one claim ('pending' to 'sending') succeeds,
and every later write of a delivery is conditional on what it holds — 'sending' under its
own claim after a send attempt, 'pending' and taken by it before (``Outbox._settle``). One
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
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbot.config import OutboxConfig
from mailbot.core.clock import Clock, utcnow
from mailbot.core.statuses import ArStatus, EventKind, OutboxKind, OutboxStatus
from mailbot.errors import DeliveryError, ForbiddenRecipientError
from mailbot.logs import RepeatedFailures, safe_error
from mailbot.mail.smtp import Envelope, Transport
from mailbot.store import OutboxItem, Session, Store, Transaction
from mailbot.store.errors import is_lasting, transient_reason

log = logging.getLogger(__name__)
# Mail a live worker took but has not sent after this long is free for another to take
# (the send itself stays at most once: 'pending' to 'sending' is one conditional update);
# internal mail a dead or unregistered process left 'sending' this long goes back to the
# queue (``requeue_stalled``).
CLAIM_STALE = timedelta(minutes=5)
# A delivery renews its claims on internal mail at its next mail once they are this old:
# a keeper queues such mail again only past CLAIM_STALE (module docstring).
RENEW_AFTER = CLAIM_STALE / 2
# Internal mails claimed in one group: up to this many times ``outbox.claim_group`` (a run
# of digests alone is claimed in bounded groups too).
INTERNAL_GROUP = 4


@dataclass
class DeliveryReport:
    taken: int = 0  # due mails this delivery took to send
    sent: int = 0
    retried: int = 0
    failed: int = 0
    refused: int = 0
    sent_ids: list[int] = field(default_factory=list)


Tally = Callable[[DeliveryReport], None]  # counts an outcome in the report
Left = list[tuple[OutboxItem, datetime]]  # mails the server accepted, and when
# The 'sent' a transaction wrote: the mails it covered, and those of them it found queued
# again meanwhile (no row written: another delivery has them, they may arrive twice).
Written = tuple[Left, set[int]]


def _failed(report: DeliveryReport) -> None:
    report.failed += 1


def _retried(report: DeliveryReport) -> None:
    report.retried += 1


def _refused(report: DeliveryReport) -> None:
    report.refused += 1


def _untouched(report: DeliveryReport) -> None:
    """Nothing written: another delivery holds the mail now, and counts it."""


def retry_delay(attempts: int, config: OutboxConfig) -> timedelta:
    """Exponential backoff: base, 2×base, 4×base… capped."""
    seconds = min(config.retry_base_seconds * (2 ** max(attempts - 1, 0)), config.retry_max_seconds)
    return timedelta(seconds=seconds)


def told_of(attempts: int) -> bool:
    """Whether a deferral at this attempt gets an event and a WARNING: the 1st, 2nd, 4th,
    8th… (and a retry after a shutdown, attempt 0). A relay down for the 5 days a mail may
    wait defers it ~125 times (hourly once the back-off is capped): each in the message's
    thread, and in the journal for each mail queued, buried what an agent or IT must see;
    eight say the same, the attempt count and the error still on the outbox row."""
    return attempts & (attempts - 1) == 0


def set_status(tx: Transaction, item: OutboxItem, status: OutboxStatus, **values: object) -> None:
    """Change a queued mail's status, and its message's (``mirror``)."""
    tx.set_outbox_status(item.id, status, **values)
    mirror(tx, item, status)


def mirror(tx: Transaction, item: OutboxItem, status: OutboxStatus) -> None:
    """An AR's status is its message's AR status; an agent's transfer notice's is its
    message's notice status: the indicators count the ARs sent, and the transfers whose
    announcement to the citizen was sent (the AR said nothing of a later transfer).

    A message transferred twice by agents has two notices; only the latest transfer's is
    mirrored. « Transferts annoncés à l'usager » means the citizen was told which service
    handles the request now: a notice of an earlier transfer named a service that no longer
    does, so, sent, it does not announce the transfer that holds, and refused, it does not
    take back the announcement the latest notice made. The message records which notice is
    the latest (``Transaction.set_latest_notice``, with the transfer), so the status does
    not depend on the order deliveries settle the two in (a deferred first notice sent after
    the second was refused wrote "sent" last, and the reverse)."""
    if item.message_pk is None:
        return
    if item.kind == OutboxKind.AR:
        tx.set_ar_status(item.message_pk, ArStatus(status.value))
    elif item.kind == OutboxKind.NOTICE:
        tx.set_notice_status(item.message_pk, item.id, status)


def finish_sent(tx: Transaction, left: Sequence[tuple[OutboxItem, datetime]]) -> None:
    """The bookkeeping of mails the server accepted (and already committed 'sent'), for a
    whole delivery batch in a few statements: the bytes purged (the rendered mail holds the
    citizen's subject: kept only while needed), an AR's status mirrored on its message, the
    events. Only for the items this call purged: never twice for one mail."""
    mine = tx.finish_sent([item.id for item, _ in left])
    done = [(item, at) for item, at in left if item.id in mine]
    tx.set_ar_statuses(_messages_of(done, OutboxKind.AR), ArStatus.SENT)
    notices = [(i.message_pk, i.id) for i, _ in done if i.kind == OutboxKind.NOTICE]
    tx.set_notice_statuses([(pk, n) for pk, n in notices if pk is not None], OutboxStatus.SENT)
    events: list[tuple[int | None, EventKind, str, datetime]] = []
    for item, at in done:
        if item.kind == OutboxKind.REPLY and item.message_pk is not None:
            # An agent's standard reply: signed by construction (rendering refuses otherwise).
            tx.record_reply(item.message_pk, at, True, item.email_message_id, EventKind.REPLY_SENT)
        else:
            events.append((item.message_pk, EventKind.sent(item.kind), item.email_message_id, at))
    tx.add_event_rows(events)


def _messages_of(done: Sequence[tuple[OutboxItem, datetime]], kind: OutboxKind) -> list[int]:
    return [i.message_pk for i, _ in done if i.kind == kind and i.message_pk is not None]


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


def recover_own(store: Store, holder: str) -> list[int]:
    """The claims a delivery of this process (``holder``) left 'sending' when it raised
    mid-run (the database lost under it: its 'sent' and releases unwritten). Nobody else
    settles them — their claimer is a live worker, and they are not pending — so this
    process's next delivery does, as after a crash: a mail to a citizen uncertain (it may
    have left), flagged; internal mail queued again. No delivery of ``holder`` is running
    (one at a time per Outbox). The uncertain ones' ids."""
    with store.transaction() as tx:
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


class Outbox:
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

    def deliver_due(self, now: datetime | None = None, limit: int = 500) -> DeliveryReport:
        """Attempt every mail that is due; returns early (leaving mail queued) on ``stop``.

        One delivery at a time on this Outbox: a second caller waits for the first to end,
        then attempts what is still due. Waiting, not returning at once, so that every
        caller (``poll --once``, a job that just queued its digest) returns only once what
        was due when it called has been attempted. Two at once would take the same mails
        (``take_due``: what this Outbox took is free to it again); the conditional writes
        keep that safe, the lock keeps it from happening in one process."""
        with self._delivering:
            report = DeliveryReport()
            if self.stop.is_set():
                return report
            if self._left_claims:
                uncertain = recover_own(self.store, self.holder)
                if uncertain:
                    log.error(
                        "sends a failed delivery left marked uncertain", extra={"outbox": uncertain}
                    )
                self._left_claims = False
            with self.store.session() as session:
                due = session.write(lambda tx: self._take(tx, now or self.clock(), limit))
                report.taken = len(due)
                if due:
                    self._left_claims = True  # until the run ends without raising
                    self._send(_Run(self, session, {item.id: item for item in due}, report))
                    self._left_claims = False
            return report

    def _take(self, tx: Transaction, now: datetime, limit: int) -> list[OutboxItem]:
        """The due mail, taken; first the bookkeeping a crash left undone."""
        finish_sent(tx, tx.unfinished_sent())
        return tx.take_due(now, limit, self.holder, CLAIM_STALE, self.max_bytes)

    def _send(self, run: _Run) -> None:
        envelopes = [
            Envelope(item.envelope_from, item.recipient, item.raw, name=str(item.id))
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

    def _settle(
        self,
        tx: Transaction,
        item: OutboxItem,
        status: OutboxStatus,
        held_as: OutboxStatus = OutboxStatus.SENDING,
        keep_bytes: bool = False,
        **values: object,
    ) -> bool:
        """``set_status`` only while this delivery holds ``item`` as ``held_as`` ('sending':
        claimed by it; 'pending': taken by it, not claimed); False, nothing written, once
        another delivery has it. Writing anyway could put back in the queue a mail the
        other one sent, and it would leave twice."""
        if not tx.settle_outbox(item.id, self.holder, held_as, status, keep_bytes, **values):
            log.warning(
                "outbox item held by another delivery: left as it is",
                extra={"outbox": item.id, "status": status},
            )
            return False
        mirror(tx, item, status)
        return True

    def _uncertain(self, tx: Transaction, item: OutboxItem, error: DeliveryError) -> Tally:
        if not self._settle(tx, item, OutboxStatus.UNCERTAIN, last_error=str(error)):
            return _untouched
        tx.add_event(item.message_pk, EventKind.SEND_UNCERTAIN, str(error))
        error_text = safe_error(error)  # a server's reply may quote the citizen's address
        log.error("send uncertain, not retried", extra={"outbox": item.id, "error": error_text})
        return _failed

    def _may_have_left(self, item: OutboxItem, error: DeliveryError) -> DeliveryError:
        """An internal mail whose send was cut after its ".": said (a WARNING naming it),
        and the error it is retried for says it may arrive twice (its event, its row)."""
        log.warning(
            "internal mail cut after its end of data: sent again, it may arrive twice",
            extra={"outbox": item.id, "kind": item.kind, "error": safe_error(error)},
        )
        return DeliveryError(
            f"{error} (it may have left: sent again, it may arrive twice)",
            permanent=False,
            code=error.code,
        )

    def _retry(
        self,
        tx: Transaction,
        item: OutboxItem,
        error: DeliveryError,
        attempts: int,
        delay: timedelta | None = None,
        held_as: OutboxStatus = OutboxStatus.SENDING,
    ) -> Tally:
        next_at = self.clock() + (retry_delay(attempts, self.config) if delay is None else delay)
        if not self._settle(
            tx,
            item,
            OutboxStatus.PENDING,
            held_as,
            attempts=attempts,
            next_attempt_at=next_at,
            last_error=str(error),
            claimed_by=None,  # any worker may retry it
        ):
            return _untouched
        extra = {"outbox": item.id, "attempts": attempts, "error": safe_error(error)}
        if told_of(attempts):
            tx.add_event(item.message_pk, EventKind.SEND_DEFERRED, str(error))
            log.warning("send deferred", extra=extra)
        else:
            log.debug("send deferred", extra=extra)
        return _retried

    def _retry_later(
        self, item: OutboxItem, error: DeliveryError, held_as: OutboxStatus
    ) -> Callable[[Transaction], Tally]:
        def write(tx: Transaction) -> Tally:
            return self._retry(tx, item, error, item.attempts + 1, held_as=held_as)

        return write

    def _release(self, tx: Transaction, item: OutboxItem) -> None:
        """A mail claimed with its group that never reached the transport (a shutdown):
        back to pending as it was, due at once, for any worker."""
        self._settle(
            tx,
            item,
            OutboxStatus.PENDING,
            attempts=item.attempts,
            next_attempt_at=self.clock(),
            claimed_by=None,
        )

    def _fail(
        self,
        tx: Transaction,
        item: OutboxItem,
        error: DeliveryError,
        refused: bool = False,
        held_as: OutboxStatus = OutboxStatus.SENDING,
        keep_bytes: bool = False,
    ) -> Tally:
        """Failed for good: refused (its bytes deleted), or, ``keep_bytes``, deferred for
        longer than its time in the queue (kept for an operator's requeue)."""
        values = {"last_error": str(error), "failed_at": self.clock()}
        if not self._settle(tx, item, OutboxStatus.FAILED, held_as, keep_bytes, **values):
            return _untouched
        tx.add_event(item.message_pk, EventKind.SEND_FAILED, str(error))
        log.error("send failed", extra={"outbox": item.id, "error": safe_error(error)})
        return _refused if refused else _failed

    def _after_error(self, tx: Transaction, item: OutboxItem, error: DeliveryError) -> Tally:
        """What a failed send leaves: uncertain, retried at once or later, or failed. A send
        cut after its "." (a dropped connection, a timeout, a shutdown awaiting the reply)
        may have left: a mail to a citizen is uncertain, never sent again; an internal one
        is retried as after a temporary failure (its bytes kept), as a crash's would be
        queued again — a shutdown must not lose a forward a kill -9 would have resent."""
        if error.uncertain and item.kind.at_most_once:
            return self._uncertain(tx, item, error)
        if error.uncertain:
            error = self._may_have_left(item, error)
        if error.interrupted:  # a shutdown before the end of DATA: as if never tried
            return self._retry(tx, item, error, attempts=item.attempts, delay=timedelta(0))
        if error.permanent:
            return self._fail(tx, item, error)
        waited = self.waited(item)
        if waited is not None and waited >= timedelta(hours=self.config.max_queue_hours):
            hours = waited.total_seconds() / 3600
            expired = DeliveryError(
                f"{error} (deferred for {hours:.0f} h, longer than outbox.max_queue_hours:"
                " given up; `mailbot outbox retry --failed` queues it again)",
                permanent=False,
                code=error.code,
            )
            return self._fail(tx, item, expired, keep_bytes=True)
        return self._retry(tx, item, error, attempts=item.attempts + 1)

    def waited(self, item: OutboxItem) -> timedelta | None:
        """How long ``item`` has been in the queue (since an operator's requeue, if any)."""
        return None if item.queued_at is None else self.clock() - item.queued_at


class _Run:
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
                    tallies.append(self.outbox._fail(tx, item, error, refused, held_as=pending))
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
            self.record(item, lambda tx: self.outbox._after_error(tx, item, error))

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
        idle = [self.items[i] for i, ok in self.claimed.items() if ok and i not in self.handled]
        if self.unrecorded or self.unfinished or idle:
            sent = self.session.write(lambda tx: self._finish(tx, idle))
            self._recorded(sent)
            self.unfinished = []

    def _finish(self, tx: Transaction, idle: Sequence[OutboxItem]) -> Written:
        sent = self._record_sent(tx)
        for item in idle:
            self.outbox._release(tx, item)
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


class DeliveryLoop:
    """Delivers the outbox on a thread of its own, so that intake never waits on SMTP
    (``run`` and ``poll --once``). Its claims come a group at a time (``Outbox.claim_group``):
    on SQLite one that meets an open intake part rides on it (store/desk), which cuts the part
    once per group, not once per mail as when each mail was claimed alone.

    The pollers ``wake()`` it when they queue mail; otherwise it looks for due retries every
    ``interval`` seconds. It ends when the outbox's ``stop`` is set, interrupting the send in
    flight (see Transport): a hung SMTP server cannot hold up a shutdown.

    Each delivery takes at most ``limit`` mails (the worker passes its FETCH batch size):
    their bytes are in memory until the delivery ends (an AR is ~13 KB: 500 of them, 6.5 MB),
    so when intake runs ahead of sending, memory stays bounded by a batch (issue 14).
    """

    def __init__(self, outbox: Outbox, interval: float, limit: int = 500) -> None:
        self.outbox = outbox
        self.interval = interval
        self.limit = limit
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        self._draining = False  # finish(): deliver until nothing is due, then end
        self._failure: Exception | None = None

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def finish(self) -> None:
        """Deliver everything due, then end the thread: a drain that returns only when the
        mail queued so far has been sent. Raises what the last delivery raised."""
        self._draining = True
        self.join()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        stop = self.outbox.stop
        failures = RepeatedFailures(
            log,
            "delivery failed, trying again later",
            "delivery works again",
            transient_reason,
            lasting=is_lasting,
        )
        while not stop.is_set():
            self._wake.clear()
            draining = self._draining
            try:
                taken = self.outbox.deliver_due(limit=self.limit).taken
            except Exception as exc:  # a database hiccup must not end delivery for good
                if draining:
                    self._failure = exc
                    return
                failures.failed(exc)
                taken = 0
            else:
                failures.succeeded()
            if draining and not taken:
                return  # nothing was due after the last wake: all sent
            if not stop.is_set() and not taken:
                self._wake.wait(self.interval)
