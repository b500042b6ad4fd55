"""Processing an incoming mail, end to end: parse, deduplicate, decide, record, queue the AR.

A FETCH batch of mails — their rows, their events, their ARs in the outbox and the
folder's new high-water UID — commits in one transaction (in parts of about a second for
a huge batch), before any of its ARs can leave: a crash can neither lose a mail nor
acknowledge it twice (nothing of the batch is left, and the batch is read again).

Whatever goes wrong with one mail (a header no codec reads, a MIME tree too deep, a value
the database refuses, a template error) rolls back that mail's SAVEPOINT alone: the
mail is then recorded as *quarantined* in the same batch, with the traceback (code
locations and exception types, no content) as an event, and the batch goes on with the
next mail. ``mailbot quarantine retry`` processes it again later, in its own transaction.
A mail the server would not read at all (``IncomingMail.refused``, see
``ImapMailbox.fetch``) is quarantined the same way, with the server's answer and its UID, so
that the batch and the folder's mark still go past it.

A *transient* database error (``mailbot.store.errors``: a lock, a serialization failure, a
failover) is not the mail's fault and quarantines nothing: the part's transaction is rolled
back whole (no row, no AR queued, the UID mark unmoved) and the poll fails with
``TransientStoreError``; the next poll reads the same mails again. Only a mail that meets
one TRANSIENT_ATTEMPTS times in a row is quarantined, so that an error coming back at every
read never blocks its folder for good. The count is kept in the folder's row (and in memory,
should the database refuse even that): a cron of ``poll --once`` counts as ``run`` does.
A mail whose quarantine row the database refuses too counts one attempt the same way, and
at the last is passed over with an event saying where it is (``Pipeline._unrecordable``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import NamedTuple

from mailbot.app.deciding import log_outcome
from mailbot.app.folders import FolderStart, Where, transient_failure
from mailbot.app.mail_failures import AttemptFailed
from mailbot.app.policy_lookups import RELANCE_WORKING_DAYS
from mailbot.app.recording import Batched, BatchWriteError, Direct
from mailbot.app.retries import Retries, still_quarantined, twice_if_copied
from mailbot.app.routing_pool import RoutingAhead
from mailbot.core.facts import routing_input
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.message import ParsedMessage, parse_message
from mailbot.core.policy import find_reference, reply_address
from mailbot.core.routing import RoutingInput
from mailbot.core.statuses import ArStatus, Decision, EventKind, Unrecorded
from mailbot.errors import (
    LeaseLostError,
    RepeatedRequestError,
    SameMailError,
    StoreError,
    UnreadableMailError,
)
from mailbot.store import Transaction
from mailbot.store.records import KnownRow

log = logging.getLogger(__name__)
# A batch commits in parts of about this long: SQLite's writers (the outbox's claims, the
# console) wait for the write lock no longer than that.
MAX_TRANSACTION_SECONDS = 1.0
# A part reads what its mails look up for the next 16 mails, then as many as it recorded,
# up to 64 at a time: a part cut after a mail or two (an outbox claim waiting, store/desk)
# reads little, a long one a few statements for hundreds of mails.
READ_AHEAD = (16, 64)


@dataclass(frozen=True)
class Prepared:
    """A mail of a batch, parsed (and its relay's proof checked) before its part's
    transaction: ``parsed`` None and ``error`` what stopped it (the mail is quarantined)."""

    mail: IncomingMail
    parsed: ParsedMessage | None
    error: Exception | None = None
    routing: RoutingAhead | None = None  # its decision, made by the routing helper


class Pipeline(FolderStart, Retries):
    """The intake of one mailbox's mail: a FETCH batch (``process_batch``) or one mail
    (``process``) recorded. Its parts are mixins: the folder's start (``app/folders``),
    the retries (``app/retries``, which derive from the rest: one mail's decision,
    ``app/deciding``, with ``app/copies`` and ``app/policy_lookups``, and its failures,
    ``app/mail_failures``), over its set-up (``app/intake_setup``, which says what each
    part calls on another). This class adds the batch: its parts' transactions, each
    mail under its savepoint."""

    def process(
        self,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        mail: IncomingMail,
        existing: int | None = None,
    ) -> Outcome:
        """Record one mail and queue what it is owed; never raises for a bad mail.

        ``existing`` is the row of a quarantined mail processed again: that row is
        updated (never a second one) and the folder's high-water UID is left alone.
        """
        if existing is None:
            return self.process_batch(mailbox, folder, uidvalidity, [mail])[0]
        where = Where(mailbox, folder, uidvalidity)
        parsed: ParsedMessage | None = None
        try:
            parsed = self._read_again(mail)
            outcome = twice_if_copied(lambda: self._again(where, mail, parsed, existing))
        except RepeatedRequestError:
            raise  # a retry of a mail another retry already processed: nothing new
        except Exception as exc:  # quarantine again, never lose the mail
            still_quarantined(mailbox, existing, exc)  # unless the database's fault
            quarantined = self._quarantine(self._alone, where, mail, parsed, exc, existing)
            if quarantined is None:
                raise StoreError(f"mailbox {mailbox}: cannot record row #{existing}") from exc
            outcome = quarantined
        log_outcome(outcome)
        return outcome

    def process_batch(
        self, mailbox: str, folder: str, uidvalidity: int, mails: Sequence[IncomingMail]
    ) -> list[Outcome]:
        """Record a FETCH batch and queue what each mail is owed; never raises for a bad mail.

        One transaction per batch, cut in parts of about MAX_TRANSACTION_SECONDS so that a
        huge batch never holds SQLite's write lock for long. Each mail is recorded under a
        SAVEPOINT: one that raises is rolled back alone and recorded as quarantined, the
        others go on. The folder's high-water UID is written once per part, in it: a crash
        before its commit leaves nothing of the part, which is read again.
        """
        where = Where(mailbox, folder, uidvalidity)
        prepared = self._route_ahead(mailbox, [self._prepare(mail) for mail in mails])
        outcomes: list[Outcome] = []
        while len(outcomes) < len(mails):
            if outcomes:
                prepared[len(outcomes) :] = self._route_late(mailbox, prepared[len(outcomes) :])
            outcomes += self._record_part(where, prepared[len(outcomes) :])
        for outcome in outcomes:
            log_outcome(outcome)
        return outcomes

    def _prepare(self, mail: IncomingMail) -> Prepared:
        """Parse a mail and check its relay's proof, before the transaction (pure work:
        the write lock is not held meanwhile); what raises quarantines the mail, as does
        a mail the server would not read (``refused``: there is nothing to parse)."""
        if mail.refused:
            return Prepared(mail, None, UnreadableMailError(mail.refused))
        try:
            return Prepared(mail, self.relay_verifier.verify(mail.raw, parse_message(mail.raw)))
        except Exception as exc:
            return Prepared(mail, None, exc)

    def _route_ahead(self, mailbox: str, prepared: list[Prepared]) -> list[Prepared]:
        """A large batch (any batch, for a helper started with the worker): each parsed
        mail's routing facts, its decision sent to the helper (all decided while the batch
        is recorded, on the other core). A mail that gets no
        AR wastes its decision there; one whose facts raise is left to
        ``Deciding._acknowledge`` (its error quarantines it there, as without the helper)."""
        pool = self.routing_pool
        if pool is None or not self._helper_decides() or not pool.usable(len(prepared)):
            return prepared
        inputs = [self._facts(mailbox, p.parsed) for p in prepared]
        ahead = pool.ahead(inputs)
        return [
            p if a is None else replace(p, routing=a) for p, a in zip(prepared, ahead, strict=True)
        ]

    def _route_late(self, mailbox: str, rest: list[Prepared]) -> list[Prepared]:
        """The rest of a batch begun while the helper was starting (it takes a second or
        more: a backlog's first batches begin without it), sent to it at a part's start
        once it is ready, rather than decided here to the batch's end. A batch routed
        ahead already (even by a helper that failed since) is left as it is."""
        if self.routing_pool is None or any(p.routing is not None for p in rest):
            return rest
        return self._route_ahead(mailbox, rest)

    def _facts(self, mailbox: str, parsed: ParsedMessage | None) -> RoutingInput | None:
        if parsed is None:
            return None
        try:
            return routing_input(self.config, mailbox, parsed)
        except Exception:
            return None

    def _record_part(self, where: Where, mails: Sequence[Prepared]) -> list[Outcome]:
        """Record mails in one transaction until the time is up (``_write_part``), their
        lookups and bulk rows by batch; if the database refuses the bulk rows, the part is
        rolled back and written again mail by mail, where a bad mail fails alone."""
        try:
            return self._write_part(where, mails, batched=True)
        except BatchWriteError as exc:
            log.warning("batch rows refused, recording mail by mail", exc_info=exc)
            return self._write_part(where, mails, batched=False)

    def _write_part(self, where: Where, mails: Sequence[Prepared], batched: bool) -> list[Outcome]:
        """Record mails in one transaction until the time is up; the UID mark moves with
        them. A mail whose quarantine the database refuses too ends the part: what came
        before it commits, the mark stays below it, and StoreError says so (but at its last
        attempt: passed over, ``_unrecordable``). A mail that failed before ends the part
        once recorded, committed (``_counted``). A transient
        database error rolls the part back whole (TransientStoreError): read again."""
        done: list[Outcome] = []
        deadline = time.monotonic() + MAX_TRANSACTION_SECONDS
        refused: IncomingMail | None = None
        try:
            with (
                transient_failure(where.mailbox, where.folder, "record a batch"),
                self.store.batch() as tx,
            ):
                where = replace(
                    where.bounded(tx), transient=tx.transient_attempts(*where.folder_key)
                )
                rec = Batched(tx, where.mailbox, ()) if batched else Direct(tx)
                read_to = 0
                for n, prepared in enumerate(mails):
                    if isinstance(rec, Batched) and n == read_to:
                        read_to = n + max(READ_AHEAD[0], min(READ_AHEAD[1], n))
                        rec.extend(self._known(tx, where.mailbox, mails[n:read_to]))
                    counted = self._counted(where, prepared.mail.uid)
                    outcome = self._record_one(tx, rec, where, prepared)
                    if outcome is None:
                        refused = prepared.mail
                        break
                    done.append(outcome)
                    if counted or outcome.decision == Unrecorded.PASSED_OVER:
                        break  # committed at once (``_counted``)
                    # An outbox claim waiting for the write lock (SQLite) commits with the part:
                    # it waits one mail, not a whole part (store/desk).
                    if time.monotonic() >= deadline or tx.writes_waiting():
                        break
                rec.flush()
                if done:
                    tx.save_folder_state(*where.folder_key, max(o.uid for o in done))
                unsent = _recorded_without_ar(tx, where, mails, done)
        except AttemptFailed as failed:  # rolled back: its count kept for the next poll
            self._keep_attempts(where, failed.uid, failed.count)
            raise
        if unsent.resync:
            log.warning(
                "uidvalidity changed: mail that arrived before it recorded without AR",
                extra={"mailbox": where.mailbox, "folder": where.folder, "mails": unsent.resync},
            )
        if unsent.restored:
            log.warning(
                "restored database: mail that arrived before the failure recorded without AR"
                " (presumed sent by the lost database)",
                extra={"mailbox": where.mailbox, "folder": where.folder, "mails": unsent.restored},
            )
        if refused is not None:
            raise StoreError(
                f"mailbox {where.mailbox}: cannot record UID {refused.uid}, even quarantined"
            )
        return done

    def _known(self, tx: Transaction, mailbox: str, mails: Sequence[Prepared]) -> list[KnownRow]:
        """What the next mails of a part may look up, read in one statement: rows sharing a
        Message-ID, fingerprint or hash (copies), a thread's Message-IDs or a reference
        (follow-ups), and the senders' ARs since the rate limit's window or the relances'
        working days before the oldest mail, whichever is earlier."""
        policy = self.config.policy
        keys: dict[str, set[str]] = {
            k: set() for k in ("message_id", "ar_message_id", "fingerprint", "content_hash")
        }
        keys["reference"] = set()
        senders: set[str] = set()
        window = timedelta(hours=policy.rate_limit.window_hours)
        since = self.clock() - window
        for parsed, received in ((m.parsed, m.mail.internaldate) for m in mails):
            if parsed is None:
                continue
            keys["message_id"].update((parsed.message_id or "", *parsed.thread_ids))
            keys["ar_message_id"].update(parsed.thread_ids)
            keys["fingerprint"].add(parsed.fingerprint)
            keys["content_hash"].add(parsed.content_hash)
            found = find_reference(parsed.subject, self.config.sender.reference_prefix)
            keys["reference"].update((found,) if found else ())
            sender = reply_address(parsed, policy.contact_form_relays, policy.answers_from)
            senders.update((sender,) if sender else ())
            relances = self.calendar.window_start(received, RELANCE_WORKING_DAYS)
            since = min(since, received - window, relances)
        return tx.known(mailbox, keys, senders, since)

    def _record_one(
        self, tx: Transaction, rec: Direct, where: Where, prepared: Prepared
    ) -> Outcome | None:
        """One mail of a batch under its savepoint; quarantined (under another) if anything
        raises, but for a transient database error (``_transient``). None: even the
        quarantine row was refused."""
        try:
            try:
                outcome = self._in_savepoint(tx, rec, where, prepared)
            except SameMailError:
                # Another mailbox's copy committed between this mail's lookup and its row
                # (another worker): this mail's savepoint alone was rolled back, and the
                # lookup finds that copy now: this one is recorded as its duplicate.
                outcome = self._in_savepoint(tx, rec, where, prepared)
        except LeaseLostError:
            raise  # another worker's folder now: nothing recorded, it reads this mail again
        except Exception as exc:  # quarantine, never lose the mail nor stop the worker
            reason = self._transient(where, prepared.mail, exc)
            scope = functools.partial(_staged, rec, tx)
            quarantined = self._quarantine(
                scope, where, prepared.mail, prepared.parsed, exc, None, reason
            )
            if quarantined is None:
                return self._unrecordable(tx, where, prepared.mail, exc, reason)
            self._forget_attempts(tx, where, prepared.mail.uid)
            return quarantined
        self._forget_attempts(tx, where, prepared.mail.uid)
        return outcome

    def _in_savepoint(
        self, tx: Transaction, rec: Direct, where: Where, prepared: Prepared
    ) -> Outcome:
        with rec.mail(), tx.savepoint():
            if prepared.parsed is None:
                raise prepared.error or ValueError("unparsed mail")
            return self._record(rec, where, prepared.mail, prepared.parsed, None, prepared.routing)


@contextmanager
def _staged(rec: Direct, tx: Transaction) -> Iterator[Direct]:
    """A mail's own savepoint in the batch, its writes staged with it (a quarantine)."""
    with rec.mail(), tx.savepoint():
        yield rec


def _recorded_without_ar(
    tx: Transaction, where: Where, mails: Sequence[Prepared], done: Sequence[Outcome]
) -> Withheld:
    """How many of a part's mails an AR was owed to but that arrived before a UIDVALIDITY
    change (``Where.arrived_before_resync``: recorded as a backfill records them) or before
    a restore's bound (``Where.arrived_before_restore``: presumed sent by the lost
    database), never sent; an event in the part's transaction says how many, for the
    journal of the folder (and `mailbot restored`'s count of the latter)."""
    resync = restored = 0
    for prepared, outcome in zip(mails, done, strict=False):
        if outcome.decision != Decision.ACKNOWLEDGE:
            continue
        withheld = where.withheld(prepared.mail)
        resync += withheld == ArStatus.BACKFILL
        restored += withheld == ArStatus.RESTORED
    if resync:
        tx.add_event(
            None,
            EventKind.UIDVALIDITY_CHANGED,
            f"{where.mailbox}/{where.folder}: {resync} mail(s) that arrived before"
            f" {where.resync_before:%Y-%m-%d %H:%M:%S} UTC recorded without AR",
        )
    if restored:
        tx.add_event(
            None,
            EventKind.RESTORED,
            f"{where.mailbox}/{where.folder}: {restored} mail(s) that arrived before"
            f" {where.restored_before:%Y-%m-%d %H:%M:%S} UTC recorded without AR"
            " (AR presumed sent before the restore)",
        )
    return Withheld(resync, restored)


class Withheld(NamedTuple):
    """A part's mails recorded without the AR they were owed, by why (``Where.withheld``)."""

    resync: int
    restored: int
