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
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from mailbot.app.acknowledge import Plan, Planner, Received
from mailbot.app.bounces import note_bounce
from mailbot.app.recording import Batched, BatchWriteError, Direct
from mailbot.app.routing_pool import RoutingAhead, RoutingPool, RoutingSpec
from mailbot.config import Config
from mailbot.core.clock import Clock, utcnow
from mailbot.core.facts import (
    compiled_routing,
    mail_language,
    policy_context,
    routing_input,
    sender_name,
)
from mailbot.core.incoming import IncomingMail, Outcome, PassedOver
from mailbot.core.message import ParsedMessage, parent_thread, parse_message
from mailbot.core.policy import (
    ArDecision,
    PolicyContext,
    answer_addresses,
    decide_ar,
    find_reference,
    reply_address,
    similar_subjects,
)
from mailbot.core.probe import is_probe
from mailbot.core.routing import CompiledRouting, RoutingDecision, RoutingInput, decide
from mailbot.core.statuses import (
    DUPLICATE_REASON,
    ArStatus,
    Attention,
    Decision,
    EventKind,
    Unrecorded,
)
from mailbot.errors import (
    FirstPollError,
    LeaseLostError,
    RepeatedRequestError,
    SameMailError,
    StoreError,
    TransientStoreError,
    UnreadableMailError,
)
from mailbot.logs import safe_error, safe_traceback
from mailbot.mail.compose import Composer
from mailbot.mail.relay_auth import RelayVerifier
from mailbot.render.templates import Renderer
from mailbot.render.variables import working_calendar
from mailbot.store import NewMessage, Store, Transaction
from mailbot.store.errors import is_read_only, transient_reason
from mailbot.store.records import FirstCopy, KnownRow

log = logging.getLogger(__name__)
RELANCE_WORKING_DAYS = 10
# Skip reasons that say nothing of the mail itself, only of one mailbox's copy of it.
_THIS_MAILBOX_ONLY = frozenset({Attention.NO_RETURN_PATH, "not-addressed", "rate-limited"})
# The event that records each decision about a citizen's mail.
DECISION_EVENTS = {
    Decision.ACKNOWLEDGE: EventKind.AR_QUEUED,
    Decision.FOLLOW_UP: EventKind.FOLLOW_UP,
    Decision.SKIP: EventKind.SKIPPED,
}
REORIENTATION_REPLY = "automatic:reorientation"  # the detail of its reply event
# A batch commits in parts of about this long: SQLite's writers (the outbox's claims, the
# console) wait for the write lock no longer than that.
MAX_TRANSACTION_SECONDS = 1.0
# A part reads what its mails look up for the next 16 mails, then as many as it recorded,
# up to 64 at a time: a part cut after a mail or two (an outbox claim waiting, store/desk)
# reads little, a long one a few statements for hundreds of mails.
READ_AHEAD = (16, 64)
# A poll's moment (mailbot's clock) is compared with INTERNALDATEs (the IMAP server's, to
# the second): a folder counts as read up to this long before its poll began, so that a
# server clock a little behind never makes mail that arrived after the poll look older.
# Earlier than needed costs nothing: what arrived just before the poll was read, and is
# found in the database.
READ_MARGIN = timedelta(minutes=1)
# A mail whose recording meets a transient database error this many times in a row is
# quarantined (its reason says so) instead of failing its folder's polls for ever.
TRANSIENT_ATTEMPTS = 3


def _routing_pool(config: Config, routing: CompiledRouting | None) -> RoutingPool | None:
    """The helper of ``routing.parallel`` (none with ``processes: 0`` or no routing); its
    process starts with the first large batch."""
    if config.routing is None or routing is None or config.routing.parallel.processes < 1:
        return None
    own = {name: box.service for name, box in config.mailboxes.items()}
    spec = RoutingSpec(config.routing, own, config.organisation.general_service)
    return RoutingPool(spec, routing, config.routing.parallel.min_batch)


def _none() -> int:
    return 0


def first_poll_refusal(store: Store, mailbox: str, folder: str, count: int) -> str:
    """What happened and what to do, for an operator reading a cron mail or the journal."""
    return (
        f"mailbox {mailbox}, folder {folder}: the database {store.where} holds no state for "
        f"this folder, which already holds {count} mail(s); nothing was acknowledged. "
        "If this is a first start, record the history without sending anything with "
        "`mailbot backfill --since YYYY-MM-DD`, or acknowledge what is there with "
        "`--acknowledge-existing` (poll/run). If mailbot ran before, this is the wrong "
        "database: check `database:` in rules.yaml (`mailbot check` prints it)."
    )


@dataclass(frozen=True)
class Where:
    """Where a mail was read: mailbox, folder and the folder's UIDVALIDITY."""

    mailbox: str
    folder: str
    uidvalidity: int
    # While the folder is read again after a UIDVALIDITY change: mail that arrived before
    # this moment was there under the old one (``Pipeline.start_folder``).
    resync_before: datetime | None = None
    # The UID whose recording met a transient database error at the last poll(s), and how
    # many times in a row, as the folder's row keeps them (``Pipeline._transient``).
    transient: tuple[int, int] = (0, 0)
    # After a restore, until the folder is read whole: mail that arrived before this moment
    # was acknowledged by the lost database (``mailbot restored``, app/restore).
    restored_before: datetime | None = None

    @property
    def folder_key(self) -> tuple[str, str, int]:
        return self.mailbox, self.folder, self.uidvalidity

    def bounded(self, tx: Transaction) -> Where:
        """This folder with the bounds its row holds now (``Transaction.resync_bounds``)."""
        bounds = tx.resync_bounds(*self.folder_key)
        return replace(
            self, resync_before=bounds.resync_before, restored_before=bounds.restored_before
        )

    def arrived_before_resync(self, mail: IncomingMail) -> bool:
        """Whether this mail was in the folder before its UIDVALIDITY changed: not in the
        database, it is older than a backfill's ``--since`` or purged by retention, and
        never acknowledged now (see ``Pipeline.start_folder``)."""
        return self.resync_before is not None and mail.internaldate < self.resync_before

    def arrived_before_restore(self, mail: IncomingMail) -> bool:
        """Whether this mail arrived before the failure of the database this one was
        restored from a backup of (and after the backup, or the database would hold it):
        that database presumably acknowledged it, so no AR is sent again."""
        return self.restored_before is not None and mail.internaldate < self.restored_before

    def withheld(self, mail: IncomingMail) -> ArStatus | None:
        """Why an AR owed to this mail is not sent (None: it is): it arrived before a
        UIDVALIDITY change (recorded as a backfill records it) or before a restore's bound
        (presumed sent). The UIDVALIDITY's bound is the older: the mail before it was read
        under the old one, by this database or, after a restore, by none."""
        if self.arrived_before_resync(mail):
            return ArStatus.BACKFILL
        if self.arrived_before_restore(mail):
            return ArStatus.RESTORED
        return None


