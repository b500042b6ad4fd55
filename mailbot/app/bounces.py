"""A bounce of one of our mails to a citizen, recorded on the citizen's message.

The policy skips a delivery report (``delivery-report``, ``null-return-path``,
``system-sender``) and nothing is ever sent in answer to one. But when the report says
that our AR, transfer notice or agent's reply to a citizen failed for good, the citizen
never received it: the agents must know, or they answer into the void. The skipped
mail's intake (``app/deciding``) hands it here, in its transaction: the report is read
(``core/bounces``), the mail it names looked up in the outbox by its Message-ID, and a
``bounced`` event recorded on that mail's message when the failed recipient is that mail's.
A report that matches nothing of ours stays what it was, a skipped mail (an INFO line
without personal data). The indicators are unchanged: the citizen's mail was received,
its reply delay still counts.

The console's message page, its queue and ``mailbot unanswered`` read the events
(``bounce_notes``, ``Store.bounces``); the daily digest, those of a day's window
(``bounced_between``, ``Store.bounced_rows``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mailbot.core.bounces import DeliveryReport, failure_of, read_report, reason_fr
from mailbot.core.statuses import EventKind, OutboxKind
from mailbot.store import Store, Transaction

log = logging.getLogger(__name__)

# The skip reasons a bounce comes with (README, "When is an AR sent?"): only such a mail
# is read as a report.
BOUNCE_HITS = frozenset({"delivery-report", "null-return-path", "system-sender"})
# Our mails to a citizen whose bounce the agents must know of (not a forward to a service,
# nor a digest or a report: their recipients are the prefecture's).
TO_CITIZENS = (OutboxKind.AR, OutboxKind.NOTICE, OutboxKind.REPLY)


class Recorder(Protocol):
    """What the intake's recorder gives here (``app/recording``): its transaction, and
    the events it writes (at once, or with its part)."""

    tx: Transaction

    def events(self, message_pk: int, *kinds: tuple[EventKind, str]) -> None: ...


def note_bounce(
    rec: Recorder,
    raw: bytes,
    reasons: Iterable[str],
    bounce_pk: int | None,
    arrived: datetime,
) -> int:
    """Record the bounces this skipped mail reports on our mails' messages; how many.

    Only a mail skipped for a bounce's reasons is read; a delay (4.x.x) is no bounce."""
    if not BOUNCE_HITS.intersection(reasons):
        return 0
    report = read_report(raw)
    if report is None or not report.bounced:
        return 0
    recorded = 0
    for mail in rec.tx.sent_mails(report.message_ids, TO_CITIZENS):
        failure = failure_of(report, mail.recipient)
        if failure is None:
            continue
        detail = {
            "kind": mail.kind.value,
            "sent_at": mail.sent_at.isoformat() if mail.sent_at else None,
            "bounced_at": arrived.isoformat(),
            "status": failure.status,
            "diagnostic": failure.diagnostic,
            "bounce": bounce_pk,
        }
        rec.events(mail.message_pk, (EventKind.BOUNCED, json.dumps(detail, ensure_ascii=False)))
        recorded += 1
    if not recorded:
        _unmatched(report, bounce_pk)
    return recorded


def _unmatched(report: DeliveryReport, bounce_pk: int | None) -> None:
    """A bounce about no mail of ours (or about another recipient): skipped as before."""
    log.info(
        "bounce #%s matches no mail of ours to a citizen (%d Message-ID(s), %d failure(s)):"
        " left skipped",
        bounce_pk,
        len(report.message_ids),
        len(report.failures),
    )


@dataclass(frozen=True)
class BounceNote:
    """A bounce as agents read it: which of our mails, sent when, why (in French and as
    the remote server said), received when."""

    kind: OutboxKind
    sent_at: datetime | None
    bounced_at: datetime | None
    status: str
    diagnostic: str

    @property
    def reason(self) -> str:
        """« adresse inconnue (5.1.1) »."""
        words = reason_fr(self.status)
        return f"{words} ({self.status})" if self.status else words

    @property
    def what(self) -> str:
        """Our mail, in French: « l'accusé de réception », « la réponse »…"""
        article, mail = _WHAT[self.kind]
        return article + mail

    @property
    def mail(self) -> str:
        """Our mail, without its article: « accusé de réception », « réponse »…"""
        return _WHAT[self.kind][1]


_WHAT = {
    OutboxKind.AR: ("l'", "accusé de réception"),
    OutboxKind.NOTICE: ("l'", "avis de transfert"),
    OutboxKind.REPLY: ("la ", "réponse"),
}


def bounce_note(detail: str) -> BounceNote | None:
    """A ``bounced`` event's detail read back (None if it cannot be: never raises)."""
    try:
        found: Mapping[str, Any] = json.loads(detail)
        return BounceNote(
            OutboxKind(found["kind"]),
            _moment(found.get("sent_at")),
            _moment(found.get("bounced_at")),
            str(found.get("status") or ""),
            str(found.get("diagnostic") or ""),
        )
    except (ValueError, KeyError, TypeError):
        return None


def bounce_notes(store: Store, message_pks: Iterable[int]) -> dict[int, BounceNote]:
    """The last bounce of our mail to the citizen of each of these messages that has
    one: the console's queue and message page, ``mailbot unanswered``."""
    found = store.bounces(list(message_pks))
    notes = {pk: bounce_note(detail) for pk, detail in found.items()}
    return {pk: note for pk, note in notes.items() if note is not None}


def bounced_between(store: Store, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The bounces recorded in [since, until) with their message's listing (reference,
    subject, mailbox, service) and, read from the event, which mail (``mail``), the reason
    in short (``reason``) and when the report came (``bounced_at``): the daily digest's
    (``core/digests``). A detail that cannot be read is left out, as the console does."""
    found: list[dict[str, Any]] = []
    for row in store.bounced_rows(since, until):
        note = bounce_note(row.pop("detail"))
        if note is not None:
            at = note.bounced_at or row["at"]
            del row["at"]
            found.append(row | {"mail": note.mail, "reason": note.reason, "bounced_at": at})
    return found


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
