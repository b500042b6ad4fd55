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
that records it now takes the event, which leaves the lists and `mailbot status`.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from mailbot.app.intake import Pipeline
from mailbot.core.incoming import IncomingMail, Outcome, PassedOver
from mailbot.core.statuses import Decision
from mailbot.errors import MessageError
from mailbot.mail.originals import Originals
from mailbot.store import UNHANDLED_REASONS, Store
from mailbot.store import supervision as sql

_REF = re.compile(r"^#?(\d{1,12})$")
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


def passed_over(store: Store, mailbox: str | None = None) -> list[PassedOver]:
    """The mail passed over that no row records yet, newest first (whatever its age: the
    status counts the last 7 days, a person may come later)."""
    found = [PassedOver.of_event(row.id, row.at, row.detail) for row in sql.passed_over(store)]
    return [p for p in found if mailbox is None or p.mailbox == mailbox]


def passed_over_details(store: Store, event_id: int) -> tuple[PassedOver, str]:
    """One mail passed over, still waiting: where, why, and its event's whole detail (the
    traceback). MessageError if there is no such event, or a row records the mail now."""
    row = sql.passed_over_event(store, event_id)
    if row is None:
        raise MessageError(f"no mail passed over P{event_id}")
    if row.message_pk is not None:
        raise MessageError(
            f"mail P{event_id} is no longer passed over: row #{row.message_pk} records it"
        )
    return PassedOver.of_event(row.id, row.at, row.detail), str(row.detail)


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
