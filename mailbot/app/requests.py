"""What every agent's request (a reply, a transfer, a message answered elsewhere) needs:
the message it is about, the agent making it, and the guarantee that it is done once.

The CLI and the web console name a message by its tracking reference (``SM-2026-000123``)
or its row id (``42`` or ``#42``, for mail without a reference). A request may carry an
idempotency key — the web console's form token — stored with what the request did: a
double click, or the same form sent from two tabs, queues one mail and records one event.
A key made from the message's state when the form was shown (its id and its last event; for a
reply, its last answer) is shared by two tabs opened on the same message. A key is the
agent's (``_scoped``): a repeated request returns its first answer without any check, and
only to the agent who made it — what they already got, when they were allowed it.

An agent's right is checked twice (``permit``): when the request is read, to refuse early
and say why, and again in the transaction that writes it (``permit_again``), on the
message's service and assignee read there with its row locked — a head may have moved it
meanwhile, and the first check would have let an agent act on another service's mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import sqlalchemy as sa

from mailbot.config import Agent, Config
from mailbot.core.permissions import POLICY, Action, Role, allowed
from mailbot.core.statuses import Decision
from mailbot.errors import ConfigError, RepeatedRequestError, RequestError
from mailbot.store import Store, Transaction
from mailbot.store import console as stored

MessageRef = str | int  # a tracking reference, or a row id (42, "42", "#42")
AgentLookup = Callable[[str], Agent | None]  # agents.yaml, as the face reads it
_ROW_ID = re.compile(r"^#?(\d{1,12})$")


def _lookup(store: Store, ref: MessageRef) -> sa.Row[Any] | None:
    text = str(ref).strip()
    row_id = _ROW_ID.match(text)
    return store.message(id=int(row_id.group(1))) if row_id else store.message(reference=text)


def find_message(store: Store, ref: MessageRef) -> sa.Row[Any]:
    """The recorded message ``ref`` names; RequestError when there is none."""
    row = _lookup(store, ref)
    if row is None:
        raise RequestError(
            "reference", str(ref).strip(), "no such message", shown="ce courriel est introuvable."
        )
    return row


def tracked_message(store: Store, ref: MessageRef) -> sa.Row[Any]:
    """A citizen's acknowledged message, which mail can be sent about."""
    row = _lookup(store, ref)
    if row is None or row.decision != Decision.ACKNOWLEDGE or not row.sender:
        raise RequestError(
            "reference",
            str(ref).strip(),
            "no tracked message with a sender",
            shown="ce courriel n'est pas le message d'un usager auquel la préfecture peut"
            " écrire (courriel d'un robot, écarté ou sans expéditeur).",
        )
    return row


def find_agent(config: Config, agents: AgentLookup, agent_id: str) -> Agent:
    """The profile of the agent making a request (agents.yaml). ConfigError when it has
    none: their signature and their services come from there (an agent removed from the
    file while logged in to the console is told so, in French)."""
    agent = agents(agent_id)
    if agent is None:
        raise ConfigError(
            str(config.agents),
            f"agents.{agent_id}",
            "no such agent",
            shown=f"l'identifiant « {agent_id} » n'a pas de profil dans le fichier des agents"
            " (agents.yaml) : demandez à l'administrateur de mailbot de l'y ajouter.",
        )
    return agent


class Doing(NamedTuple):
    """What an agent's request does, as the permission table and a refusal name it."""

    action: Action  # the table's action that allows it (core/permissions.POLICY)
    name: str  # English, for the command line and the logs
    verb: str  # French, for the agent: "… ne permet pas de <verb>"
    who: str = "un agent"  # French: "seul <who> de ce service peut <verb>"


REPLYING = Doing(Action.REPLY, "send a reply", "répondre à ce courriel")
MARKING_ANSWERED = Doing(Action.REPLY, "mark answered", "marquer ce courriel comme répondu")
CLOSING = Doing(Action.REPLY, "close without reply", "clore ce courriel sans réponse")
REOPENING = Doing(Action.REPLY, "reopen", "rouvrir ce courriel")
MARKING_READ = Doing(Action.REPLY, "mark read", "marquer ce courriel comme lu")
TAKING = Doing(Action.REPLY, "take the message", "prendre ce courriel")  # assigned to oneself
# Letting go of a message one has (« Ne plus traiter »): it is taken from no one else.
RELEASING = Doing(Action.REPLY, "release the message", "ne plus traiter ce courriel")
# Moving a message away from a service, or from its agent, is its heads' (REASSIGN).
GIVING = Doing(
    Action.REASSIGN,
    "give the message to another agent or to nobody",
    "confier ce courriel à un autre agent ou le retirer à son agent",
    "un chef",
)
TRANSFERRING = Doing(
    Action.REASSIGN, "transfer", "transférer ce courriel à un autre service", "un chef"
)
CORRECTING = Doing(
    Action.REASSIGN, "correct the routing", "corriger l'orientation de ce courriel", "un chef"
)


