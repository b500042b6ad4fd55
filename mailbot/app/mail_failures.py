"""A mail whose recording raised. Its own error quarantines it, with the traceback, under
a savepoint of its batch (or in a transaction of its own for a retry). A transient
database error is counted against the mail: the part is rolled back and read again, up to
TRANSIENT_ATTEMPTS in a row, then the mail is quarantined. A mail whose quarantine row the
database refuses too is passed over at its last attempt (``_unrecordable``). The
quarantined and passed-over mail is listed, retried and dismissed by ``app/quarantine``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from mailbot.app.folders import Where
from mailbot.app.intake_setup import IntakeSetup
from mailbot.app.mail_row import new_message, save_row
from mailbot.app.recording import Direct
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.message import ParsedMessage
from mailbot.core.statuses import Decision, EventKind, Unrecorded
from mailbot.errors import RepeatedRequestError, TransientStoreError
from mailbot.logs import safe_error, safe_traceback
from mailbot.store import Transaction
from mailbot.store.errors import is_read_only, transient_reason

log = logging.getLogger(__name__)
# A mail whose recording meets a transient database error this many times in a row is
# quarantined (its reason says so) instead of failing its folder's polls for ever.
TRANSIENT_ATTEMPTS = 3


class MailFailures(IntakeSetup):
    """A mail's quarantine, its transient errors counted, its passing over."""

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
            raise AttemptFailed(
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
                    message_pk = save_row(rec, row, existing)
                    rec.events(message_pk, (EventKind.QUARANTINED, trace))
            except RepeatedRequestError:
                # A mail passed over: a concurrent retry recorded it first (its claim in
                # ``Retries._claiming``); nothing was refused, nothing is to be recorded here.
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


class AttemptFailed(TransientStoreError):
    """A mail's recording met a transient database error (``Pipeline._transient``): its
    UID and the count of its attempts, written to its folder's row once rolled back."""

    def __init__(self, message: str, uid: int, count: int) -> None:
        super().__init__(message)
        self.uid = uid
        self.count = count


def _why(where: Where, mail: IncomingMail, exc: Exception) -> tuple[str, str]:
    """A quarantined mail's reason and its event's detail: the traceback of what raised,
    or, for a mail the server would not read, its answer and where the mail is (a person
    fixing the store needs the folder, UIDVALIDITY and UID; ``quarantine retry`` uses them)."""
    if not mail.refused:
        return f"error:{safe_error(exc)}"[:300], safe_traceback(exc)
    located = f"{where.mailbox}/{where.folder} UIDVALIDITY {where.uidvalidity} UID {mail.uid}"
    detail = f"the server refused to read {located}: {mail.refused}"
    return f"fetch-error:{mail.refused}"[:300], detail