@dataclass(frozen=True)
class Handling:
    """What acknowledging a mail gave: its reference, routing, language, and the mails
    to send (none when a backfill records history)."""

    reference: str | None = None
    routing: RoutingDecision | None = None
    language: str | None = None
    plan: Plan | None = None


class Policy(NamedTuple):
    """The policy's verdict on a mail: a probe or not, the AR decision, and the message
    whose follow-up it is (None if none)."""

    probe: bool
    decision: ArDecision
    parent_pk: int | None


@dataclass(frozen=True)
class Prepared:
    """A mail of a batch, parsed (and its relay's proof checked) before its part's
    transaction: ``parsed`` None and ``error`` what stopped it (the mail is quarantined)."""

    mail: IncomingMail
    parsed: ParsedMessage | None
    error: Exception | None = None
    routing: RoutingAhead | None = None  # its decision, made by the routing helper


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        renderer: Renderer,
        clock: Clock = utcnow,
        send: bool = True,
        acknowledge_existing: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # send=False is the backfill of history: decide and route, record, never send.
        self.send = send
        # A first poll acknowledges the mail already there only when asked (demo, --flag).
        self.acknowledge_existing = acknowledge_existing
        self.routing = compiled_routing(config)
        # A large batch's routing decided by a helper process (issue 14; app/routing_pool).
        self.routing_pool = _routing_pool(config, self.routing)
        self.calendar = working_calendar(config.timezone)  # holidays from the render cache
        self.planner = Planner(config, renderer, Composer.from_config(config))
        # Token and DKIM proofs of the contact-form relay (secrets, DNS): before deciding.
        self.relay_verifier = RelayVerifier(config.policy.contact_form_relays)
        # The probe's test mails (issue 16): acknowledged, never routed nor counted.
        self.probe = (config.probe.address, config.probe.secret()) if config.probe else None
        # How many times in a row each mail (mailbox, folder, UIDVALIDITY, UID) met a
        # transient database error (``_transient``). The folder's row keeps it for every
        # process (a cron of ``poll --once``); this memory when the database would not
        # write even that. A mail recorded, or quarantined for it, leaves it; one that
        # failed and was then deleted from the server stays (a few bytes).
        self.transient_failures: dict[tuple[str, str, int, int], int] = {}

    def start_folder(
        self, mailbox: str, folder: str, uidvalidity: int, existing: Callable[[], int] = _none
    ) -> int:
        """Return the UID to read after; a new UIDVALIDITY means re-reading from the start.

        ``existing`` counts the mail already in the folder. A folder this database holds no
        state for, with mail in it, is refused (FirstPollError) unless acknowledge_existing:
        it is either a first start that would answer every old mail, or the wrong (empty)
        database. Backfill (send=False) is how history is recorded instead.

        A new UIDVALIDITY (a folder restored or recreated) is read again from UID 1: the
        mail already recorded is found as such, but not the mail a backfill passed over
        (older than ``--since``) nor the mail purged by retention. So the moment up to which
        the folder was read under the old UIDVALIDITY (``read_until``) is kept: until the
        folder is read whole, mail that arrived before it is recorded without an AR, as a
        backfill records it; mail that arrived after it (during an outage, before the
        restoration) was never read and gets its AR.
        """
        with (
            transient_failure(mailbox, folder, "read the folder's state"),
            self.store.transaction() as tx,
        ):
            state = tx.folder_state(mailbox, folder)
            if self.send and tx.backfill_pending(mailbox, folder):
                raise FirstPollError(
                    f"mailbox {mailbox}, folder {folder}: a backfill of this folder started and"
                    " did not finish; nothing was acknowledged. Run `mailbot backfill` again"
                    " to finish it."
                )
            if state is not None and state.uidvalidity == uidvalidity:
                return state.last_uid
            if state is not None:
                # A change during a re-read not yet whole keeps the first change's moment.
                before = state.read_until or state.resync_before
                log.warning(
                    "uidvalidity changed: re-reading the folder; known mail is deduplicated,"
                    " mail that arrived before the last full read is recorded without AR",
                    extra={
                        "mailbox": mailbox,
                        "old": state.uidvalidity,
                        "new": uidvalidity,
                        "read_until": before.isoformat() if before else "-",
                    },
                )
                tx.add_event(
                    None, EventKind.UIDVALIDITY_CHANGED, f"{mailbox}/{folder}: {uidvalidity}"
                )
                tx.save_folder_state(mailbox, folder, uidvalidity, 0)
                tx.start_resync(mailbox, folder, before)
                return 0
            if self.send and not self.acknowledge_existing:
                count = existing()
                if count:
                    raise FirstPollError(first_poll_refusal(self.store, mailbox, folder, count))
            tx.save_folder_state(mailbox, folder, uidvalidity, 0)
            return 0

    def folder_read(
        self, mailbox: str, folder: str, uidvalidity: int, searched_at: datetime
    ) -> None:
        """A poll read every mail its search found (``searched_at``: before it selected the
        folder): all mail that arrived before then is in the database. The bound a later
        UIDVALIDITY change keeps (``start_folder``), less READ_MARGIN; and the end of a
        re-read after one."""
        at = searched_at.replace(microsecond=0) - READ_MARGIN
        with (
            transient_failure(mailbox, folder, "note the folder as read"),
            self.store.transaction() as tx,
        ):
            tx.folder_read(mailbox, folder, uidvalidity, at)

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
            if mail.refused:  # still unreadable: quarantined again, with the new answer
                raise UnreadableMailError(mail.refused)
            parsed = self.relay_verifier.verify(mail.raw, parse_message(mail.raw))
            try:
                outcome = self._again(where, mail, parsed, existing)
            except SameMailError:  # another mailbox's copy committed meanwhile: found now
                outcome = self._again(where, mail, parsed, existing)
        except RepeatedRequestError:
            raise  # a retry of a mail another retry already processed: nothing new
        except Exception as exc:  # quarantine again, never lose the mail
            _still_quarantined(mailbox, existing, exc)  # unless the database's fault
            quarantined = self._quarantine(self._alone, where, mail, parsed, exc, existing)
            if quarantined is None:
                raise StoreError(f"mailbox {mailbox}: cannot record row #{existing}") from exc
            outcome = quarantined
        _log(outcome)
        return outcome

    def _again(
        self, where: Where, mail: IncomingMail, parsed: ParsedMessage, existing: int
    ) -> Outcome:
        """A quarantined mail processed again, in a transaction of its own."""
        with self.store.transaction() as tx:
            tx.claim_unhandled(existing)
            tx.add_event(existing, EventKind.RETRIED, "")
            where = where.bounded(tx)
            return self._record(Direct(tx), where, mail, parsed, existing)

    def process_passed_over(self, passed: PassedOver, mail: IncomingMail) -> Outcome:
        """A mail passed over (``_unrecordable``) processed again, as ``process`` does a
        quarantined row: in a transaction of its own that first claims its event
        (RepeatedRequestError: another retry recorded it first) and ends by giving it to
        the row now recording the mail (``Transaction.resolve_passed_over``), which takes
        it off the lists. The folder's mark and attempt counts are left alone, for the
        poller went past the mail long ago. Raising again, it is quarantined so (the
        database may take its row now); a transient database error (TransientStoreError),
        or its quarantine row refused again (StoreError): nothing is recorded, no new event,
        the mail stays passed over as it was, for a retry later."""
        where = Where(passed.mailbox, passed.folder, passed.uidvalidity)
        scope = functools.partial(self._claiming, passed, where)
        parsed: ParsedMessage | None = None
        try:
            if mail.refused:  # still unreadable: quarantined now, with the new answer
                raise UnreadableMailError(mail.refused)
            parsed = self.relay_verifier.verify(mail.raw, parse_message(mail.raw))
            try:
                outcome = self._passed_again(scope, where, mail, parsed)
            except SameMailError:  # another mailbox's copy committed meanwhile: found now
                outcome = self._passed_again(scope, where, mail, parsed)
        except RepeatedRequestError:
            raise  # another retry recorded it: nothing new
        except Exception as exc:
            reason = transient_reason(exc)
            if reason is not None:
                raise TransientStoreError(
                    f"mailbox {passed.mailbox}: mail {passed.id} was not processed again: the"
                    f" database could not record it now ({reason}); it stays passed over,"
                    " retry later"
                ) from exc
            quarantined = self._quarantine(scope, where, mail, parsed, exc, None)
            if quarantined is None:
                raise StoreError(
                    f"mailbox {passed.mailbox}: cannot record mail {passed.id}, even"
                    " quarantined: it stays passed over"
                ) from exc
            outcome = quarantined
        _log(outcome)
        return outcome

    @contextmanager
    def _claiming(self, passed: PassedOver, where: Where) -> Iterator[Direct]:
        """A transaction of its own for a mail passed over: its event claimed first, given
        at the end to the row the block recorded at the mail's location."""
        with self.store.transaction() as tx:
            tx.claim_passed_over(passed.event_id)
            yield Direct(tx)
            tx.resolve_passed_over(passed.event_id, *where.folder_key, passed.uid)

    def _passed_again(
        self,
        scope: Callable[[], AbstractContextManager[Direct]],
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage,
    ) -> Outcome:
        with scope() as rec:
            where = where.bounded(rec.tx)
            return self._record(rec, where, mail, parsed, None)

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
            _log(outcome)
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
        """A large batch: each parsed mail's routing facts, its decision sent to the helper
        (all decided while the batch is recorded, on the other core). A mail that gets no
        AR wastes its decision there; one whose facts raise is left to ``_acknowledge``
        (its error quarantines it there, as without the helper)."""
        pool = self.routing_pool
        if pool is None or pool.made_for is not self.routing or not pool.usable(len(prepared)):
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

    def close(self) -> None:
        """The routing helper stopped, if one was started (the worker's stop)."""
        if self.routing_pool is not None:
            self.routing_pool.close()

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
        except _AttemptFailed as failed:  # rolled back: its count kept for the next poll
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

    def _unrecordable(
        self, tx: Transaction, where: Where, mail: IncomingMail, exc: Exception, reason: str | None
    ) -> Outcome | None:
        """The database refused even the mail's quarantine row. That is one more failed
        attempt in a row, counted with the transient errors (``_transient``), never a new
        start: the poll ends below the mail (None: StoreError), which is read again, for the
        refusal may pass. At TRANSIENT_ATTEMPTS the mail is passed over: an event without a
        message (``passed_over``: its folder, UIDVALIDITY and UID, why, the traceback) and
        the folder's mark past it, in the part; it stays on the server, never acknowledged,
        and `mailbot status` counts it. Read for ever, it would hold its folder up for good.
        Should the database refuse that event too, nothing records the mail: the poll ends
        below it, as for an unusable database (the folder's failed polls say so)."""
        key = (*where.folder_key, mail.uid)
        stored = where.transient[1] if where.transient[0] == mail.uid else 0
        count = max(self.transient_failures.get(key, 0), stored) + 1  # as ``_transient``
        located = {"mailbox": where.mailbox, "folder": where.folder, "uid": mail.uid}
        if count < TRANSIENT_ATTEMPTS:
            # Committed with the part (what came before the mail): counted once, even when
            # the part is rolled back and written again mail by mail (BatchWriteError).
            tx.note_transient_attempts(*where.folder_key, mail.uid, count)
            return None
        why, trace = _why(where, mail, exc)
        location = f"{where.mailbox}/{where.folder} UIDVALIDITY {where.uidvalidity} UID {mail.uid}"
        detail = f"{location}: {reason or why}; its quarantine row refused {count} times in a row"
        for text in (f"{detail}\n{trace}", detail):
            try:
                with tx.savepoint():
                    tx.add_event(None, EventKind.PASSED_OVER, text)
            except Exception as refused:
                log.error("passed-over event refused", exc_info=refused, extra=located)
                continue
            log.error("passed over, its quarantine refused", extra={**located, "attempts": count})
            self._forget_attempts(tx, where, mail.uid)
            passed = Unrecorded.PASSED_OVER
            return Outcome(where.mailbox, mail.uid, passed, (f"{passed}:{why}",), None, "", None)
        return None

    def _counted(self, where: Where, uid: int) -> bool:
        """Whether this mail failed before (its attempts counted, in its folder's row or in
        memory). Recorded now — quarantined at its last attempt, passed over, or simply
        recorded — it ends its part, which commits: should a later mail of the part roll
        it back (a transient error), the mail's outcome would go with it, and that mail's
        count would take its place in the folder's one slot. A cron of ``poll --once``
        (nothing in memory) would then start the first mail again from its first attempt,
        the second never reached past it: two mails failing every time, for ever."""
        return where.transient[0] == uid or (*where.folder_key, uid) in self.transient_failures

    def _forget_attempts(self, tx: Transaction, where: Where, uid: int) -> None:
        """A mail recorded (or quarantined) leaves the count of its transient errors."""
        if self.transient_failures:
            self.transient_failures.pop((*where.folder_key, uid), None)
        if where.transient[0] == uid:
            tx.note_transient_attempts(*where.folder_key, None)

    def _keep_attempts(self, where: Where, uid: int, count: int) -> None:
        """After the part's rollback, the count of a mail's transient errors in its folder's
        row, for the next poll of any process; should the database refuse this too, the
        count stays in this process's memory (``transient_failures``)."""
        try:
            with self.store.transaction() as tx:
                tx.note_transient_attempts(*where.folder_key, uid, count)
        except Exception as exc:
            if transient_reason(exc) is None:
                raise
            log.debug("transient error count not written", extra={"mailbox": where.mailbox})

    def _transient(self, where: Where, mail: IncomingMail, exc: Exception) -> str | None:
        """``exc`` met while recording ``mail``: None if it is the mail's own error. A
        transient database error raises TransientStoreError instead (the part is rolled
        back whole, and the mail read again at the next poll), until this mail met one
        TRANSIENT_ATTEMPTS times in a row: then the reason it is quarantined with, for an
        error that comes back at every read must not hold its folder up for ever. A
        read-only database (``is_read_only``) counts no attempt: it is no mail's."""
        reason = transient_reason(exc)
        if reason is None:
            return None
        if is_read_only(exc):
            # The whole database refuses writes (a standby, default_transaction_read_only):
            # every mail meets it, none is the cause. Counted, the mail at the head of the
            # folder would be quarantined, then passed over, by an outage of three polls.
            raise TransientStoreError(
                f"mailbox {where.mailbox}, folder {where.folder}: the database could not"
                f" record UID {mail.uid} now ({reason}); nothing of its batch was committed,"
                " the next poll reads it again"
            ) from exc
        key = (*where.folder_key, mail.uid)
        stored = where.transient[1] if where.transient[0] == mail.uid else 0
        count = max(self.transient_failures.get(key, 0), stored) + 1
        if count < TRANSIENT_ATTEMPTS:
            self.transient_failures[key] = count
            raise _AttemptFailed(
                f"mailbox {where.mailbox}, folder {where.folder}: the database could not"
                f" record UID {mail.uid} now ({reason}; attempt {count} of"
                f" {TRANSIENT_ATTEMPTS}); nothing of its batch was committed, the next poll"
                " reads it again",
                mail.uid,
                count,
            ) from exc
        log.warning(
            "database error again and again: mail quarantined",
            extra={"mailbox": where.mailbox, "folder": where.folder, "uid": mail.uid},
        )
        return f"error:quarantined after {count} database errors in a row: {reason}"

    def _in_savepoint(
        self, tx: Transaction, rec: Direct, where: Where, prepared: Prepared
    ) -> Outcome:
        with rec.mail(), tx.savepoint():
            if prepared.parsed is None:
                raise prepared.error or ValueError("unparsed mail")
            return self._record(rec, where, prepared.mail, prepared.parsed, None, prepared.routing)

    @contextmanager
    def _alone(self) -> Iterator[Direct]:
        """A transaction of its own (a retried mail's quarantine)."""
        with self.store.transaction() as tx:
            yield Direct(tx)

    def _record(
        self,
        rec: Direct,
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage,
        existing: int | None,
        ahead: RoutingAhead | None = None,
    ) -> Outcome:
        """A copy of a recorded mail, or the AR decision and what follows from it.

        A copy in this mailbox first, then the same mail handled in another of our
        mailboxes (To one, Cc the other: the same SMTP copy, same fingerprint). A copy
        there left for a person (no Return-Path: ``FirstCopy.waiting``) is this one's
        original only if this one is left for a person too; handled here (its delivery
        had a Return-Path), this one takes its key over (``_claim``)."""
        found = (parsed.message_id, parsed.fingerprint, parsed.content_hash)
        original = rec.duplicate(where.mailbox, *found, exclude=existing)
        if original is not None:
            return self._duplicate(rec, where, mail, parsed, original, existing)
        first = rec.first_copy(parsed.fingerprint) if parsed.fingerprint else None
        elsewhere = first is not None and first.id != existing
        if first is not None and elsewhere and not first.waiting:
            return self._duplicate(rec, where, mail, parsed, first.id, existing, _copy_of(first))
        policy = self._policy(rec, where.mailbox, mail, parsed)
        if first is not None and elsewhere and _left_for_person(*_decided(policy.decision)):
            # Left for a person there and here: one citizen's mail, counted and listed once.
            return self._duplicate(rec, where, mail, parsed, first.id, existing, _copy_of(first))
        outcome = self._decide(rec, where, mail, parsed, existing, policy, ahead, first)
        if outcome.decision == Decision.SKIP:  # a bounce of our mail? the agents must know
            note_bounce(rec, mail.raw, outcome.reasons, outcome.message_pk, mail.internaldate)
        return outcome

    # -----------------------------------------------------------------------------------
    def _sending(
        self, where: Where, mail: IncomingMail, decision: ArDecision
    ) -> tuple[bool, ArStatus | None]:
        """Whether what the mail is owed is sent now, and if not, why its owed AR is not
        (``Where.withheld``: a UIDVALIDITY change, a restore). A backfill (send=False)
        sends nothing, and records every owed AR as backfilled, whenever the mail came."""
        withheld = where.withheld(mail) if decision.send and self.send else None
        return self.send and withheld is None, withheld

    def _decide(
        self,
        rec: Direct,
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage,
        existing: int | None,
        policy: Policy,
        ahead: RoutingAhead | None = None,
        first: FirstCopy | None = None,
    ) -> Outcome:
        """What follows from the AR decision: a reference, the routing, the mails, the key."""
        probe, decision, parent_pk = policy
        handling = Handling()
        send, withheld = self._sending(where, mail, decision)
        if decision.send and decision.recipient:
            handling = self._acknowledge(
                rec, where.mailbox, mail, parsed, decision.recipient, probe, ahead, send
            )
        plan = handling.plan
        row = new_message(
            where,
            mail,
            parsed,
            _decision_name(decision),
            decision.reasons,
            in_reply_to=parsed.in_reply_to[0] if parsed.in_reply_to else None,
            reference=handling.reference,
            parent_id=parent_pk,
            ar_status=_ar_status(plan, decision, send, withheld),
            ar_message_id=plan.mails[0].message_id if plan is not None else None,
            language=_language(handling, decision, parsed),
            sender_name=sender_name(parsed, self.config.policy.contact_form_relays),
            **self._addresses(parsed, decision),
            transferred=int(plan is not None and plan.transferred_to is not None),
            probe=int(probe),
            **_routing_columns(handling.routing, self._own(where.mailbox), probe),
        )
        message_pk = _save(rec, row, existing)
        _claim(rec, parsed, row, message_pk, first)
        if row.decision == Decision.FOLLOW_UP and parent_pk is not None:
            _written_again(rec, parent_pk, message_pk, row.received_at)
        rec.events(
            message_pk,
            (EventKind.RECEIVED, parsed.content_type),
            (_decision_event(row), ",".join(decision.reasons)),
            *_plan_events(plan),
        )
        if plan is not None:
            _queue(rec, message_pk, mail, plan)
        return Outcome(
            where.mailbox,
            mail.uid,
            row.decision,
            decision.reasons,
            handling.reference or decision.follow_up_of,
            parsed.subject,
            message_pk,
            _route_label(plan, handling.routing),
        )

    def _addresses(self, parsed: ParsedMessage, decision: ArDecision) -> dict[str, Any]:
        """The row's ``sender`` (where the AR goes) and ``answer_addresses``: the citizen's
        From and Reply-To where an agent's answer may go too, when they are not the sender;
        kept for an acknowledged mail only, whose answers are looked for (``app/sent``)."""
        if not decision.send:
            return {"sender": decision.recipient}
        policy = self.config.policy
        found = answer_addresses(parsed, policy.contact_form_relays, policy.answers_from)
        others = tuple(a for a in found if a != decision.recipient)
        return {"sender": decision.recipient, "answer_addresses": others}

    def _own(self, mailbox: str) -> str:
        return self.config.mailboxes[mailbox].service

    def _acknowledge(
        self,
        rec: Direct,
        mailbox: str,
        mail: IncomingMail,
        parsed: ParsedMessage,
        recipient: str,
        probe: bool = False,
        ahead: RoutingAhead | None = None,
        send: bool = True,
    ) -> Handling:
        """A reference, the routing and what to send (nothing when backfilling). A probe
        is the mailbox's own service's: never routed, never forwarded. ``ahead``: the
        facts already read and the decision made by the routing helper (a large batch)."""
        # The year of Paris's date of receipt, the one the AR prints: not of the zone the
        # IMAP server stamps INTERNALDATE in (on UTC, New Year's first hour was last year's).
        year = mail.internaldate.astimezone(self.calendar.zone).year
        reference = rec.reference(self.config.sender.reference_prefix, year)
        facts = ahead.facts if ahead is not None else routing_input(self.config, mailbox, parsed)
        routing: RoutingDecision | None = None
        if self.routing is not None and not probe:
            routing = ahead.decision(self.routing) if ahead else decide(facts, self.routing)
        if not (self.send and send):
            return Handling(reference, routing, facts.language)
        received = Received(
            mailbox,
            mail.raw,
            parsed,
            mail.internaldate,
            reference,
            recipient,
            facts.language,
            mail.size,
        )
        return Handling(reference, routing, facts.language, self.planner.plan(received, routing))

    def _duplicate(
        self,
        rec: Direct,
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage,
        original: int,
        existing: int | None,
        detail: str | None = None,
    ) -> Outcome:
        """A second copy of a recorded mail (same Message-ID and same content): recorded
        as such, linked to the first, and never acknowledged again. ``detail``: the
        event's, naming the other mailbox and reference for a copy in another mailbox."""
        row = new_message(
            where,
            mail,
            parsed,
            Decision.DUPLICATE,
            (DUPLICATE_REASON,),
            in_reply_to=parsed.in_reply_to[0] if parsed.in_reply_to else None,
            parent_id=original,
        )
        message_pk = _save(rec, row, existing)
        rec.events(message_pk, (EventKind.DUPLICATE, detail or f"copy of message {original}"))
        return Outcome(
            where.mailbox,
            mail.uid,
            Decision.DUPLICATE,
            (DUPLICATE_REASON,),
            None,
            parsed.subject,
            message_pk,
        )

    def _policy(
        self, rec: Direct, mailbox: str, mail: IncomingMail, parsed: ParsedMessage
    ) -> Policy:
        """The AR decision on this mail (and whether it is a probe, and the message it is
        a follow-up of)."""
        probe = self.probe is not None and is_probe(parsed, *self.probe)
        context, parent_pk = self._context(rec, mailbox, parsed, mail.internaldate, probe)
        return Policy(probe, decide_ar(parsed, context), parent_pk)

    def _context(
        self,
        rec: Direct,
        mailbox: str,
        parsed: ParsedMessage,
        received: datetime,
        probe: bool = False,
    ) -> tuple[PolicyContext, int | None]:
        """The policy's facts about this mail that only the database knows. A probe is
        never rate-limited nor a relance: every one of them must get its AR."""
        if probe:
            return policy_context(self.config, mailbox, 0, None), None
        policy = self.config.policy
        recipient = reply_address(parsed, policy.contact_form_relays, policy.answers_from)
        # The window ends at this mail's arrival, not now: a backlog read days later (a
        # stopped poller, a retry) limits a robot's ARs as a live poll would have.
        window = timedelta(hours=policy.rate_limit.window_hours)
        recent = rec.recent_ars(mailbox, recipient, received - window, received) if recipient else 0
        subject_ref = find_reference(parsed.subject, self.config.sender.reference_prefix)
        thread = rec.thread(mailbox, parsed.thread_ids, subject_ref)
        if thread is None and recipient:
            thread = self._same_request(rec, mailbox, recipient, parsed.subject, received)
        context = policy_context(self.config, mailbox, recent, thread[1] if thread else None)
        return context, thread[0] if thread else None

    def _same_request(
        self, rec: Direct, mailbox: str, sender: str, subject: str, received: datetime
    ) -> tuple[int, str] | None:
        """A relance without threading: same sender, similar subject, within 10 working days,
        on a message still unanswered."""
        # Measured between the two mails' arrivals, not to now: a backlog or a backfill read
        # later finds the same relances as a live poll.
        since = self.calendar.window_start(received, RELANCE_WORKING_DAYS)
        for pk, reference, received_at, earlier in rec.unanswered(mailbox, sender, since):
            recent = self.calendar.delay(received_at, received) <= RELANCE_WORKING_DAYS
            if recent and similar_subjects(subject, earlier):
                return pk, reference
        return None

    def _quarantine(
        self,
        scope: Callable[[], AbstractContextManager[Direct]],
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage | None,
        exc: Exception,
        existing: int | None,
        reason: str | None = None,
    ) -> Outcome | None:
        """Record the mail as quarantined, in ``scope``: a savepoint of the batch, or a
        transaction of its own (a retry). ``reason``: the row's, when not ``exc``'s.

        The first attempt keeps what was parsed (Message-ID, subject) for the listings;
        should the database refuse even that, a row with only the mail's location and
        hash follows. None if that fails too: the folder's high-water mark stays below this
        mail, which is read again (``_unrecordable`` counts the attempts).
        RepeatedRequestError (a mail passed over that another retry recorded meanwhile)
        is not a refusal: it goes up, so that the retry says so, not "it stays passed over".
        """
        located = {"mailbox": where.mailbox, "folder": where.folder, "uid": mail.uid}
        why, trace = _why(where, mail, exc)
        reason = reason or why
        log.error("quarantined", exc_info=None if mail.refused else exc, extra=located)
        attempts = (parsed, None) if parsed is not None else (None,)
        for known in attempts:
            row = new_message(where, mail, known, Decision.QUARANTINE, (reason,))
            try:
                with scope() as rec:
                    message_pk = _save(rec, row, existing)
                    rec.events(message_pk, (EventKind.QUARANTINED, trace))
            except RepeatedRequestError:
                # A mail passed over: a concurrent retry recorded it first (its claim in
                # ``_claiming``); nothing was refused, and nothing is to be recorded here.
                raise
            except Exception as refused:
                log.error("quarantine row refused", exc_info=refused, extra=located)
                continue
            return Outcome(
                where.mailbox,
                mail.uid,
                Decision.QUARANTINE,
                (reason,),
                None,
                row.subject,
                message_pk,
            )
        return None


