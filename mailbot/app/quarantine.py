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
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from mailbot.app.intake import Pipeline
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.statuses import Decision
from mailbot.errors import MessageError
from mailbot.mail.originals import Originals
from mailbot.store import UNHANDLED_REASONS, Store

_REF = re.compile(r"^#?(\d{1,12})$")


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
