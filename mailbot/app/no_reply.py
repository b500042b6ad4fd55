"""A citizen's message that needs no reply — spam, a duplicate of a request answered in
another thread, a thank-you that asks nothing — closed by an agent with the reason. It
leaves the queue and the indicators (it is not the service's to answer: counting it as
late would misstate the audited figure), and the weekly report lists it apart, so that
nothing leaves the figures unseen. Not for good: the citizen writing again about it reopens
it (``intake``: it is theirs to answer after all), and an answer recorded later makes it
answered, not closed (``Transaction.record_reply``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mailbot.app.message_view import service_of
from mailbot.app.requests import (
    AgentLookup,
    MessageRef,
    find_agent,
    once,
    previous,
    tracked_message,
)
from mailbot.config import Config
from mailbot.core.statuses import EventKind, NoReplyReason
from mailbot.errors import RequestError
from mailbot.store import Store, Transaction
from mailbot.store import console as stored

REASON_LABELS = {  # as the weekly report names them
    NoReplyReason.SPAM: "indésirable",
    NoReplyReason.DUPLICATE: "doublon",
    NoReplyReason.NO_QUESTION: "aucune question",
    NoReplyReason.OTHER: "autre motif",
}


@dataclass(frozen=True)
class Closed:
    reference: str
    reason: NoReplyReason
    repeated: bool = False


def close_without_reply(
    config: Config,
    store: Store,
    agents: AgentLookup,
    agent_id: str,
    message: MessageRef,
    reason: NoReplyReason,
    note: str,
    key: str | None = None,
) -> Closed:
    """Close ``message`` as needing no reply, for ``reason`` (``note`` says more; it is
    required for ``other``); once per ``key``. A message already answered stays answered."""
    find_agent(config, agents, agent_id)
    row = tracked_message(store, message)
    if previous(store, EventKind.NO_REPLY_NEEDED, key) is not None:
        return Closed(row.reference, reason, repeated=True)
    with store.transaction() as tx:
        refuse_if_answered(tx, row.id, row.reference)
    if row.no_reply is not None:
        raise RequestError(
            "reference",
            row.reference,
            "already closed without a reply",
            shown="ce courriel est déjà classé sans réponse.",
        )
    if reason is NoReplyReason.OTHER and not note.strip():
        raise RequestError(
            "reason",
            "''",
            "say why no reply is needed",
            shown="précisez pourquoi ce courriel ne demande pas de réponse.",
        )
    detail = json.dumps(
        {"agent": agent_id, "reason": reason.value, "note": note.strip()[:500]},
        ensure_ascii=False,
    )

    def record(tx: Transaction) -> int:
        refuse_if_answered(tx, row.id, row.reference)  # again, where the closing is written
        stored.set_no_reply(tx.conn, row.id, reason)
        tx.add_event(row.id, EventKind.NO_REPLY_NEEDED, detail)
        return 0

    _, repeated = once(store, EventKind.NO_REPLY_NEEDED, key, record)
    return Closed(row.reference, reason, repeated)


# What refuse_if_answered refuses, as the console's agent reads it (« il ne peut plus être … »).
REFUSED_AFTER_REPLY = {"close": "classé sans réponse", "transfer": "transféré"}


def refuse_if_answered(
    tx: Transaction, message_pk: int, reference: str, action: str = "close"
) -> None:
    """RequestError when the message was answered, or has a reply queued or being sent (a
    reply on its way answers it: closing it as needing none would misstate the figures,
    transferring it would tell the citizen another service will answer, after the
    answer). ``action`` names what is refused, in the message."""
    answered, in_flight = stored.reply_state(tx.conn, message_pk)
    refused = REFUSED_AFTER_REPLY.get(action, "traité ainsi")
    if answered:
        raise RequestError(
            "reference",
            reference,
            f"already answered: nothing to {action}",
            shown=f"ce courriel a déjà reçu une réponse : il ne peut plus être {refused}.",
        )
    if in_flight:
        raise RequestError(
            "reference",
            reference,
            f"a reply is on its way: nothing to {action}",
            shown=f"une réponse à ce courriel est en cours d'envoi : il ne peut plus être"
            f" {refused}.",
        )


def closed_in(store: Store, since: datetime, until: datetime) -> list[sa.Row[Any]]:
    """Messages received in [since, until) closed without a reply (the report's list)."""
    return stored.closed_without_reply(store.engine, since, until)


def excluded_rows(
    config: Config, store: Store, since: datetime, until: datetime, zone: Any
) -> list[dict[str, str]]:
    """The report's list of messages closed without a reply, with the agents' notes."""
    rows = []
    for row in closed_in(store, since, until):
        notes = [
            json.loads(e.detail)
            for e in store.events(row.id)
            if e.kind == EventKind.NO_REPLY_NEEDED and e.detail.startswith("{")
        ]
        rows.append(
            {
                "reference": row.reference or f"#{row.id}",
                "service": service_of(config, row),
                "received": row.received_at.astimezone(zone).date().isoformat(),
                "reason": REASON_LABELS.get(NoReplyReason(row.no_reply), str(row.no_reply)),
                "note": str(notes[-1].get("note", "")) if notes else "",
            }
        )
    return rows
