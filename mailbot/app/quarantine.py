"""Quarantined mail made visible and recoverable: list, show, process again.

A mail is quarantined when processing it raised (see ``mailbot.app.intake``). It has no
tracking reference — references are given to acknowledged mail only, and a quarantined
mail may turn out to be a robot's — so it is identified by its **row id** in the database,
which ``mailbot quarantine list`` prints as ``#42``. Mail skipped only because it had no
Return-Path header is listed and retried the same way: after ``policy.missing_return_path:
use_from``, a retry acknowledges it.

A retry fetches the mail again from its IMAP folder by UIDVALIDITY/UID (by Message-ID when
the folder was renumbered), runs the pipeline on it and updates the same row; an AR is
queued and delivered if it now succeeds.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import sqlalchemy as sa

from mailbot.app.delivery import Outbox
from mailbot.app.intake import Pipeline
from mailbot.config import Config
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.statuses import Decision
from mailbot.errors import MailboxError, MessageError
from mailbot.mail.imap import FetchedMail, ImapMailbox
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


def refetch(source: ImapMailbox, row: sa.Row[Any]) -> FetchedMail:
    """The mail of a row, from the server: by UID while the folder keeps its UIDVALIDITY,
    else by Message-ID (the copy with the same content hash when there are several)."""
    validity = source.select(row.folder)
    found = list(source.fetch([row.uid], 1)) if validity == row.uidvalidity else []
    if not found and row.message_id and not row.message_id.startswith("sha256:"):
        copies = list(source.fetch(source.uids_with_message_id(row.message_id), 20))
        same = [c for c in copies if hashlib.sha256(c.raw).hexdigest() == row.content_hash]
        found = same or copies[:1]
    if not found:
        raise MailboxError(
            f"mailbox {row.mailbox}: mail #{row.id} is no longer in {row.folder!r}"
            " (deleted or moved)"
        )
    return found[0]


def retry(
    config: Config, store: Store, pipeline: Pipeline, outbox: Outbox, message_pk: int
) -> Outcome:
    """Process a quarantined mail again; its row is updated, never duplicated."""
    row = unhandled_row(store, message_pk)
    box = config.mailboxes.get(row.mailbox)
    if box is None:
        raise MessageError(f"mail #{message_pk}: mailbox {row.mailbox!r} is not configured")
    source = ImapMailbox(
        box.imap, name=row.mailbox, max_message_bytes=config.polling.max_message_bytes
    )
    source.connect()
    try:
        fetched = refetch(source, row)
    finally:
        source.close()
    mail = IncomingMail(fetched.uid, fetched.internaldate, fetched.raw, fetched.size)
    outcome = pipeline.process(row.mailbox, row.folder, row.uidvalidity, mail, existing=row.id)
    outbox.deliver_due()
    return outcome
