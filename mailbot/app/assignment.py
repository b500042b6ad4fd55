"""Who handles a message: an agent takes it, or a head of service gives it to a colleague
of the service (or takes it back from anyone). Recorded on the message (the queue shows
and filters it) and as an ``assigned`` event with who did it; nothing is sent.

The use case checks who may (``needed``, ``requests.permit``: the console's rule, for every
face): taking a message oneself is answering it (REPLY on its service: an agent of the
service), and so is letting go of one's own (« Ne plus traiter »: it is taken from no one);
giving it to someone else, or taking it from its agent without taking it oneself, is
reassigning (REASSIGN: a head of the service). Checked again where it is written, on the
service and the assignee read there (``requests.permit_again``): a message moved, or
given to a colleague, meanwhile."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mailbot.app.message_view import service_of
from mailbot.app.requests import (
    GIVING,
    RELEASING,
    TAKING,
    AgentLookup,
    Doing,
    MessageRef,
    agent_label,
    find_agent,
    once,
    owner,
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


def needed(agent_id: str, assignee: str | None, holder: str | None) -> Doing:
    """What giving the message that ``holder`` has (None: no one) to ``assignee`` (None: to
    nobody) asks of ``agent_id``: taking it oneself, or releasing one's own (or a message
    no one has), asks what answering does (REPLY); anything else takes it from, or gives
    it to, a colleague (REASSIGN). The console asks the same before its form is done."""
    if assignee == agent_id:
        return TAKING
    if assignee is None and holder in (agent_id, None):
        return RELEASING
    return GIVING


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
    do what ``needed`` says: answer the service's mail (taking it, or releasing their
    own) or reassign it (giving it to another, taking it from another): what the console
    checks, here for every face — and again where it is written."""
    agent = find_agent(config, agents, agent_id)
    row = tracked_message(store, message)
    service = service_of(config, row)
    permit(config, agent_id, agent, needed(agent_id, assignee, row.assignee), service)
    if previous(store, EventKind.ASSIGNED, key, agent=agent_id) is not None:
        return Assigned(row.reference, row.assignee, row.assignee, repeated=True)
    _check_assignee(config, agents, assignee, service)
    held: list[str | None] = []

    def record(tx: Transaction) -> int:
        current = owner(tx, row)  # moved, or given to a colleague, meanwhile?
        now = service_of(config, current)
        permit(config, agent_id, agent, needed(agent_id, assignee, current.assignee), now)
        _check_assignee(config, agents, assignee, now)
        held.append(current.assignee)
        detail = {"agent": agent_id, "assignee": assignee, "previous": current.assignee}
        stored.set_assignee(tx.conn, row.id, assignee)
        tx.add_event(row.id, EventKind.ASSIGNED, json.dumps(detail, ensure_ascii=False))
        return 0

    _, repeated = once(store, EventKind.ASSIGNED, key, record, agent=agent_id)
    return Assigned(row.reference, assignee, held[0] if held else row.assignee, repeated)


def _check_assignee(
    config: Config, agents: AgentLookup, assignee: str | None, service: str
) -> None:
    """RequestError when ``assignee`` is no agent, or one who does not handle ``service``
    (None: to nobody, nothing to check)."""
    if assignee is None:
        return
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
