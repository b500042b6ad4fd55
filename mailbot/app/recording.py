"""How the intake reads and writes in its transaction: mail by mail, or by batch (issue 14).

``Direct`` sends each of a mail's statements to the database at once: a quarantined mail
processed again, and a batch whose bulk writes failed, written again mail by mail.

``Batched`` serves a FETCH batch's part with about three statements a mail instead of ten:

* what the policy and the duplicate check look up (earlier copies, the sender's recent
  ARs and unanswered messages, the thread) is read ONCE for the whole part, then looked up
  in memory together with the rows the part itself recorded: the per-sender rate limit
  counts the ARs decided earlier in the same batch, a copy of a mail earlier in the batch
  is a duplicate, a follow-up finds its original recorded a few mails before;
* the references are numbered in memory from the counter, read (and locked) once, and its
  last value is written once at the end;
* events and outbox mails are written at the end of the part, each kind in one
  executemany (an outbox row one by one for its id, the bytes in one), before the
  folder's mark and the commit: no AR can leave before its row, and a crash before the
  commit leaves nothing of the part.

Each mail's message row is still inserted under the mail's SAVEPOINT (it may fail alone:
a value the database refuses). What a mail staged in memory (its rows, events, mails,
numbers) joins the part only once its savepoint is released; a mail that raises leaves
none of it. If the part's bulk writes fail, the caller rolls the part back and records it
again with ``Direct``, where each mail's statements fail alone.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from mailbot.app.outgoing import Queued, enqueue
from mailbot.core.clock import utcnow
from mailbot.core.statuses import Decision, EventKind
from mailbot.store import NewMessage, Transaction, reference_counter, stored_id
from mailbot.store.records import FirstCopy, KnownRow

UNANSWERED_LISTED = 20  # the relance check looks at a sender's 20 newest unanswered mails


class BatchWriteError(Exception):
    """A part's bulk writes failed: its transaction is rolled back and written again."""


class Direct:
    """A mail's reads and writes, each a statement of the transaction at once."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    @contextmanager
    def mail(self) -> Iterator[None]:
        """One mail's staging: nothing to stage here."""
        yield

    def duplicate(
        self,
        mailbox: str,
        message_id: str | None,
        fingerprint: str,
        content_hash: str,
        exclude: int | None = None,
    ) -> int | None:
        return self.tx.find_duplicate(mailbox, message_id, fingerprint, content_hash, exclude)

    def first_copy(self, fingerprint: str) -> FirstCopy | None:
        """The row that handled this very mail in any mailbox (``Transaction.claimed_mail``):
        read from the database in both modes, where another worker's commit shows."""
        return self.tx.claimed_mail(fingerprint)

    def claim(self, fingerprint: str, message_pk: int) -> None:
        """This row handles the mail (``Transaction.claim_mail``; SameMailError if not)."""
        self.tx.claim_mail(fingerprint, message_pk)

    def take_over(self, fingerprint: str, waiting_pk: int, message_pk: int) -> None:
        """This row handles the mail another mailbox's copy left for a person held: that
        copy becomes its duplicate (``Transaction.take_over_mail``; SameMailError if it no
        longer waits). Written at once in both modes: the row is another mailbox's, in no
        batch's memory."""
        self.tx.take_over_mail(fingerprint, waiting_pk, message_pk)

    def recent_ars(self, mailbox: str, recipient: str, since: datetime, until: datetime) -> int:
        """ARs sent for ``recipient``'s mails received in [since, until]."""
        return self.tx.count_recent_ars(mailbox, recipient, since, until)

    def thread(
        self, mailbox: str, thread_ids: Sequence[str], reference: str | None
    ) -> tuple[int, str] | None:
        return self.tx.acknowledged_in_thread(mailbox, thread_ids, reference)

    def unanswered(
        self, mailbox: str, sender: str, since: datetime
    ) -> list[tuple[int, str, datetime, str]]:
        return self.tx.unanswered_from(mailbox, sender, since)

    def reference(self, prefix: str, year: int) -> str:
        return self.tx.next_reference(prefix, year)

    def record(self, row: NewMessage) -> int:
        return self.tx.insert_message(row)

    def events(self, message_pk: int, *kinds: tuple[EventKind, str]) -> None:
        self.tx.add_events(message_pk, *kinds)

    def queue(self, message_pk: int, mails: Sequence[Queued]) -> None:
        enqueue(self.tx, message_pk, mails)

    def replied(self, message_pk: int, at: datetime, detail: str) -> None:
        """Mailbot's own reply on receipt (a re-orientation): the message is answered."""
        self.tx.record_reply(message_pk, at, True, detail)

    def flush(self) -> None:
        """Write what the part staged: nothing here."""


