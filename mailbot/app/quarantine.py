"""Quarantined mail made visible and recoverable: list, show, process again.

A mail is quarantined when processing it raised (see ``mailbot.app.intake``). It has no
tracking reference — references are given to acknowledged mail only, and a quarantined
mail may turn out to be a robot's — so it is identified by its **row id** in the database,
which ``mailbot quarantine list`` prints as ``#42``. Mail skipped only because it had no
Return-Path header is listed and retried the same way: after ``policy.missing_return_path:
use_from``, a retry acknowledges it.

A retry fetches the mail again from its IMAP folder by UIDVALIDITY/UID (by Message-ID when
the folder was renumbered, ``mailbot.mail.originals``), runs the pipeline on it and updates
the same row; an AR is queued if it now succeeds.

A mail **passed over** has no row: the database refused even its quarantine row, attempt
after attempt, and the poller went past it (``Pipeline._unrecordable``); only its event
(``passed_over``) says where it is on the server. It is listed and retried too, named
``P7`` by that event: a retry fetches it by its location, runs the pipeline, and the row
that records it now takes the event, which leaves the lists and `mailbot status`. A mail
the server will never give (unreadable, deleted) or that a person handled by hand is
**dismissed** instead (``dismiss_passed_over``): an event records who closed it and why,
it leaves the lists, the status, the metrics, the alerts and the report, and `show` still
tells its story. Nothing is done to the mail on the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mailbot.core.incoming import IncomingMail, Outcome, PassedOver
from mailbot.core.statuses import Decision
from mailbot.errors import MessageError, RepeatedRequestError, RequestError
from mailbot.store import UNHANDLED_REASONS, Store
from mailbot.store import supervision as sql
from mailbot.store.records import Dismissal

if TYPE_CHECKING:  # the retries' collaborators; the report and the alerts build no intake
    from mailbot.app.intake import Pipeline
    from mailbot.mail.originals import Originals

_REF = re.compile(r"^#?(\d{1,12})$")
MAX_DISMISS_REASON = 500  # characters of a dismissal's reason kept, as a closing's note
_PASSED_REF = re.compile(r"^#?[Pp](\d{1,12})$")


def parse_ref(text: str) -> int:
    """``42`` or ``#42`` → 42."""
    found = _REF.match(text.strip())
    if found is None:
        raise MessageError(f"not a quarantined mail id: {text!r} (expected a number, e.g. 42)")
    return int(found.group(1))


def unhandled_row(store: Store, message_pk: int) -> sa.Row[Any]:
    """The row of a quarantined (or Return-Path-less) mail; MessageError otherwise."""
    row = store.message(id=message_pk)
    if row is None:
        raise MessageError(f"no recorded mail #{message_pk}")
    if not (
        row.decision == Decision.QUARANTINE
        or (row.decision == Decision.SKIP and row.reasons == UNHANDLED_REASONS)
    ):
        raise MessageError(f"mail #{message_pk} is not quarantined (decision: {row.decision})")
    return row


def waiting(store: Store, mailbox: str | None = None) -> list[sa.Row[Any]]:
    """The mail left without an AR that awaits a person, newest first (``attention``: why)."""
    return store.unhandled_rows(mailbox)


def details(store: Store, message_pk: int) -> tuple[sa.Row[Any], list[sa.Row[Any]]]:
    """One such mail: its record and its events (the traceback among them)."""
    row = unhandled_row(store, message_pk)
    return row, store.events(row.id)


def retry(store: Store, pipeline: Pipeline, originals: Originals, message_pk: int) -> Outcome:
    """Process a quarantined mail again; its row is updated, never duplicated. Whatever it
    now owes is queued (delivery follows). Two retries at once (a double click): the
    pipeline checks the row again inside the transaction that records the new outcome, so
    the second raises RepeatedRequestError and queues nothing — one AR, never two."""
    row = unhandled_row(store, message_pk)
    mail = IncomingMail.of(originals.fetch(row))
    return pipeline.process(row.mailbox, row.folder, row.uidvalidity, mail, existing=row.id)


def passed_over_ref(text: str) -> int | None:
    """``P7`` (or ``p7``, ``#P7``) → 7, the event of a mail passed over; None for another
    reference (a row's ``42``)."""
    found = _PASSED_REF.match(text.strip())
    return int(found.group(1)) if found else None


