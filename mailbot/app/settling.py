"""What a send attempt leaves, written only while the delivery still holds the mail
(``Settling._settle``): deferred with a backoff, failed (refused, or queued too long),
uncertain, or given back; and the ``DeliveryReport`` that counts each outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from mailbot.app.outbox_bookkeeping import mirror
from mailbot.config import OutboxConfig
from mailbot.core.clock import Clock
from mailbot.core.statuses import EventKind, OutboxStatus
from mailbot.errors import DeliveryError
from mailbot.logs import safe_error
from mailbot.store import OutboxItem, Transaction

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    taken: int = 0  # due mails this delivery took to send
    sent: int = 0
    retried: int = 0
    failed: int = 0
    refused: int = 0
    sent_ids: list[int] = field(default_factory=list)


Tally = Callable[[DeliveryReport], None]  # counts an outcome in the report


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


class Settling:
    """The ``Outbox``'s writes after a send attempt, over what its ``__init__`` sets (the
    three attributes below, no other). ``_retry_later`` is called by ``Outbox._send`` too:
    part of the contract with the ``Outbox``, as ``fail``, ``after_error`` and ``release``
    are with ``Run``."""

    clock: Clock
    holder: str
    config: OutboxConfig

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

    def release(self, tx: Transaction, item: OutboxItem) -> None:
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

    def fail(
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

    def after_error(self, tx: Transaction, item: OutboxItem, error: DeliveryError) -> Tally:
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
            return self.fail(tx, item, error)
        waited = self.waited(item)
        if waited is not None and waited >= timedelta(hours=self.config.max_queue_hours):
            hours = waited.total_seconds() / 3600
            expired = DeliveryError(
                f"{error} (deferred for {hours:.0f} h, longer than outbox.max_queue_hours:"
                " given up; `mailbot outbox retry --failed` queues it again)",
                permanent=False,
                code=error.code,
            )
            return self.fail(tx, item, expired, keep_bytes=True)
        return self._retry(tx, item, error, attempts=item.attempts + 1)

    def waited(self, item: OutboxItem) -> timedelta | None:
        """How long ``item`` has been in the queue (since an operator's requeue, if any)."""
        return None if item.queued_at is None else self.clock() - item.queued_at