class _AttemptFailed(TransientStoreError):
    """A mail's recording met a transient database error (``Pipeline._transient``): its
    UID and the count of its attempts, written to its folder's row once rolled back."""

    def __init__(self, message: str, uid: int, count: int) -> None:
        super().__init__(message)
        self.uid = uid
        self.count = count


@contextmanager
def transient_failure(mailbox: str, folder: str, what: str) -> Iterator[None]:
    """A transient database error in the block (``mailbot.store.errors``) becomes
    TransientStoreError, saying where and what happened: the block's transaction was rolled
    back, and the next poll does the same work again (reads the same mail)."""
    try:
        yield
    except TransientStoreError:
        raise  # a mail's own (``Pipeline._transient``), which says more
    except Exception as exc:
        reason = transient_reason(exc)
        if reason is None:
            raise
        raise TransientStoreError(
            f"mailbox {mailbox}, folder {folder}: the database could not {what} now"
            f" ({reason}); nothing of it was committed, the next poll does it again"
        ) from exc


def _still_quarantined(mailbox: str, existing: int, exc: Exception) -> None:
    """A quarantined mail processed again (``existing``) met a transient database error:
    its transaction was rolled back and it stays quarantined as it was (same reason, no
    new event, nothing counted): TransientStoreError, for the retry to be asked again."""
    reason = transient_reason(exc)
    if reason is not None:
        raise TransientStoreError(
            f"mailbox {mailbox}: mail #{existing} was not processed again: the database"
            f" could not record it now ({reason}); it stays quarantined as it was, retry later"
        ) from exc


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