def passed_over(
    store: Store, mailbox: str | None = None, until: datetime | None = None
) -> list[PassedOver]:
    """The mail passed over that still waits for a person — no row records it, nobody
    dismissed it — newest first, whatever its age (the status counts the last 7 days, a
    person may come later); ``until``: passed over before that moment only (a report's
    period)."""
    found = [
        PassedOver.of_event(row.id, row.at, row.detail)
        for row in sql.passed_over(store, until=until)
    ]
    return [p for p in found if mailbox is None or p.mailbox == mailbox]


@dataclass(frozen=True)
class PassedOverCase:
    """A mail passed over that no row records: where and why (``passed``), its event's
    whole detail (the traceback), and who closed its case, when and why, if someone did."""

    passed: PassedOver
    detail: str
    dismissed: Dismissal | None


def passed_over_case(store: Store, event_id: int) -> PassedOverCase:
    """One mail passed over, waiting or dismissed (`quarantine show P7`, its page).
    MessageError if there is no such event, or a row records the mail now."""
    found = sql.passed_over_event(store, event_id)
    if found is None:
        raise MessageError(f"no mail passed over P{event_id}")
    row, dismissed = found
    if row.message_pk is not None:
        raise MessageError(
            f"mail P{event_id} is no longer passed over: row #{row.message_pk} records it"
        )
    passed = PassedOver.of_event(row.id, row.at, row.detail)
    return PassedOverCase(passed, str(row.detail), dismissed)


def _dismissed_error(event_id: int, dismissed: Dismissal) -> MessageError:
    return MessageError(
        f"mail P{event_id} was dismissed on {dismissed.at:%Y-%m-%d %H:%M} by"
        f" {dismissed.agent} (handled outside mailbot: {dismissed.reason}):"
        " it is no longer passed over",
        shown=f"ce courriel a été classé le {dismissed.at:%d/%m/%Y} par {dismissed.agent}.",
    )


def passed_over_details(store: Store, event_id: int) -> tuple[PassedOver, str]:
    """One mail passed over, still waiting: where, why, and its event's whole detail (the
    traceback). MessageError if there is no such event, a row records the mail now, or a
    person dismissed it."""
    case = passed_over_case(store, event_id)
    if case.dismissed is not None:
        raise _dismissed_error(event_id, case.dismissed)
    return case.passed, case.detail


def dismiss_passed_over(store: Store, event_id: int, agent: str, reason: str) -> Dismissal:
    """Close the case of a mail passed over that a person handled outside mailbot — the
    server will not give it (a retry can never record it), or it was answered by hand:
    an event records who and why, and the mail leaves the lists, `mailbot status`, the
    metrics, the daily alert and the weekly report, as a retry that records it does.
    Nothing is done to the mail on the server, and nothing is sent. Refused (nothing
    recorded): no reason (RequestError); no such mail, a row recording it, or a
    dismissal already (MessageError, saying which) — two at once (a double click)
    dismiss it once, the second refused so."""
    passed_over_details(store, event_id)  # refused at once, saying why
    reason = " ".join(reason.split())[:MAX_DISMISS_REASON]
    if not reason:
        raise RequestError(
            "reason",
            "''",
            "say how the mail was handled outside mailbot",
            shown="indiquez comment ce courriel a été traité hors de mailbot.",
        )
    agent = agent.strip()
    if not agent:
        raise RequestError("agent", "''", "say who dismisses the mail", shown="agent inconnu.")
    try:
        with store.transaction() as tx:
            tx.dismiss_passed_over(event_id, agent, reason)
    except RepeatedRequestError:
        case = passed_over_case(store, event_id)  # a row, or a dismissal, committed first
        if case.dismissed is not None:
            raise _dismissed_error(event_id, case.dismissed) from None
        raise
    dismissed = passed_over_case(store, event_id).dismissed
    assert dismissed is not None  # committed above; only a purge removes it
    return dismissed


def retry_passed_over(
    store: Store, pipeline: Pipeline, originals: Originals, event_id: int
) -> Outcome:
    """Process a mail passed over again: fetched by its location (folder, UIDVALIDITY, UID;
    no Message-ID is known: a folder renumbered since, MailGoneError), recorded as any new
    mail, whatever it now owes queued; its event goes to the new row in the same
    transaction. Two retries at once: the second raises RepeatedRequestError."""
    passed, _detail = passed_over_details(store, event_id)
    if not passed.mailbox:
        raise MessageError(f"mail {passed.id}: its event does not say where it is")
    mail = IncomingMail.of(originals.fetch(passed))
    return pipeline.process_passed_over(passed, mail)
