"""A mail processed again, in a transaction of its own: a quarantined row (``_again``, for
``Pipeline.process`` with ``existing``) or a mail passed over (``process_passed_over``: its
event claimed first). A transient database error leaves either as it was, for a retry
later."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from mailbot.app.deciding import Deciding, log_outcome
from mailbot.app.folders import Where
from mailbot.app.mail_failures import MailFailures
from mailbot.app.recording import Direct
from mailbot.core.incoming import IncomingMail, Outcome, PassedOver
from mailbot.core.message import ParsedMessage, parse_message
from mailbot.core.statuses import EventKind
from mailbot.errors import (
    RepeatedRequestError,
    SameMailError,
    StoreError,
    TransientStoreError,
    UnreadableMailError,
)
from mailbot.store.errors import transient_reason


class Retries(Deciding, MailFailures):
    """What a retry of a quarantined or passed-over mail runs."""

    def _read_again(self, mail: IncomingMail) -> ParsedMessage:
        """The mail read for a retry; one still unreadable raises, to be quarantined again
        with the server's new answer."""
        if mail.refused:
            raise UnreadableMailError(mail.refused)
        return self.relay_verifier.verify(mail.raw, parse_message(mail.raw))

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
        """A mail passed over (``MailFailures._unrecordable``) processed again, as
        ``process`` does a quarantined row: in a transaction of its own that first claims
        its event (RepeatedRequestError: another retry recorded it first) and ends by giving
        it to the row now recording the mail (``Transaction.resolve_passed_over``), which
        takes it off the lists. The folder's mark and attempt counts are left alone, for the
        poller went past the mail long ago. Raising again, it is quarantined so (the
        database may take its row now); a transient database error (TransientStoreError),
        or its quarantine row refused again (StoreError): nothing is recorded, no new event,
        the mail stays passed over as it was, for a retry later."""
        where = Where(passed.mailbox, passed.folder, passed.uidvalidity)
        scope = functools.partial(self._claiming, passed, where)
        parsed: ParsedMessage | None = None
        try:
            parsed = self._read_again(mail)
            outcome = twice_if_copied(lambda: self._passed_again(scope, where, mail, parsed))
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
        log_outcome(outcome)
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

    @contextmanager
    def _alone(self) -> Iterator[Direct]:
        """A transaction of its own (a retried mail's quarantine)."""
        with self.store.transaction() as tx:
            yield Direct(tx)


def still_quarantined(mailbox: str, existing: int, exc: Exception) -> None:
    """A quarantined mail processed again (``existing``) met a transient database error:
    its transaction was rolled back and it stays quarantined as it was (same reason, no
    new event, nothing counted): TransientStoreError, for the retry to be asked again."""
    reason = transient_reason(exc)
    if reason is not None:
        raise TransientStoreError(
            f"mailbox {mailbox}: mail #{existing} was not processed again: the database"
            f" could not record it now ({reason}); it stays quarantined as it was, retry later"
        ) from exc


def twice_if_copied(attempt: Callable[[], Outcome]) -> Outcome:
    """A retry's recording, run once more when another mailbox's copy of the mail committed
    meanwhile (SameMailError): the second run finds that copy and records a duplicate."""
    try:
        return attempt()
    except SameMailError:
        return attempt()
