"""What the store reads and writes, as plain records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from mailbot.core.statuses import ArStatus, Decision, OutboxKind


@dataclass(frozen=True)
class FolderState:
    """A followed folder: its UIDVALIDITY and high-water UID, and the two moments that keep
    a UIDVALIDITY change from acknowledging old mail (``Transaction.folder_read``)."""

    uidvalidity: int
    last_uid: int
    read_until: datetime | None = None
    resync_before: datetime | None = None


class ResyncBounds(NamedTuple):
    """Until a folder is read whole, the moments before which its mail gets no AR: after a
    UIDVALIDITY change (``resync_before``), after a restore (``restored_before``)."""

    resync_before: datetime | None
    restored_before: datetime | None


@dataclass(frozen=True)
class NewMessage:
    """Everything recorded about one incoming mail, in one row."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    content_hash: str
    received_at: datetime
    sender: str | None
    subject: str
    in_reply_to: str | None
    decision: Decision
    reasons: Sequence[str]
    size: int
    defects: Sequence[str]
    reference: str | None = None
    parent_id: int | None = None
    ar_status: ArStatus = ArStatus.NONE
    ar_message_id: str | None = None
    service: str | None = None
    category: str | None = None
    priority: str | None = None
    reorient: str | None = None
    language: str | None = None
    routing: str | None = None
    sender_name: str | None = None
    transferred: int = 0
    fingerprint: str | None = None
    to_check: int = 0  # routing kept it at the mailbox's service: a weak decision
    probe: int = 0  # mailbot's own test mail (issue 16): out of the indicators
    answer_addresses: Sequence[str] = ()  # the citizen's other addresses an answer may go to
    thread_references: str | None = None  # core.message.parent_thread, space-separated


class FirstCopy(NamedTuple):
    """The row holding a mail's key (``Transaction.claimed_mail``): the copy recorded first
    in any mailbox. ``waiting``: it is a mail left for a person (no Return-Path, or
    quarantined by a failed retry; neither answered nor closed: ``schema.left_for_person``),
    which a copy handled elsewhere may take over."""

    id: int
    mailbox: str
    reference: str | None
    waiting: bool = False


@dataclass(frozen=True)
class OutboxItem:
    id: int
    message_pk: int | None
    kind: OutboxKind
    recipient: str
    envelope_from: str
    email_message_id: str
    raw: bytes
    attempts: int
    message_sender: str | None = None
    # Since when it waits in the queue: its creation, or an operator's requeue after it
    # failed (``outbox.max_queue_hours`` counts from it).
    queued_at: datetime | None = None


@dataclass(frozen=True)
class SentMail:
    """A mail of ours to a citizen a bounce may be about: its citizen's message, its kind,
    recipient and when it left (``sent_at``; None when not sent, or uncertain)."""

    outbox_id: int
    message_pk: int
    kind: OutboxKind
    recipient: str
    sent_at: datetime | None


def outbox_item(row: Any, *, raw: bool = True, message_sender: str | None = None) -> OutboxItem:
    """An outbox row as an OutboxItem (``raw=False``: without its bytes)."""
    return OutboxItem(
        id=row.id,
        message_pk=row.message_pk,
        kind=OutboxKind(row.kind),
        recipient=row.recipient,
        envelope_from=row.envelope_from,
        email_message_id=row.email_message_id,
        raw=(row.raw or b"") if raw else b"",
        attempts=row.attempts,
        message_sender=message_sender,
        queued_at=row.requeued_at or row.created_at,
    )


@dataclass(frozen=True)
class KnownRow:
    """A recorded message as the intake's lookups see it (duplicates, rate limit, threads,
    relances): read once per batch, or recorded by the batch itself (``Transaction.known``)."""

    id: int
    message_id: str | None
    fingerprint: str | None
    content_hash: str
    sender: str | None
    decision: str
    received_at: datetime
    reference: str | None
    ar_message_id: str | None
    subject: str
    first_reply_at: datetime | None


@dataclass(frozen=True)
class Dismissal:
    """A mail passed over closed by a person, handled outside mailbot: its
    ``passed_over_dismissed`` event, which names the ``passed_over`` event it closes."""

    event_id: int  # the dismissal's own event
    passed_over: int  # the passed_over event it closes (the mail's ``P7``)
    at: datetime
    agent: str
    reason: str