def _why(where: Where, mail: IncomingMail, exc: Exception) -> tuple[str, str]:
    """A quarantined mail's reason and its event's detail: the traceback of what raised,
    or, for a mail the server would not read, its answer and where the mail is (a person
    fixing the store needs the folder, UIDVALIDITY and UID; ``quarantine retry`` uses them)."""
    if not mail.refused:
        return f"error:{safe_error(exc)}"[:300], safe_traceback(exc)
    located = f"{where.mailbox}/{where.folder} UIDVALIDITY {where.uidvalidity} UID {mail.uid}"
    detail = f"the server refused to read {located}: {mail.refused}"
    return f"fetch-error:{mail.refused}"[:300], detail


def _content_hash(where: Where, mail: IncomingMail, parsed: ParsedMessage | None) -> str:
    """The mail's hash; for a mail the server would not read, a hash of its location, not
    of its (unknown) bytes, so that it never equals another mail's (sha256 of b"" would be
    every other unread mail's, and an empty mail's: found as their duplicate)."""
    if parsed is not None:
        return parsed.content_hash
    if mail.refused:
        location = f"unread:{where.mailbox}/{where.folder}/{where.uidvalidity}/{mail.uid}"
        return hashlib.sha256(location.encode()).hexdigest()
    return hashlib.sha256(mail.raw).hexdigest()