def permit(config: Config, agent_id: str, agent: Agent, act: Doing, service: str) -> None:
    """Refuse (RequestError naming the agent, the action and the service) what the agent's
    role or services do not allow on ``service``'s mail: the console's table
    (core/permissions), applied by the use case whichever face asks — the console checks
    before (its 403 page), ``mailbot reply``/``answered``/``transfer``/``correct --agent``
    have nothing else."""
    role = Role(agent.role)
    if allowed(role, agent.console_services, act.action, service):
        return
    label = service_label(config, service)
    if act.action not in POLICY[role]:
        raise RequestError(
            "agent",
            agent_id,
            f"their role {role.value} may not {act.name} ({act.action.value}), here on the"
            f" service {service}'s mail",
            shown=f"votre rôle ne permet pas de {act.verb} (service « {label} »).",
        )
    theirs = ", ".join(agent.console_services)
    raise RequestError(
        "agent",
        agent_id,
        f"may {act.name} ({act.action.value}) on the mail of their services ({theirs}),"
        f" not on the service {service}'s",
        shown=f"ce courriel est celui du service « {label} », que vous ne traitez pas :"
        f" seul {act.who} de ce service peut {act.verb}.",
    )


def service_of(config: Any, row: Any) -> str:
    """The service a message belongs to: its own, else its mailbox's."""
    return str(row.service or config.mailboxes[row.mailbox].service)


def owner(tx: Transaction, row: Any) -> sa.Row[Any]:
    """Whose ``row``'s message is as ``tx`` reads it — its ``service``, ``mailbox`` and
    ``assignee`` — with the row locked until ``tx`` ends (store/console.owner_locked): what
    a request writing in ``tx`` checks its right on. RequestError when it is gone (purged
    since it was read)."""
    current = stored.owner_locked(tx.conn, row.id)
    if current is None:
        raise RequestError(
            "reference",
            row.reference or f"#{row.id}",
            "no such message (deleted meanwhile)",
            shown="ce courriel est introuvable.",
        )
    return current


def permit_again(
    tx: Transaction, config: Config, agent_id: str, agent: Agent, act: Doing, row: Any
) -> sa.Row[Any]:
    """``permit`` again where the request writes, on the service read in ``tx`` (``owner``,
    returned): the message moved to another service since it was first checked — a
    head's transfer or correction in between — is refused as if it had been there from
    the start."""
    current = owner(tx, row)
    permit(config, agent_id, agent, act, service_of(config, current))
    return current


def service_label(config: Config, service: str) -> str:
    """How a service is named to an agent in a refusal: its name in rules.yaml (« Cartes
    grises »), else its key as typed (an unknown one, or the re-orientation pseudo-service)."""
    known = config.services.get(service)
    return known.name if known is not None else service


def agent_label(agent_id: str, agent: Agent) -> str:
    """How an agent is named to a colleague: "Camille Durand (cdurand)"."""
    name = f"{agent.first_name or ''} {agent.last_name or ''}".strip()
    return f"{name} ({agent_id})" if name else agent_id


def form_key(action: str, row: Any, state: int | str) -> str:
    """A console form's idempotency key: the action, the message and its state when the
    form was shown. The message is named by its id *and* its receipt time: on SQLite a new
    row may take the id of a purged one (the highest ids deleted, a rowid is reused), and
    the first reply to it would be found already done under the old message's key."""
    return f"console-{action}:{row.id}:{row.received_at.isoformat()}:{state}"


def previous(store: Store, kind: str, key: str | None, *, agent: str) -> int | None:
    """What ``agent``'s request done before under ``key`` returned (an outbox id, 0 for
    none), or None: checked first, before their right, so that a repeated request gets its
    first answer even when the first one changed what would now be checked (a message
    transferred out of their service). Safe without that check: the answer is the agent's
    own, found under their key only — what they were given when they were allowed it;
    another agent sending the same form's key is not found here and goes through the
    checks."""
    if key is None:
        return None
    with store.transaction() as tx:
        return tx.request_outcome(_scoped(kind, agent, key))


def once(
    store: Store, kind: str, key: str | None, work: Callable[[Transaction], int], *, agent: str
) -> tuple[int, bool]:
    """Run ``work`` in one transaction, once per ``agent`` and ``key``: (what it returned —
    an outbox id, 0 for none — and whether the request had been done before, in which case
    ``work`` did not run and the first run's outbox id is returned). Two requests with one
    key at the same moment: the second waits for the first's transaction, then finds it
    done. Another agent's request with the same key is theirs: ``work`` runs (its checks
    refuse what the first made pointless: an answer given, a message closed, moved)."""
    if key is None:
        with store.transaction() as tx:
            return work(tx), False
    scoped = _scoped(kind, agent, key)
    try:
        with store.transaction() as tx:
            tx.claim_request(scoped)
            outcome = work(tx)
            tx.set_request_outcome(scoped, outcome)
            return outcome, False
    except RepeatedRequestError:
        with store.transaction() as tx:
            return tx.request_outcome(scoped) or 0, True


def _scoped(kind: str, agent: str, key: str) -> str:
    """The stored key: the request's kind, the agent's and the form's key. A form's key
    names the message and its state, not who sends it, and a repeated request is answered
    unchecked: shared with another agent, it would tell them « done » — with the first
    request's outbox id — for a transfer or a reply they may not make."""
    return f"{kind}\0{agent}\0{key}"
