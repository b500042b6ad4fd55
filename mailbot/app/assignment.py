"""Who handles a message: an agent takes it, or a head of service gives it to a colleague
of the service (or takes it back from anyone). Recorded on the message (the queue shows
and filters it) and as an ``assigned`` event with who did it; nothing is sent.

The use case checks who may (``requests.permit``, the console's rule, for every face):
taking a message oneself is answering it (REPLY on its service: an agent of the service);
giving it to someone else, or to nobody, is reassigning (REASSIGN: a head of the
service)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mailbot.app.message_view import service_of
from mailbot.app.requests import (
    GIVING,
    TAKING,
    AgentLookup,
    MessageRef,
    agent_label,
    find_agent,
    once,
    permit,
    previous,
    service_label,
    tracked_message,
)
from mailbot.config import Config
from mailbot.core.statuses import EventKind
from mailbot.errors import RequestError
from mailbot.store import Store, Transaction
from mailbot.store import console as stored


@dataclass(frozen=True)
class Assigned:
    reference: str
    assignee: str | None
    previous: str | None
    repeated: bool = False


def assign(
    config: Config,
    store: Store,
    agents: AgentLookup,
    agent_id: str,
    message: MessageRef,
    assignee: str | None,
    key: str | None = None,
) -> Assigned:
    """Give ``message`` to ``assignee`` (None: to nobody), as ``agent_id``; once per ``key``.
    The assignee must be an agent who handles the message's service. Refused
    (RequestError naming the agent, the action and the service) unless ``agent_id`` may
    answer the service's mail (taking it: ``assignee`` is themselves) or reassign it
    (giving it to another, or to nobody): what the console checks, here for every face."""
    agent = find_agent(config, agents, agent_id)
    row = tracked_message(store, message)
    service = service_of(config, row)
    permit(config, agent_id, agent, TAKING if assignee == agent_id else GIVING, service)
    if previous(store, EventKind.ASSIGNED, key) is not None:
        return Assigned(row.reference, row.assignee, row.assignee, repeated=True)
    if assignee is not None:
        profile = agents(assignee)
        if profile is None:
            raise RequestError(
                "assignee",
                assignee,
                "no such agent",
                shown=f"l'agent « {assignee} » n'existe pas : choisissez-en un dans la liste.",
            )
        if service not in profile.console_services:
            raise RequestError(
                "assignee",
                assignee,
                f"does not handle the service {service}",
                shown=f"{agent_label(assignee, profile)} ne traite pas le service"
                f" « {service_label(config, service)} » : attribuez ce courriel à un agent de"
                " ce service.",
            )
    detail = json.dumps(
        {"agent": agent_id, "assignee": assignee, "previous": row.assignee}, ensure_ascii=False
    )

    def record(tx: Transaction) -> int:
        stored.set_assignee(tx.conn, row.id, assignee)
        tx.add_event(row.id, EventKind.ASSIGNED, detail)
        return 0

    _, repeated = once(store, EventKind.ASSIGNED, key, record)
    return Assigned(row.reference, assignee, row.assignee, repeated)