def new_message(
    where: Where,
    mail: IncomingMail,
    parsed: ParsedMessage | None,
    decision: Decision,
    reasons: tuple[str, ...],
    **decided: Any,
) -> NewMessage:
    """The one row recorded about a mail, whatever was decided (``decided``: the columns a
    decision fills). ``parsed`` is None when even parsing failed (quarantine)."""
    return NewMessage(
        mailbox=where.mailbox,
        folder=where.folder,
        uidvalidity=where.uidvalidity,
        uid=mail.uid,
        message_id=parsed.message_id if parsed else None,
        content_hash=_content_hash(where, mail, parsed),
        fingerprint=parsed.fingerprint if parsed else None,
        received_at=mail.internaldate,
        sender=decided.pop("sender", None),
        subject=parsed.subject if parsed else "",
        in_reply_to=decided.pop("in_reply_to", None),
        decision=decision,
        reasons=reasons,
        size=max(len(mail.raw), mail.size),
        defects=(*(parsed.defects if parsed else ()), *mail.defects),
        thread_references=_thread_references(parsed),
        **decided,
    )


def _thread_references(parsed: ParsedMessage | None) -> str | None:
    """What a reply's References continue (RFC 5322 §3.6.4), bounded: Message-IDs only."""
    ids = parent_thread(parsed.references, parsed.in_reply_to) if parsed else ()
    return " ".join(ids) or None


