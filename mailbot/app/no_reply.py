"""A citizen's message that needs no reply — spam, a duplicate of a request answered in
another thread, a thank-you that asks nothing — closed by an agent with the reason. It
leaves the queue and the indicators (it is not the service's to answer: counting it as
late would misstate the audited figure), and the weekly report lists it apart, so that
nothing leaves the figures unseen. Not for good: the citizen writing again about it reopens
it (``intake``: it is theirs to answer after all), so does an agent who closed it by
mistake (``reopen``), and an answer recorded later makes it answered, not closed
(``Transaction.record_reply``). What a message's state allows is ``message_actions``'s.

The same holds after an answer: the citizen writing again puts the message back in the
queue as new mail to read (``intake``), and an agent who read it and finds nothing to
answer (thanks) takes it out again (``mark_read``); its answer counts as before."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mailbot.app.message_actions import Act, answered_meanwhile, refuse
from mailbot.app.message_view import service_of
from mailbot.app.requests import (
    CLOSING,
    MARKING_READ,
    REOPENING,
    AgentLookup,
    MessageRef,
    find_agent,
    once,
    permit,
    permit_again,
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
    required for ``other``); once per ``key``. A message already answered stays answered.
    Refused (RequestError naming the agent, the action and the service) unless the agent's
    role and services let them answer the message's service's mail: the console's rule
    (core/permissions), checked here for every face."""
    agent = find_agent(config, agents, agent_id)
    row = tracked_message(store, message)
    permit(config, agent_id, agent, CLOSING, service_of(config, row))
    if previous(store, EventKind.NO_REPLY_NEEDED, key, agent=agent_id) is not None:
        return Closed(row.reference, reason, repeated=True)
    with store.transaction() as tx:
        refuse(tx, row, Act.CLOSE)
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
        permit_again(tx, config, agent_id, agent, CLOSING, row)  # moved meanwhile?
        state = refuse(tx, row, Act.CLOSE)  # again, where the closing is written
        if not stored.set_no_reply(tx.conn, row.id, reason):  # an answer committed since
            raise answered_meanwhile(state, Act.CLOSE)
        tx.add_event(row.id, EventKind.NO_REPLY_NEEDED, detail)
        return 0

    _, repeated = once(store, EventKind.NO_REPLY_NEEDED, key, record, agent=agent_id)
    return Closed(row.reference, reason, repeated)


@dataclass(frozen=True)
class Reopened:
    """A closing undone; ``closed``: the reason it had (None for a repeated request)."""

    reference: str
    closed: NoReplyReason | None
    repeated: bool = False


def reopen(
    config: Config,
    store: Store,
    agents: AgentLookup,
    agent_id: str,
    message: MessageRef,
    reason: str = "",
    key: str | None = None,
) -> Reopened:
    """Undo a closing without a reply made by mistake: the message is back in the queue,
    the alerts and the figures, with its deadline from receipt (the clock never stopped
    for it). Recorded as the citizen's relance records it (``reopened``), with the agent,
    their ``reason`` (optional) and the closing undone; once per ``key``. Refused
    (RequestError) unless the message is closed without a reply, or unless the agent may
    answer its service's mail (core/permissions: whoever may close may reopen)."""
    agent = find_agent(config, agents, agent_id)
    row = tracked_message(store, message)
    permit(config, agent_id, agent, REOPENING, service_of(config, row))
    if previous(store, EventKind.REOPENED, key, agent=agent_id) is not None:
        return Reopened(row.reference, None, repeated=True)
    with store.transaction() as tx:
        refuse(tx, row, Act.REOPEN)
    closing = _last_closing(store, row.id)
    closed: list[NoReplyReason] = []

    def record(tx: Transaction) -> int:
        permit_again(tx, config, agent_id, agent, REOPENING, row)  # moved meanwhile?
        state = refuse(tx, row, Act.REOPEN)  # again, where it is written
        if not tx.reopen_closed(row.id):  # the row's guard saw an answer committed since
            raise answered_meanwhile(state, Act.REOPEN)
        detail = {
            "agent": agent_id,
            "by": "agent",  # the citizen's relance reopens too: its detail names no agent
            "reason": reason.strip()[:500],
            "closed_reason": state.closed,
            "closed_note": closing.get("note", ""),
        }
        tx.add_event(row.id, EventKind.REOPENED, json.dumps(detail, ensure_ascii=False))
        closed.append(NoReplyReason(str(state.closed)))
        return 0

    _, repeated = once(store, EventKind.REOPENED, key, record, agent=agent_id)
    return Reopened(row.reference, closed[0] if closed else None, repeated)


@dataclass(frozen=True)
class MarkedRead:
    reference: str
    repeated: bool = False


def mark_read(
    config: Config,
    store: Store,
    agents: AgentLookup,
    agent_id: str,
    message: MessageRef,
    key: str | None = None,
) -> MarkedRead:
    """The citizen's mail after the answer read by ``agent_id``, with nothing to answer
    (thanks, a mere acknowledgement): the message leaves the queue again; recorded in
    the thread with the agent (``follow_up_read``); once per ``key``. Refused
    (RequestError) unless the message has such unread mail (replying again clears it too)
    and the agent may answer its service's mail (core/permissions)."""
    agent = find_agent(config, agents, agent_id)
    row = tracked_message(store, message)
    permit(config, agent_id, agent, MARKING_READ, service_of(config, row))
    if previous(store, EventKind.FOLLOW_UP_READ, key, agent=agent_id) is not None:
        return MarkedRead(row.reference, repeated=True)

    def record(tx: Transaction) -> int:
        permit_again(tx, config, agent_id, agent, MARKING_READ, row)  # moved meanwhile?
        if not tx.clear_written_again(row.id):  # none, or read or answered meanwhile
            raise RequestError(
                "reference",
                row.reference or f"#{row.id}",
                "no new mail from the citizen to mark read",
                shown="ce courriel n'a pas de nouveau message de l'usager à lire.",
            )
        detail = json.dumps({"agent": agent_id}, ensure_ascii=False)
        tx.add_event(row.id, EventKind.FOLLOW_UP_READ, detail)
        return 0

    _, repeated = once(store, EventKind.FOLLOW_UP_READ, key, record, agent=agent_id)
    return MarkedRead(row.reference, repeated)


def _last_closing(store: Store, message_pk: int) -> dict[str, Any]:
    """The detail of the message's latest closing without a reply ({} when none)."""
    found = [
        json.loads(e.detail)
        for e in store.events(message_pk)
        if e.kind == EventKind.NO_REPLY_NEEDED and e.detail.startswith("{")
    ]
    return found[-1] if found else {}


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