@dataclasses.dataclass
class _Staged:
    """What one mail, or the part so far, wrote in memory."""

    rows: list[KnownRow] = dataclasses.field(default_factory=list)
    events: list[tuple[int | None, EventKind, str, datetime]] = dataclasses.field(
        default_factory=list
    )
    mails: list[tuple[int, Queued, datetime]] = dataclasses.field(default_factory=list)


class Batched(Direct):
    """A part's lookups in memory and its rows written at its end (see the module)."""

    def __init__(self, tx: Transaction, mailbox: str, known: Iterable[KnownRow]) -> None:
        super().__init__(tx)
        self.mailbox = mailbox
        self._index: dict[str, dict[str | None, list[KnownRow]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._seen: set[int] = set()
        self.extend(known)
        self._done = _Staged()
        self._mail: _Staged | None = None
        # counter name -> [last number taken, whether the counter has no row yet]
        self._numbers: dict[str, int] = {}  # counter name -> last number taken

    def extend(self, known: Iterable[KnownRow]) -> None:
        """More rows read (for the part's next mails): those not known yet. Called between
        mails, when what the part recorded is both in the database and in memory."""
        for row in known:
            if row.id not in self._seen:
                self._add(row)

    def _add(self, row: KnownRow) -> None:
        self._seen.add(row.id)
        for column in ("message_id", "ar_message_id", "fingerprint", "content_hash", "reference"):
            self._index[column][getattr(row, column)].append(row)
        if row.decision == Decision.ACKNOWLEDGE:
            self._index["sender"][row.sender].append(row)

    def _rows(self, column: str, value: str | None) -> list[KnownRow]:
        found = self._index[column].get(value)
        return found if found is not None else []

    @contextmanager
    def mail(self) -> Iterator[None]:
        """Stage one mail: what it wrote joins the part when the block ends without an
        exception (its savepoint released), and is forgotten otherwise, its numbers too."""
        numbers = dict(self._numbers)
        self._mail = _Staged()
        try:
            yield
        except BaseException:
            self._numbers = numbers  # a number taken by a failed mail goes to the next
            raise
        else:
            for row in self._mail.rows:
                self._add(row)
            self._done.rows += self._mail.rows
            self._done.events += self._mail.events
            self._done.mails += self._mail.mails
        finally:
            self._mail = None

    def _staged(self) -> _Staged:
        if self._mail is None:
            raise RuntimeError("a batch's write outside a mail's staging")
        return self._mail

    # -- lookups -------------------------------------------------------------------------
    def duplicate(
        self,
        mailbox: str,
        message_id: str | None,
        fingerprint: str,
        content_hash: str,
        exclude: int | None = None,
    ) -> int | None:
        """``Transaction.find_duplicate``'s rule over the rows read and recorded."""
        if exclude is not None or mailbox != self.mailbox:
            return super().duplicate(mailbox, message_id, fingerprint, content_hash, exclude)
        if message_id:
            same_id = self._rows("message_id", stored_id(message_id))
            rows = [r for r in same_id if r.fingerprint in (fingerprint, None)]
        else:
            legacy = self._rows("content_hash", content_hash)
            rows = self._rows("fingerprint", fingerprint)
            rows = rows + [r for r in legacy if r.fingerprint is None]
        return min((r.id for r in rows), default=None)

    def recent_ars(self, mailbox: str, recipient: str, since: datetime, until: datetime) -> int:
        if mailbox != self.mailbox:
            return super().recent_ars(mailbox, recipient, since, until)
        return sum(since <= r.received_at <= until for r in self._rows("sender", recipient))

    def thread(
        self, mailbox: str, thread_ids: Sequence[str], reference: str | None
    ) -> tuple[int, str] | None:
        """``Transaction.acknowledged_in_thread``'s rule over the rows read and recorded."""
        if mailbox != self.mailbox:
            return super().thread(mailbox, thread_ids, reference)
        rows: list[KnownRow] = []
        for found in {stored_id(mid) for mid in thread_ids}:
            rows += self._rows("message_id", found) + self._rows("ar_message_id", found)
        if reference:
            rows += self._rows("reference", reference)
        best = min((r for r in rows if r.reference is not None), key=_pk, default=None)
        return None if best is None or best.reference is None else (best.id, best.reference)

    def unanswered(
        self, mailbox: str, sender: str, since: datetime
    ) -> list[tuple[int, str, datetime, str]]:
        """``Transaction.unanswered_from``'s rule over the rows read and recorded."""
        if mailbox != self.mailbox:
            return super().unanswered(mailbox, sender, since)
        rows = [
            r
            for r in self._rows("sender", sender)
            if r.received_at >= since and r.first_reply_at is None
        ]
        rows.sort(key=lambda r: (r.received_at, r.id), reverse=True)
        return [(r.id, r.reference or "", r.received_at, r.subject) for r in rows][
            :UNANSWERED_LISTED
        ]

    # -- writes --------------------------------------------------------------------------
    def reference(self, prefix: str, year: int) -> str:
        """The next number of the counter, taken in memory; the counter is read (and
        locked) at its first use in the part, its last number written by ``flush``."""
        name = reference_counter(prefix, year)
        if name not in self._numbers:
            name, value = self.tx.reserve_numbers(prefix, year)
            self._numbers[name] = value
        self._numbers[name] += 1
        return f"{prefix}-{year}-{self._numbers[name]:06d}"

    def record(self, row: NewMessage) -> int:
        known = self.tx.record_message(row)
        self._staged().rows.append(known)
        return known.id

    def events(self, message_pk: int, *kinds: tuple[EventKind, str]) -> None:
        now = utcnow()
        self._staged().events.extend((message_pk, kind, detail, now) for kind, detail in kinds)

    def queue(self, message_pk: int, mails: Sequence[Queued]) -> None:
        now = utcnow()
        self._staged().mails.extend((message_pk, mail, now) for mail in mails)

    def replied(self, message_pk: int, at: datetime, detail: str) -> None:
        super().replied(message_pk, at, detail)
        rows = self._staged().rows
        for n, row in enumerate(rows):
            if row.id == message_pk and row.first_reply_at is None:
                rows[n] = dataclasses.replace(row, first_reply_at=at)

    def flush(self) -> None:
        """The part's events, outbox mails and counters, each in one statement.
        BatchWriteError if the database refuses them: the part is then written again."""
        done, self._done = self._done, _Staged()
        try:
            self.tx.add_event_rows(done.events)
            self.tx.queue_rows(
                [
                    (pk, q.kind, q.recipient, q.envelope_from, q.message_id, q.raw, at)
                    for pk, q, at in done.mails
                ]
            )
            for name, last in self._numbers.items():
                self.tx.set_numbers(name, last)
        except Exception as exc:
            raise BatchWriteError(f"the batch's rows were refused: {exc}") from exc
        self._numbers = {}


def _pk(row: KnownRow) -> int:
    return row.id
