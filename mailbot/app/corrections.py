"""The agents' routing corrections: a re-route or a re-categorisation of a tracked mail.

A correction is recorded beside the decision it replaces (who, when, the old and the new
service, category and re-orientation target); the message row then carries the corrected
values, so the indicators count the mail where it belongs, and its "to check" mark is
cleared. ``correct`` sends nothing (the citizen already has the AR); the console's
correction to another service, and ``mailbot correct --transfer``, is a transfer
(``correct_in_console``). Only acknowledged citizens' mail can be corrected —
robots, quarantined and skipped mail never are — and ``mailbot routing train`` learns from
these corrections (fetching the mails again from IMAP: bodies are never stored).

An agent's correction is a reassignment: only a head of the message's current service may
make it (``requests.permit``, the console's REASSIGN), from the console or ``mailbot
correct --agent``. ``mailbot correct`` without an agent is the operator's command in the
server's shell, where agents.yaml itself is edited: it names no agent and is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbot.app.message_view import service_of
from mailbot.app.requests import (
    CORRECTING,
    AgentLookup,
    MessageRef,
    find_agent,
    once,
    permit,
    previous,
    service_label,
    tracked_message,
)
from mailbot.app.transfer import Transfers
from mailbot.config import REORIENT_SERVICE, Agent, Config, load_agents
from mailbot.core.clock import utcnow
from mailbot.core.statuses import Decision, EventKind
from mailbot.errors import MessageError
from mailbot.store import Store, Transaction
from mailbot.store import corrections as stored
from mailbot.store.console import owner_locked

CORRECTION_REASON = "correction de l'orientation"


@dataclass(frozen=True)
class Correction:
    reference: str
    old: tuple[str | None, str | None, str | None]
    new: tuple[str, str, str | None]
    agent: str | None
    at: datetime


def _check(config: Config, service: str, category: str, reorient: str | None) -> None:
    """MessageError for a correction that cannot be (its English for the CLI, ``shown``
    in French for the console's agent, who picks from lists: what to choose instead)."""
    routing = config.routing
    if routing is None:
        raise MessageError(
            "routing is not configured (rules.yaml has no routing section)",
            shown="l'orientation des courriels n'est pas configurée : signalez-le à"
            " l'administrateur de mailbot.",
        )
    services = {*config.services, REORIENT_SERVICE}
    if service not in services:
        raise MessageError(
            f"unknown service {service!r} (known: {', '.join(sorted(services))})",
            shown=f"le service « {service} » n'existe pas : choisissez-en un dans la liste.",
        )
    if category not in routing.categories:
        known = ", ".join(routing.categories)
        raise MessageError(
            f"unknown category {category!r} (known: {known})",
            shown=f"la catégorie « {category} » n'existe pas : choisissez-en une dans la liste.",
        )
    allowed = routing.combinations.get(service)
    if allowed and category not in allowed:
        raise MessageError(
            f"category {category!r} is not allowed for service {service!r} (guide § 3:"
            f" {', '.join(allowed)})",
            shown=f"la catégorie « {category} » n'est pas prévue pour le service"
            f" « {service_label(config, service)} » (guide de routage, § 3) : choisissez"
            f" l'une de celles-ci : {', '.join(allowed)}.",
        )
    _check_reorient(service, reorient, set(routing.reorientation))


def _check_reorient(service: str, reorient: str | None, targets: set[str]) -> None:
    """A re-orientation names its administration (one of ``targets``); the console's form
    has none to give."""
    if (service == REORIENT_SERVICE) != (reorient is not None):
        raise MessageError(
            f"--reorient is required with service {REORIENT_SERVICE}, and only with it",
            shown="une réorientation vers une autre administration doit nommer cette"
            " administration : elle ne se fait pas par ce formulaire.",
        )
    if reorient is not None and reorient not in targets:
        known = ", ".join(sorted(targets))
        raise MessageError(
            f"unknown re-orientation target {reorient!r} (known: {known})",
            shown=f"l'administration « {reorient} » n'est pas une destination de"
            " réorientation connue.",
        )


def correct(
    config: Config,
    store: Store,
    reference: str,
    service: str,
    category: str,
    reorient: str | None = None,
    agent: str | None = None,
    agents: AgentLookup | None = None,
) -> Correction:
    """Record a correction of a tracked mail's routing; sends nothing (the CLI's ``mailbot
    correct``; the console's goes through ``correct_in_console``). With ``agent`` (looked
    up in ``agents``, by default agents.yaml read now), refused unless they may reassign
    the message's current service's mail (RequestError naming them, the action and the
    service); without, the operator's correction, recorded with no agent."""
    _check(config, service, category, reorient)
    who = None if agent is None else (agent, find_agent(config, agents or _file(config), agent))
    now = utcnow()
    with store.transaction() as tx:
        row = _correctable(tx, reference)
        if who is not None:
            _permitted(config, *who, row)
        _record(tx, row, (service, category, reorient), agent, now)
    return Correction(
        reference,
        (row.service, row.category, row.reorient),
        (service, category, reorient),
        agent,
        now,
    )


def _file(config: Config) -> AgentLookup:
    """agents.yaml, read when asked (as ``App.agent``): for a face that gives no lookup."""
    return lambda agent_id: load_agents(config.agents, config).get(agent_id)


def _permitted(config: Config, agent_id: str, agent: Agent, row: Any) -> None:
    """An agent's correction moves the message out of its service or re-classes it there:
    the heads' right on its current service (REASSIGN), as the console's « Corriger »."""
    permit(config, agent_id, agent, CORRECTING, service_of(config, row))


def _correctable(tx: Transaction, reference: str) -> Any:
    """The message a correction is about, read in its transaction with its row locked
    (``owner_locked``, then read again: as it is where the correction is written, a head's
    transfer waiting or seen): an acknowledged citizen's mail (MessageError otherwise)."""
    row = stored.message_by_reference(tx.conn, reference)
    if row is not None:
        owner_locked(tx.conn, row.id)
        row = stored.message_by_reference(tx.conn, reference)
    if row is None:
        raise MessageError(
            f"no tracked mail with reference {reference!r}",
            shown="ce courriel est introuvable : son orientation ne peut pas être corrigée.",
        )
    if row.decision != Decision.ACKNOWLEDGE:
        raise MessageError(
            f"{reference} was not acknowledged as a citizen's mail (decision:"
            f" {row.decision}); only acknowledged mail is routed and corrected",
            shown="ce courriel n'a pas été reçu comme le message d'un usager : son"
            " orientation ne peut pas être corrigée.",
        )
    if row.probe:  # acknowledged to test the ARs, but mailbot's own mail: never trained on
        raise MessageError(
            f"{reference} is a probe's test mail (mailbot's own, never routed); only a"
            " citizen's mail is corrected",
            shown="ce courriel est un message de test de la supervision de mailbot : son"
            " orientation ne peut pas être corrigée.",
        )
    return row


def _record(
    tx: Transaction,
    row: Any,
    routed: tuple[str, str, str | None],
    agent: str | None,
    now: datetime,
) -> None:
    """The correction beside the decision it replaces (``row`` read in this transaction)."""
    stored.add_correction(tx.conn, row, routed, agent, now)
    detail = f"{row.service}/{row.category} -> {routed[0]}/{routed[1]}"
    tx.add_event(row.id, EventKind.ROUTING_CORRECTED, detail + (f" by {agent}" if agent else ""))


def correct_in_console(
    transfers: Transfers,
    agent: str,
    message: MessageRef,
    routed: tuple[str, str],
    reason: str,
    key: str | None = None,
) -> bool:
    """An agent's correction from the console (once per ``key``, the form's state), or
    from ``mailbot correct --transfer`` (no key: a command is run once). A new
    service moves the mail, so it is a transfer — the citizen's notice, the forward to the
    service, the reason (the agent's, else ``CORRECTION_REASON``) — with the correction
    recorded in the same transaction (the routing learns from it); a category alone is
    only recorded. True when the mail changed service. Refused (RequestError) unless the
    agent may reassign the message's current service's mail (a head of it), whether the
    service changes or not: the console's « Corriger », checked here for every face."""
    service, category = routed
    config, store = transfers.config, transfers.store
    if previous(store, EventKind.TRANSFERRED, key, agent=agent) is not None:
        return True  # a double click on a correction that moved the mail: done already
    _check(config, service, category, None)
    profile = find_agent(config, transfers.agents, agent)
    row = tracked_message(store, message)
    _permitted(config, agent, profile, row)

    def record(tx: Transaction) -> int:
        current = _correctable(tx, row.reference)
        _permitted(config, agent, profile, current)  # again, where it is written: moved since?
        _record(tx, current, (service, category, None), agent, utcnow())
        return 0

    if service == service_of(config, row):
        once(store, EventKind.ROUTING_CORRECTED, key, record, agent=agent)
        return False
    transfers.transfer(
        agent, row.id, service, reason.strip() or CORRECTION_REASON, key, also=record
    )
    return True


def corrected_messages(store: Store) -> list[Any]:
    """Each corrected acknowledged mail once, with its latest correction and its location."""
    return stored.corrected_messages(store.engine)


def history(store: Store, reference: str) -> list[Any]:
    """The corrections of one mail, oldest first."""
    return stored.corrections_of(store.engine, reference)