def _claim(
    rec: Direct,
    parsed: ParsedMessage,
    row: NewMessage,
    message_pk: int,
    first: FirstCopy | None = None,
) -> None:
    """The mail handled by this row: another mailbox's copy is its duplicate (SameMailError
    if such a copy took it first, even in another worker's transaction).

    A skip for reasons of this mailbox only claims nothing: a copy not addressed to it (To
    the foreigners' mailbox, Bcc the general one, read first) or over its rate limit; the
    copy in the mailbox it was written to is still decided, and acknowledged.

    A row left for a person (skipped only for lack of a Return-Path) claims the mail: the
    other mailbox's copy left for a person too is its duplicate, and the mail counts once
    in the indicators and the list of mail awaiting a person. But a copy there that is
    handled (its delivery had a Return-Path: acknowledged) takes the key over (``first``,
    waiting) and this row becomes its duplicate: one AR, one mail counted. Retried (after
    ``missing_return_path: use_from``), the row keeps its own key."""
    if not parsed.fingerprint or _skipped_here(row):
        return
    if first is not None and first.id == message_pk:
        return  # a retry of the row holding the key: it still does
    if first is not None and first.waiting:
        rec.take_over(parsed.fingerprint, first.id, message_pk)
        reference = row.reference or "no reference"
        detail = f"copy of message {message_pk} in mailbox {row.mailbox} ({reference})"
        rec.events(first.id, (EventKind.DUPLICATE, detail))
        return
    rec.claim(parsed.fingerprint, message_pk)


