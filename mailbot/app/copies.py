"""A mail's copies. The same mail recorded before (in this mailbox, or earlier in the
batch) is recorded as a duplicate; the same mail handled in another of our mailboxes (To
one, Cc the other) is found by its fingerprint, which the row handling the mail claims
(``claim_copy``) or takes over from a copy left for a person."""

from __future__ import annotations

from collections.abc import Sequence

from mailbot.app.folders import Where
from mailbot.app.intake_setup import IntakeSetup
from mailbot.app.mail_row import new_message, save_row
from mailbot.app.recording import Direct
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.message import ParsedMessage
from mailbot.core.statuses import DUPLICATE_REASON, Attention, Decision, EventKind
from mailbot.store import NewMessage
from mailbot.store.records import FirstCopy

# Skip reasons that say nothing of the mail itself, only of one mailbox's copy of it.
_THIS_MAILBOX_ONLY = frozenset({Attention.NO_RETURN_PATH, "not-addressed", "rate-limited"})


class Copies(IntakeSetup):
    """A copy of a recorded mail, recorded as such."""

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
        message_pk = save_row(rec, row, existing)
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


def claim_copy(
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
    left for a person (``is_left_for_person``), which the whole mail is."""
    return (
        row.decision == Decision.SKIP
        and set(row.reasons) <= _THIS_MAILBOX_ONLY
        and not is_left_for_person(row.decision, row.reasons)
    )


def is_left_for_person(decision: Decision, reasons: Sequence[str]) -> bool:
    """Skipped only for lack of a Return-Path: a citizen's mail that awaits a person
    (``store.UNHANDLED_REASONS``), counted in the indicators."""
    return decision == Decision.SKIP and tuple(reasons) == (Attention.NO_RETURN_PATH,)


def copy_detail(first: FirstCopy) -> str:
    """The duplicate event's detail for a copy of ``first``, recorded in another mailbox."""
    reference = first.reference or "no reference"
    if first.waiting:
        reference += ", left for a person: no Return-Path"
    return f"copy of message {first.id} in mailbox {first.mailbox} ({reference})"
