"""Reading one mailbox folder incrementally and feeding the pipeline.

The source is anything with the ImapMailbox shape (IMAP, or a Maildir for the demo).
Connection trouble is met with reconnection and exponential backoff. Mail is handed to the
processor one FETCH batch at a time (it records a batch in one transaction); the stop
event is checked between batches, so a shutdown finishes the current batch and no more.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mailbot.config import PollingConfig
from mailbot.core.clock import utcnow
from mailbot.core.incoming import Fetched, IncomingMail, Outcome
from mailbot.errors import FirstPollError, LeaseLostError, MailboxError, TransientStoreError
from mailbot.logs import RepeatedFailures
from mailbot.store.errors import is_lasting

log = logging.getLogger(__name__)
DATABASE_FAILED = "database busy or unreachable, polling again later"


class Source(Protocol):
    def connect(self) -> None: ...
    def close(self) -> None: ...  # called when not connected too (see MailboxPoller.disconnect)
    def select(self, folder: str) -> int: ...
    def uids_after(self, last_uid: int) -> list[int]: ...
    def fetch(self, uids: Sequence[int], batch_size: int) -> Iterator[Fetched]: ...
    def supports_idle(self) -> bool: ...
    def wait_for_changes(self, timeout: float, stop: threading.Event | None = None) -> bool: ...


class Processor(Protocol):
    """What reads a folder's mail: the inbox pipeline, or the Sent-folder reply detector."""

    def start_folder(
        self, mailbox: str, folder: str, uidvalidity: int, existing: Callable[[], int] = ...
    ) -> int: ...
    def process_batch(
        self, mailbox: str, folder: str, uidvalidity: int, mails: Sequence[IncomingMail]
    ) -> list[Outcome]: ...
    def folder_read(
        self, mailbox: str, folder: str, uidvalidity: int, searched_at: datetime
    ) -> None: ...


def incoming(source: Source, uids: Sequence[int], batch_size: int) -> Iterator[IncomingMail]:
    """The mail of ``uids``, fetched ``batch_size`` at a time, as the processors take it."""
    for fetched in source.fetch(uids, batch_size):
        yield IncomingMail.of(fetched)


def batches(
    source: Source, uids: Sequence[int], batch_size: int, max_bytes: int
) -> Iterator[list[IncomingMail]]:
    """The mail of ``uids`` in lists of ``batch_size``: what one FETCH brings. A list
    also ends before it would hold more than ``max_bytes`` of mail (one mail at least;
    ``polling.max_message_bytes``): a batch is in memory whole while it is recorded, and
    200 scans of 20 MB each would be 4 GB."""
    batch: list[IncomingMail] = []
    held = 0
    for mail in incoming(source, uids, batch_size):
        if batch and held + len(mail.raw) > max_bytes:
            yield batch
            batch, held = [], 0
        batch.append(mail)
        held += len(mail.raw)
        if len(batch) >= batch_size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


class Backoff:
    """1 s, 2 s, 4 s… up to a ceiling; reset after a success."""

    def __init__(self, ceiling: float, start: float = 1.0) -> None:
        self.ceiling = ceiling
        self.start = start
        self.current = start

    def next_delay(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.ceiling)
        return delay

    def reset(self) -> None:
        self.current = self.start


def _always() -> bool:
    return True


@dataclass(frozen=True)
class PollRecord:
    """One poll of a folder, as supervision records it (``Worker`` passes it on)."""

    mailbox: str
    folder: str
    started_at: datetime
    seconds: float
    error: str | None  # None: a success
    # The database failed the poll (TransientStoreError), not the mail server: not one of
    # the folder's IMAP errors in a row, and the IMAP connection is kept.
    # How many mails took each decision (the metrics' counts): counts, not the outcomes,
    # so that `run` keeps nothing per mail however large the backlog.
    decisions: Counter[str] = field(default_factory=Counter)
    database: bool = False


def _ignore(_record: PollRecord) -> None:
    return None


def _database_reason(exc: BaseException) -> str | None:
    """A transient database error's own message (mailbox, folder, what, why): the same
    failure again is logged at DEBUG, a mail's next attempt (another message) at WARNING."""
    return str(exc) if isinstance(exc, TransientStoreError) else None


