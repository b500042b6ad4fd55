"""Replies to citizens found in Sent folders (or a tracking mailbox): the response times.

A mail in a Sent folder is a reply to a tracked message when it threads to it
(In-Reply-To/References) or carries its reference in the subject, and is addressed to
that message's citizen: its sender (the Return-Path, where the AR went), or the From or
Reply-To an agent's mail client answers (``core.policy.answer_addresses``). mailbot's own
mail (ARs, notices, forwards) is not a reply. Each reply is recorded as a `reply` event at
its INTERNALDATE, with its signature check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa

from mailbot.app.folders import transient_failure
from mailbot.config import Config
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.message import ParsedMessage, parse_message
from mailbot.core.policy import LOOP_HEADER, find_reference
from mailbot.core.signature import check_signature
from mailbot.core.statuses import EventKind, SentVerdict
from mailbot.errors import LeaseLostError, UnreadableMailError
from mailbot.logs import safe_error, safe_traceback
from mailbot.store import Store

log = logging.getLogger(__name__)

# (text, html, required elements) → (complete, missing elements): see signature_check.
CheckSignature = Callable[[str, str, Sequence[str]], tuple[bool, tuple[str, ...]]]
IGNORED = SentVerdict.IGNORED


def ours(parsed: ParsedMessage, message_id_domain: str) -> bool:
    """mailbot's own outgoing mail, which may be copied into Sent by the server."""
    domain = (parsed.message_id or "").rstrip(">").rsplit("@", 1)[-1].lower()
    auto = any(v.split(";")[0].strip().lower() != "no" for v in parsed.header("auto-submitted"))
    return parsed.has_header(LOOP_HEADER) or auto or domain == message_id_domain.lower()


def signature_check(text: str, html: str, required: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
    result = check_signature(text, html or None, required)
    return result.complete, tuple(result.missing)


class SentPipeline:
    """Same shape as Pipeline (start_folder, process_batch), so MailboxPoller drives it too."""

    def __init__(self, config: Config, store: Store, check: CheckSignature) -> None:
        self.config = config
        self.store = store
        self.check = check
        self.required = tuple(config.signature.required)

    def start_folder(
        self, mailbox: str, folder: str, uidvalidity: int, existing: Callable[[], int] = int
    ) -> int:
        """A first poll reads what the folder already holds: it sends nothing, and replies to
        messages the database tracks are worth recording (as backfill does)."""
        with (
            transient_failure(mailbox, folder, "read the folder's state"),
            self.store.transaction() as tx,
        ):
            state = tx.folder_state(mailbox, folder)
            if state is not None and state.uidvalidity == uidvalidity:
                return state.last_uid
            tx.save_folder_state(mailbox, folder, uidvalidity, 0)
            return 0

    def folder_read(
        self, mailbox: str, folder: str, uidvalidity: int, searched_at: datetime
    ) -> None:
        """Nothing to keep: a Sent folder read again sends nothing (``start_folder``)."""

    def process_batch(
        self, mailbox: str, folder: str, uidvalidity: int, mails: Sequence[IncomingMail]
    ) -> list[Outcome]:
        """Each mail in its own transaction: a Sent folder holds few mails a minute."""
        return [self.process(mailbox, folder, uidvalidity, mail) for mail in mails]

    def process(self, mailbox: str, folder: str, uidvalidity: int, mail: IncomingMail) -> Outcome:
        """Record a reply if this Sent mail is one; a mail that cannot be read is logged and
        passed over (with an event), so it never blocks the folder. A database that cannot
        be written is no fault of the mail: that error stops the poll instead (a transient
        one as TransientStoreError, logged as the database's by the poller)."""
        with transient_failure(mailbox, folder, f"record the sent mail UID {mail.uid}"):
            return self._passed_over_if_unreadable(mailbox, folder, uidvalidity, mail)

    def _passed_over_if_unreadable(
        self, mailbox: str, folder: str, uidvalidity: int, mail: IncomingMail
    ) -> Outcome:
        try:
            return self._process(mailbox, folder, uidvalidity, mail)
        except LeaseLostError:
            raise  # another worker's folder now: nothing recorded, it reads this mail again
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            # The database, not the mail (locked, gone): passed over, the agent's reply was
            # lost for good and its message counted overdue. The poll fails, the mark stays
            # below this mail, and the next poll reads it again.
            raise
        except Exception as exc:
            log.error(
                "sent mail unreadable, passed over",
                exc_info=True,
                extra={"mailbox": mailbox, "folder": folder, "uid": mail.uid},
            )
            with self.store.transaction() as tx:
                tx.save_folder_state(mailbox, folder, uidvalidity, mail.uid)
                tx.add_event(
                    None,
                    EventKind.SENT_UNREADABLE,
                    f"{mailbox}/{folder} UID {mail.uid}: " + safe_traceback(exc),
                )
            return self._outcome(mailbox, mail, SentVerdict.ERROR, safe_error(exc), None)

    def _process(self, mailbox: str, folder: str, uidvalidity: int, mail: IncomingMail) -> Outcome:
        if mail.refused:  # the server would not read it: passed over as unreadable
            raise UnreadableMailError(f"the server refused to read it: {mail.refused}")
        parsed = parse_message(mail.raw)
        with self.store.transaction() as tx:
            tx.save_folder_state(mailbox, folder, uidvalidity, mail.uid)
            if ours(parsed, self.config.sender.message_id_domain):
                return self._outcome(mailbox, mail, IGNORED, "mailbot's own mail", None)
            reference = find_reference(parsed.subject, self.config.sender.reference_prefix)
            thread = tx.acknowledged_in_thread(None, parsed.thread_ids, reference)
            if thread is None:
                return self._outcome(mailbox, mail, IGNORED, "not a tracked thread", None)
            message_pk, ref = thread
            if not tx.answer_addresses_of(message_pk) & {*parsed.to, *parsed.cc}:
                return self._outcome(mailbox, mail, IGNORED, "not sent to the citizen", ref)
            if parsed.message_id and tx.has_event(EventKind.REPLY, parsed.message_id):
                return self._outcome(mailbox, mail, SentVerdict.DUPLICATE, "already recorded", ref)
            complete, missing = self.check(parsed.body_text, parsed.body_html, self.required)
            detail = {
                "source": f"{mailbox}/{folder}",
                "message_id": parsed.message_id,
                "signature_complete": complete,
                "missing": list(missing),
            }
            tx.record_reply(message_pk, mail.internaldate, complete, json.dumps(detail))
        reason = "complete signature" if complete else "signature lacks " + ", ".join(missing)
        return self._outcome(mailbox, mail, SentVerdict.REPLY, reason, ref)

    @staticmethod
    def _outcome(
        mailbox: str, mail: IncomingMail, decision: SentVerdict, reason: str, reference: str | None
    ) -> Outcome:
        log.info(
            "sent",
            extra={"mailbox": mailbox, "uid": mail.uid, "decision": decision, "reason": reason},
        )
        return Outcome(mailbox, mail.uid, decision, (reason,), reference, "", None)