def _skipped_here(row: NewMessage) -> bool:
    """A skip that concerns this mailbox's copy only (``_THIS_MAILBOX_ONLY``), not a mail
    left for a person (``_left_for_person``), which the whole mail is."""
    return (
        row.decision == Decision.SKIP
        and set(row.reasons) <= _THIS_MAILBOX_ONLY
        and not _left_for_person(row.decision, row.reasons)
    )


def _left_for_person(decision: Decision, reasons: Sequence[str]) -> bool:
    """Skipped only for lack of a Return-Path: a citizen's mail that awaits a person
    (``store.UNHANDLED_REASONS``), counted in the indicators."""
    return decision == Decision.SKIP and tuple(reasons) == (Attention.NO_RETURN_PATH,)


def _copy_of(first: FirstCopy) -> str:
    """The duplicate event's detail for a copy of ``first``, recorded in another mailbox."""
    reference = first.reference or "no reference"
    if first.waiting:
        reference += ", left for a person: no Return-Path"
    return f"copy of message {first.id} in mailbox {first.mailbox} ({reference})"


def _written_again(rec: Direct, parent_pk: int, message_pk: int, received_at: datetime) -> None:
    """The citizen wrote again about ``parent_pk`` (the follow-up ``message_pk``): one more
    relance while it is unanswered, and a message an agent closed as needing no reply is
    reopened (back in the queue, the alerts and the figures: left closed, nobody would see
    the relance). After an answer it is no relance and the answer still counts, but it is
    mail for an agent to read (the citizen contests a re-orientation, sends the documents
    asked for, or thanks): the message is back in its service's queue as new mail from the
    citizen (``written_again_at``) until an agent replies again or marks it read. Thanks
    are not told apart by their text: the agent clears them in one click."""
    rec.tx.count_relance(parent_pk, received_at)
    if rec.tx.reopen_closed(parent_pk):
        detail = json.dumps({"follow_up": message_pk})
        rec.events(parent_pk, (EventKind.REOPENED, detail))
    elif rec.tx.mark_written_again(parent_pk, received_at):
        detail = json.dumps({"follow_up": message_pk, "answered": True})
        rec.events(parent_pk, (EventKind.REOPENED, detail))