class MailboxPoller:
    def __init__(
        self,
        name: str,
        folder: str,
        source: Source,
        pipeline: Processor,
        polling: PollingConfig,
        deliver: Callable[[], object],
        stop: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.folder = folder
        self.source = source
        self.pipeline = pipeline
        self.polling = polling
        self.stop = stop or threading.Event()
        # What to do once mail is queued: send it now, or wake the delivery thread (run).
        self.deliver = deliver
        self.connected = False
        self.backoff = Backoff(polling.max_backoff_seconds)
        self.refused: FirstPollError | None = None
        # Whether this worker holds the folder's lease (always, for a worker alone).
        self.may_work: Callable[[], bool] = _always
        # Told of every poll's end (supervision: heartbeats, metrics), never fails it.
        self.observer: Callable[[PollRecord], None] = _ignore
        self.reconnects = 0  # connections made after the first (a dropped server)
        # When a failed poll's backoff ends (``clock``'s time): a cycle starting before
        # then waits for it, instead of trying at once (``cycle``). None: no failure.
        self.retry_at: float | None = None
        # The clock and the wait of ``cycle``: time.monotonic and the stop's wait; a test
        # drives cycles with a clock of its own that ``pause`` moves on, without sleeping.
        self.clock: Callable[[], float] = time.monotonic
        self.pause: Callable[[float], bool] = self.stop.wait
        # A database outage: logged once (WARNING), its repeats at DEBUG, its end at INFO.
        self.database_failures = RepeatedFailures(
            log,
            DATABASE_FAILED,
            "database works again",
            _database_reason,
            extra={"mailbox": name, "folder": folder},
            lasting=is_lasting,  # a read-only SQLite file: an ERROR each cycle
            every_time=True,
        )
        self.unrecorded = RepeatedFailures(
            log,
            "poll not recorded",
            "polls recorded again",
            _database_reason,
            extra={"mailbox": name, "folder": folder},
            lasting=is_lasting,
        )
        self._connections = 0
        # Whether poll_once returns each mail's Outcome (a face that prints them). Off, a
        # poll keeps counts only (``PollRecord.decisions``): a backlog of 20,000 mails then
        # takes the memory of one batch, not ~0.5 KB more per mail (issue 14, peak RSS).
        self.keep = True

    def _ensure_connected(self) -> None:
        if not self.connected:
            self.source.connect()
            self.connected = True
            self._connections += 1
            self.reconnects = self._connections - 1

    def disconnect(self) -> None:
        """Close the source, connected or not: a connection it was still opening early
        (``ImapMailbox.connect_early``) is closed too, when this worker does not poll."""
        self.connected = False
        self.source.close()

    def poll_once(self) -> list[Outcome]:
        """Process everything new in the folder, then deliver (or have delivered) what is
        queued; the observer hears how it went."""
        started, clock = utcnow(), time.monotonic()
        decisions: Counter[str] = Counter()
        try:
            outcomes = self._poll_once(decisions)
        except (FirstPollError, LeaseLostError):
            raise  # neither is the folder's failure
        except Exception as exc:
            said = isinstance(exc, (MailboxError, TransientStoreError))
            error = str(exc) if said else type(exc).__name__
            database = isinstance(exc, TransientStoreError)
            record = PollRecord(self.name, self.folder, started, 0.0, error, decisions, database)
            self._observe(record)
            raise
        seconds = time.monotonic() - clock
        self._observe(PollRecord(self.name, self.folder, started, seconds, None, decisions))
        return outcomes

    def _observe(self, record: PollRecord) -> None:
        """Supervision must never stop the reading of mail: its failure is logged. The
        database's (TransientStoreError: read-only, unreachable) once, with its reason,
        then at DEBUG, for it fails every poll of every folder until it ends (a traceback
        each time filled the journal); anything else as before, with its traceback."""
        try:
            self.observer(record)
        except TransientStoreError as exc:
            self.unrecorded.failed(exc)
        except Exception:
            log.warning("poll not recorded", exc_info=True, extra={"mailbox": self.name})
        else:
            self.unrecorded.succeeded()

    def _poll_once(self, decisions: Counter[str]) -> list[Outcome]:
        """Read what is new in the folder, a batch at a time. A poll that read all its
        search found tells the processor so (``folder_read``): the mail that arrived before
        it began is all recorded, which a later UIDVALIDITY change relies on."""
        self._ensure_connected()
        searched_at = utcnow()  # before SELECT: whatever arrived earlier, SEARCH finds
        uidvalidity = self.source.select(self.folder)
        last_uid = self.pipeline.start_folder(
            self.name, self.folder, uidvalidity, lambda: len(self.source.uids_after(0))
        )
        outcomes: list[Outcome] = []
        uids = self.source.uids_after(last_uid)
        started = time.monotonic()
        limit = self.polling.max_message_bytes
        for mails in batches(self.source, uids, self.polling.batch_size, limit):
            batch = self.pipeline.process_batch(self.name, self.folder, uidvalidity, mails)
            decisions.update(self._summary(batch, started))
            if self.keep:
                outcomes += batch
            self.deliver()  # the batch committed: its ARs may leave
            started = time.monotonic()
            if self.stop.is_set():
                break
        else:
            if uids:  # a poll that found nothing leaves the moment earlier: still true
                self.pipeline.folder_read(self.name, self.folder, uidvalidity, searched_at)
        self.deliver()
        return outcomes

    def _summary(self, batch: Sequence[Outcome], started: float) -> Counter[str]:
        """One INFO line per batch (the per-mail line is DEBUG: at thousands of mails a
        minute, a line each cost a noticeable share of the work and flooded the journal);
        returns the batch's count of each decision."""
        decisions = Counter(str(outcome.decision) for outcome in batch)
        log.info(
            "batch",
            extra={
                "mailbox": self.name,
                "folder": self.folder,
                "mails": len(batch),
                **{str(d).replace("-", "_"): n for d, n in sorted(decisions.items())},
                "uids": f"{batch[0].uid}-{batch[-1].uid}",
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return decisions

    def cycle(self, budget: float) -> list[Outcome]:
        """Poll, then wait for new mail (IDLE, or sleep) for up to ``budget`` seconds.

        A dropped connection is retried within the cycle after a growing backoff delay,
        so a server restart costs seconds, not a polling interval. The delay holds across
        cycles too (``retry_at``): a cycle that starts while it runs waits for its end.
        Before, each cycle polled at once whatever the delay logged (``retry_in``): a
        server down was tried every interval however long the backoff had grown.
        """
        outcomes: list[Outcome] = []
        deadline = self.clock() + budget
        due = True
        while not self.stop.is_set() and self.clock() < deadline:
            remaining = deadline - self.clock()
            if self._held_back(remaining):
                due = True
                continue
            try:
                if due:
                    outcomes += self.poll_once()
                    self.backoff.reset()
                    self.retry_at = None
                    self.database_failures.succeeded()
                if not (self.polling.use_idle and self.source.supports_idle()):
                    self.pause(remaining)
                    break
                due = self.source.wait_for_changes(min(remaining, 5.0), self.stop)
            except FirstPollError as exc:
                log.error("first poll refused", extra={"mailbox": self.name, "error": str(exc)})
                self.refused = exc
                self.stop.set()  # the whole worker stops: someone must decide
                break
            except LeaseLostError:
                log.warning("folder taken over by another worker", extra={"mailbox": self.name})
                self.disconnect_quietly()
                self.pause(min(1.0, remaining))
                due = True
            except MailboxError as exc:
                self._later(remaining, "mailbox unreachable, reconnecting later", exc)
                due = True
            except TransientStoreError as exc:  # rolled back: the same mail, read again
                # The database's failure, not the server's: the connection is kept (one
                # dropped meanwhile is found at the next poll: MailboxError, reconnected).
                self.database_failures.failed(exc)
                self.pause(min(self._retry_later(), remaining))
                due = True
            except Exception:  # not a bad mail (those are quarantined): the store, a bug
                delay = self._retry_later()
                log.error(
                    "poll cycle failed, retrying later",
                    exc_info=True,
                    extra={"job": f"mailbox:{self.name}", "mailbox": self.name, "retry_in": delay},
                )
                self.disconnect_quietly()
                self.pause(min(delay, remaining))
                due = True
        return outcomes

    def _held_back(self, remaining: float) -> bool:
        """Whether this turn of the cycle is spent waiting, not polling: for another
        worker's lease of the folder to run out, or for a failed poll's delay to end."""
        if not self.may_work():
            self.disconnect_quietly()
            self.pause(min(1.0, remaining))
            return True
        backing_off = self._backing_off()
        if backing_off > 0:
            self.pause(min(backing_off, remaining))
            return True
        return False

    def _retry_later(self) -> float:
        """The backoff's next delay, from now: no poll before it ends, in this cycle or
        in the next ones (``retry_at``)."""
        delay = self.backoff.next_delay()
        self.retry_at = self.clock() + delay
        return delay

    def _backing_off(self) -> float:
        """Seconds left of a failed poll's delay (0: a poll may run)."""
        return 0.0 if self.retry_at is None else max(0.0, self.retry_at - self.clock())

    def _later(self, remaining: float, message: str, exc: Exception) -> None:
        """A poll failed for a reason that passes (the server): a WARNING with the error,
        then the backoff's next delay before the next, within the cycle and past it."""
        delay = self._retry_later()
        log.warning(message, extra={"mailbox": self.name, "error": str(exc), "retry_in": delay})
        self.disconnect_quietly()
        self.pause(min(delay, remaining))

    def disconnect_quietly(self) -> None:
        with contextlib.suppress(MailboxError):
            self.disconnect()
        self.connected = False
