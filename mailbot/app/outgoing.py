"""What the use cases queue: mails built by the Composer, put in the outbox in the caller's
transaction (so that a mail is queued if and only if what it is about was recorded). The
outbox delivers them later: when, is the face's decision (``mailbot.app.delivery``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from urllib.parse import quote

from mailbot.config import Config
from mailbot.core.dates import date_fr
from mailbot.core.statuses import OutboxKind
from mailbot.mail.compose import Composer, OutgoingMail, without_fields
from mailbot.mail.forward import cover_note
from mailbot.render.variables import answer_deadline
from mailbot.store import Transaction


@dataclass(frozen=True)
class Queued:
    """One mail to queue: its kind, envelope and bytes."""

    kind: OutboxKind
    recipient: str
    envelope_from: str
    message_id: str
    raw: bytes

    @classmethod
    def of(cls, kind: OutboxKind, mail: OutgoingMail, recipient: str, envelope_from: str) -> Queued:
        return cls(kind, recipient, envelope_from, str(mail["Message-ID"]), mail.as_bytes())


def enqueue(tx: Transaction, message_pk: int | None, mails: Iterable[Queued]) -> list[int]:
    """Queue the mails about ``message_pk`` (None: about no message); their outbox ids."""
    return [
        tx.enqueue(message_pk, q.kind, q.recipient, q.envelope_from, q.message_id, q.raw)
        for q in mails
    ]


@dataclass(frozen=True)
class Transfer:
    """A citizen's mail on its way to a service: what the cover note says about it."""

    mailbox: str
    reference: str
    subject: str
    received_at: datetime
    citizen: str
    service: str
    category: str
    by: str | None = None  # the agent who transferred it, when not the routing
    reason: str | None = None


@lru_cache(maxsize=64)
def _day(day: date, timezone: str) -> str:
    """A deadline in words ("lundi 9 novembre 2026"), formatted once a day (Babel's
    formatting is a tenth of a millisecond)."""
    return date_fr(day, timezone=timezone, style="date")


def _token_fields(config: Config) -> frozenset[str]:
    """The header fields that carry a contact-form relay's secret token (lower case)."""
    relays = config.policy.contact_form_relays
    return frozenset(r.token_header.lower() for r in relays if "token" in r.require)


def console_link(config: Config, reference: str) -> str | None:
    """The message's page in the console, by its reference (the row id is not known yet
    when an AR's forward is planned), when the console's public address is configured: the
    default one (loopback) is no address a service can open."""
    base = config.web.public_url
    return f"{base.rstrip('/')}/courriel/{quote(reference, safe='')}" if base else None


def forwards(
    config: Config,
    composer: Composer,
    transfer: Transfer,
    original: bytes,
    size: int = 0,
    today: date | None = None,
) -> tuple[Queued, ...]:
    """The original, attached unaltered (but for a relay's secret token), to each address
    of the service, with the note that says by when the citizen expects an answer and how
    to answer so it is tracked.

    ``size``: the mail's size on its server, larger than ``original`` when only the start
    of a huge mail was read (``IncomingMail.size``, ``FetchedMail.size``). Cut bytes are
    never attached as if they were the mail: its header alone goes, and the note says so,
    with the real size and where the whole mail is. The transfer itself still happens: the
    request is the service's, and the whole mail stays in the mailbox, under its reference.

    ``today`` (the prefecture's date, given by an agent's transfer): a deadline already
    gone by is said to be, not given as the day to answer by."""
    whole = size <= len(original)
    box = config.mailboxes[transfer.mailbox]
    deadline = answer_deadline(transfer.received_at, config.timezone)
    note = cover_note(
        reference=transfer.reference,
        received_at=date_fr(transfer.received_at, timezone=config.timezone),
        deadline=_day(deadline, config.timezone),
        deadline_passed=today is not None and deadline < today,
        service_name=config.services[transfer.service].name,
        service_article=config.services[transfer.service].article,
        citizen=transfer.citizen,
        mailbox_address=box.address,
        category=transfer.category,
        tracking_address=config.sender.tracking_address,
        transferred_by=transfer.by,
        reason=transfer.reason,
        too_large=None if whole else size,
        console_link=None if whole else console_link(config, transfer.reference),
    )
    original = without_fields(original, _token_fields(config))
    build = composer.forward if whole else composer.forward_header
    found = []
    for to in config.services[transfer.service].addresses:
        message_id, raw = build(
            original,
            mailbox_address=box.address,
            reference=transfer.reference,
            subject=transfer.subject,
            note=note,
            to=to,
            citizen=transfer.citizen,
        )
        found.append(Queued(OutboxKind.FORWARD, to, box.address, message_id, raw))
    return tuple(found)
