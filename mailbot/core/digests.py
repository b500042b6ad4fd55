"""The daily deadline digest for each service: late, soon due and relanced messages, the
answered messages the citizen wrote again about (unread: out of the deadlines, not of the
service's work), the citizens' mail left without an AR (quarantined, or without a
Return-Path), the mail passed over (no row records it: only where it is on the server),
and the messages whose mail to the citizen bounced since the last digest sent.

Pure: from the store's rows to one digest per service; empty digests are not sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from mailbot.core.incoming import PassedOver
from mailbot.core.statuses import Attention
from mailbot.core.workdays import DEADLINE, WorkingCalendar

SOON = 3  # unanswered for 3 working days or more: worth a reminder before the deadline
# How far back a digest's bounces go when digests were missed (``bounce_window``): a month.
BOUNCE_LOOKBACK_DAYS = 31
WHY: dict[str, str] = {
    Attention.QUARANTINE: "erreur de traitement (quarantaine)",
    Attention.NO_RETURN_PATH: "sans adresse de retour (Return-Path)",
}


@dataclass
class Digest:
    service: str
    overdue: list[dict[str, Any]] = field(default_factory=list)
    soon: list[dict[str, Any]] = field(default_factory=list)
    relanced: list[dict[str, Any]] = field(default_factory=list)
    # Answered, then written about again by the citizen, unread (``written_again_at``): the
    # console's « Nouveau message de l'usager »; aged from that new mail.
    written_again: list[dict[str, Any]] = field(default_factory=list)
    # Mail nobody acknowledged (quarantined, no Return-Path): listed at any age, until
    # answered or processed again.
    unacknowledged: list[dict[str, Any]] = field(default_factory=list)
    # Mail passed over that no retry recorded and nobody dismissed: listed at any age too.
    passed_over: list[dict[str, Any]] = field(default_factory=list)
    # Our mail to the citizen (AR, notice, reply) that bounced since the last digest sent
    # (``bounce_window``): the citizen never received it, someone must reach them otherwise.
    bounced: list[dict[str, Any]] = field(default_factory=list)

    @property
    def entries(self) -> int:
        """How many entries the digest lists, every section counted."""
        return sum(
            len(e)
            for e in (
                self.overdue,
                self.soon,
                self.relanced,
                self.written_again,
                self.unacknowledged,
                self.passed_over,
                self.bounced,
            )
        )

    @property
    def empty(self) -> bool:
        return self.entries == 0

    def sort(self) -> None:
        """Each section oldest first (the longest wait on top), then by reference."""
        for entries in (
            self.overdue,
            self.soon,
            self.relanced,
            self.written_again,
            self.unacknowledged,
        ):
            entries.sort(key=lambda e: (-e["age"], e["reference"]))
        self.passed_over.sort(key=lambda e: (-e["age"], int(e["reference"][1:])))
        # ``bounced``: appended in the order the bounces came (``_last_bounces``).


def bounce_window(
    today: date, calendar: WorkingCalendar, at: time, last_sent: date | None = None
) -> tuple[datetime, datetime]:
    """The bounces a working day's digest tells: those recorded from the last digest sent
    (``last_sent``: the day of the newest ``alerts-`` claim before today, at
    ``alerts.time``, local) to its own. A day the worker was down all day sent none: the
    next digest tells that day's bounces too. Each bounce is told once, in the first
    digest after it, whatever hour the digests actually left (a catch-up at 15:00 tells
    what bounced up to 08:30; the rest, the next digest). No digest ever sent (a new
    database; hand runs record none): from the previous working day's. At most
    ``BOUNCE_LOOKBACK_DAYS`` back: a database left for months without digests would
    otherwise send months of bounces nobody can act on any more (the console's
    « Non distribué » and ``mailbot unanswered`` still show them)."""
    start = calendar.add_working_days(today, -1) if last_sent is None else last_sent
    start = max(start, today - timedelta(days=BOUNCE_LOOKBACK_DAYS))
    zone = calendar.zone
    return datetime.combine(start, at, zone), datetime.combine(today, at, zone)


def digests(
    rows: Sequence[Mapping[str, Any]],
    today: date,
    calendar: WorkingCalendar,
    own_service: Mapping[str, str],
    general_service: str | None = None,
    passed_over: Sequence[PassedOver] = (),
    written_again: Sequence[Mapping[str, Any]] = (),
    bounced: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Digest]:
    """Unanswered messages by service; each entry has reference, subject, age, mailbox, relances.

    A message without a service goes to its mailbox's (``own_service``); the mailbox no
    longer configured, to ``general_service`` (rules.yaml: organisation.general_service),
    else to a digest named after the mailbox. A mail passed over (``passed_over``: those
    still waiting) has no service, only a mailbox: it goes the same way, as ``P7`` with
    its mailbox, folder, UID, the day it was passed over, its age and why, nothing else.
    The answered messages the citizen wrote again about (``written_again``: the store's
    ``written_again_rows``) go to their service the same way, aged from that new mail.
    ``bounced`` (``app/bounces.bounced_between``: the bounces of the day's ``bounce_window``)
    too, one entry per message, its last bounce: which mail, the day, the reason.
    """
    found: dict[str, Digest] = {}

    def digest_of(row: Mapping[str, Any]) -> Digest:
        service = (
            row["service"] or own_service.get(row["mailbox"]) or general_service or row["mailbox"]
        )
        return found.setdefault(service, Digest(service))

    for row in rows:
        if row["replied_at"] is None:
            _file_open(digest_of(row), row, today, calendar)
    for row in written_again:
        digest_of(row).written_again.append(_written_again_entry(row, today, calendar))
    for row in _last_bounces(bounced):
        digest_of(row).bounced.append(_bounced_entry(row, calendar))
    for passed in passed_over:
        service = own_service.get(passed.mailbox) or general_service or passed.mailbox or "?"
        entry = _passed_entry(passed, today, calendar)
        found.setdefault(service, Digest(service)).passed_over.append(entry)
    for digest in found.values():
        digest.sort()
    return {name: digest for name, digest in found.items() if not digest.empty}


def _file_open(
    digest: Digest, row: Mapping[str, Any], today: date, calendar: WorkingCalendar
) -> None:
    """An unanswered message in its section of its service's digest, if it is in one:
    left without an AR, overdue, soon due, or relanced (younger and not relanced: none)."""
    received = calendar.local_date(row["received_at"])
    age = calendar.delay_between(received, today)
    relances = int(row["relances"] or 0)
    entry = {
        "reference": row["reference"],
        "subject": row.get("subject") or "",
        "age": age,
        "mailbox": row["mailbox"],
        "relances": relances,
    }
    if row.get("attention"):
        entry |= {"reference": f"#{row['id']}", "why": WHY[row["attention"]]}
        digest.unacknowledged.append(entry)
    elif age > DEADLINE:
        digest.overdue.append(entry)
    elif age >= SOON:
        digest.soon.append(entry)
    elif relances:
        digest.relanced.append(entry)


def _written_again_entry(
    row: Mapping[str, Any], today: date, calendar: WorkingCalendar
) -> dict[str, Any]:
    """A message answered, then written about again, as the digest lists it: aged from the
    citizen's new mail (its answer met or missed its deadline: no deadline of its own)."""
    new_mail = calendar.local_date(row["written_again_at"])
    return {
        "reference": row["reference"] or f"#{row['id']}",  # a mail left without an AR
        "subject": row.get("subject") or "",
        "age": calendar.delay_between(new_mail, today),
        "mailbox": row["mailbox"],
    }


def _last_bounces(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last bounce of each message (its AR, then its reply, may both bounce in a day):
    one line per citizen to reach, with the mail they most lately missed; the first to
    have bounced first."""
    last: dict[int, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["bounced_at"], r["id"])):
        last.pop(row["id"], None)  # the message's line moves to its last bounce's place
        last[row["id"]] = row
    return list(last.values())


def _bounced_entry(row: Mapping[str, Any], calendar: WorkingCalendar) -> dict[str, Any]:
    """A bounce as the digest lists it: which of our mails (« accusé de réception »), the
    day the report came and the reason in short (« adresse inconnue (5.1.1) »); never the
    citizen's address nor the remote server's words."""
    return {
        "reference": row["reference"] or f"#{row['id']}",
        "subject": row.get("subject") or "",
        "mail": row["mail"],
        "day": calendar.local_date(row["bounced_at"]).strftime("%d/%m/%Y"),
        "reason": row["reason"],
        "mailbox": row["mailbox"],
    }


def _passed_entry(passed: PassedOver, today: date, calendar: WorkingCalendar) -> dict[str, Any]:
    """A mail passed over as the digest lists it: where it is and why in short, the day it
    was passed over and its age in working days; nothing of the mail (no row holds it)."""
    day = calendar.local_date(passed.at)
    return {
        "reference": passed.id,
        "mailbox": passed.mailbox or "?",
        "folder": passed.folder or "?",
        "uid": passed.uid if passed.mailbox else "?",
        "day": day.strftime("%d/%m/%Y"),
        "age": calendar.delay_between(day, today),
        "why": passed.short_why(),
    }