def _log(outcome: Outcome) -> None:
    """One line per mail, at DEBUG: the poller logs one summary per batch at INFO."""
    log.debug(
        "message",
        extra={
            "mailbox": outcome.mailbox,
            "uid": outcome.uid,
            "reference": outcome.reference or "-",
            "decision": outcome.decision,
            "reason": ",".join(outcome.reasons),
        },
    )


def _queue(rec: Direct, message_pk: int, mail: IncomingMail, plan: Plan) -> None:
    if plan.reoriented_to:
        # Answered by mailbot on receipt: a 0-day delay, whenever the mail is processed.
        rec.replied(message_pk, mail.internaldate, REORIENTATION_REPLY)
    rec.queue(message_pk, plan.mails)


def _save(rec: Direct, row: NewMessage, existing: int | None) -> int:
    if existing is None:
        return rec.record(row)
    rec.tx.update_message(existing, row)
    return existing


@contextmanager
def _staged(rec: Direct, tx: Transaction) -> Iterator[Direct]:
    """A mail's own savepoint in the batch, its writes staged with it (a quarantine)."""
    with rec.mail(), tx.savepoint():
        yield rec


# One encoder for every row: ``json.dumps`` with an option builds one per call (~7 µs).
_ROUTING_JSON = json.JSONEncoder(ensure_ascii=False)


def _routing_columns(
    routing: RoutingDecision | None, own: str, probe: bool = False
) -> dict[str, Any]:
    """The row's routing columns. A weak decision ("to check") keeps the mail at its
    mailbox's own service; the suggestion is kept in the routing JSON. A probe is the
    mailbox's own service's."""
    if probe:
        return {"service": own}
    if routing is None:
        return {}
    matched = [{"rule": hit.rule, "detail": hit.detail} for hit in routing.rule_hits if hit.matched]
    recorded: dict[str, object] = {"hits": matched, "scores": dict(routing.scores)}
    if routing.model:  # the model's view, and its combination with the rules
        recorded |= {"model": routing.model, "confidence": dict(routing.confidence)}
    if routing.to_check:
        recorded |= {
            "to_check": True,
            "suggested": {"service": routing.service, "reorient": routing.reorient},
        }
    return {
        "service": routing.recorded_service(own),
        "category": routing.category,
        "priority": routing.priority,
        "reorient": None if routing.to_check else routing.reorient,
        "routing": _ROUTING_JSON.encode(recorded),
        "to_check": int(routing.to_check),
    }


def _route_label(plan: Plan | None, routing: RoutingDecision | None) -> str:
    if plan is not None and plan.transferred_to:
        return f"→ {plan.transferred_to}"
    if plan is not None and plan.reoriented_to:
        return f"↪ {plan.reoriented_to}"
    if routing is not None and routing.to_check:
        return f"? {routing.service} (to check)"
    return routing.service if routing else ""


def _plan_events(plan: Plan | None) -> list[tuple[EventKind, str]]:
    if plan is None:
        return []
    found = []
    if plan.transferred_to:
        found.append((EventKind.TRANSFERRED, plan.transferred_to))
    if plan.reoriented_to:
        # Answered at once by mailbot: counted as an automatic reply with a 0-day delay.
        found.append((EventKind.REORIENTED, plan.reoriented_to))
    return found


def _ar_status(
    plan: Plan | None, decision: ArDecision, send: bool, withheld: ArStatus | None
) -> ArStatus:
    if plan is not None:
        return ArStatus.PENDING
    if decision.send and not send:
        return withheld or ArStatus.BACKFILL
    return ArStatus.NONE


def _decision_event(row: NewMessage) -> EventKind:
    """The event of the decision; for a mail acknowledged by the database lost before a
    restore, the AR it presumably sent (the console's thread says so, not « préparé »)."""
    if row.ar_status == ArStatus.RESTORED:
        return EventKind.AR_PRESUMED_SENT
    return DECISION_EVENTS[row.decision]


def _language(handling: Handling, decision: ArDecision, parsed: ParsedMessage) -> str | None:
    """The language acknowledging detected; a follow-up's detected too (it gets no AR, but
    the console shows its subject to agents and marks it with its language, RGAA 8.7)."""
    if handling.language is None and decision.follow_up_of:
        return mail_language(parsed)
    return handling.language


def _decided(decision: ArDecision) -> tuple[Decision, tuple[str, ...]]:
    return _decision_name(decision), decision.reasons


def _decision_name(decision: ArDecision) -> Decision:
    if decision.send:
        return Decision.ACKNOWLEDGE
    if decision.follow_up_of:
        return Decision.FOLLOW_UP
    return Decision.SKIP
