"""Which of the message page's actions a message's state allows, and why not the others.

One table (``_hold``) decides, read by both sides: the use cases refuse with it
(``no_reply``, ``transfer``), in the transaction that records the action, and the
message page shows only the forms it allows, with the refusal's own French sentence in
place of the others. Written twice, the page and the refusals would drift apart: a form
that can only be refused is a trap for the agent who fills it in.

Only the actions a state can forbid are here: closing without a reply, transferring (and
a correction that changes the service, which is a transfer) and reopening. Replying,
recording an answer given otherwise and assigning are always allowed on a citizen's
message (a second reply is a reply; an answer recorded after a closing ends it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from mailbot.core.statuses import EventKind
from mailbot.errors import RequestError
from mailbot.store import Store, Transaction
from mailbot.store import console as stored


class Act(StrEnum):
    """An action of the message page that the message's state may forbid."""

    CLOSE = "close"  # « Aucune réponse nécessaire »
    TRANSFER = "transfer"  # « Transférer », and « Corriger » to another service
    REOPEN = "reopen"  # « Rouvrir » a message closed without a reply


class Hold(StrEnum):
    """What stands in an action's way."""

    ANSWERED = "answered"  # a reply accepted, or an answer given otherwise
    SENDING = "sending"  # a reply queued, not yet accepted by the server
    CLOSED = "closed"  # closed without a reply
    OPEN = "open"  # not closed without a reply: nothing to reopen


# What an agent reads is refused: « il ne peut plus être … ».
_PARTICIPLES = {Act.CLOSE: "classé sans réponse", Act.TRANSFER: "transféré", Act.REOPEN: "rouvert"}
_ALREADY_CLOSED = "ce courriel est déjà classé sans réponse."  # closing it again, undated


@dataclass(frozen=True)
class MessageState:
    """What the actions depend on, read at once. ``answered_at`` and ``closed_at`` only
    date the page's sentences (the refusals, read in the transaction, go without)."""

    reference: str
    answered: bool
    sending: bool
    closed: str | None  # the NoReplyReason of a message closed without a reply
    answered_at: datetime | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True)
class Offer:
    """The message page's actions: those allowed, and for each other its French sentence
    (a whole sentence, capitalised, where the form would have been)."""

    allowed: frozenset[Act]
    why_not: dict[Act, str]


def read_state(conn: Connection, row: Any) -> MessageState:
    """The state of ``row``'s message as ``conn`` sees it (in a transaction: as it is
    written)."""
    answered, sending = stored.reply_state(conn, row.id)
    closed = stored.closed_reason(conn, row.id)
    return MessageState(row.reference or f"#{row.id}", answered, sending, closed)


def _hold(state: MessageState, act: Act) -> Hold | None:
    """The one rule: what forbids ``act`` in ``state`` (None: allowed). A reply on its way
    answers the message: closing it would misstate the figures, transferring it tell the
    citizen that another service will answer, after the answer."""
    if state.answered:
        return Hold.ANSWERED
    if act is Act.REOPEN:
        return None if state.closed is not None else Hold.OPEN
    if state.sending:
        return Hold.SENDING
    if state.closed is not None:
        return Hold.CLOSED
    return None


def allowed(state: MessageState) -> frozenset[Act]:
    return frozenset(act for act in Act if _hold(state, act) is None)


def refusal(state: MessageState, act: Act, zone: ZoneInfo | None = None) -> RequestError | None:
    """The RequestError refusing ``act`` in ``state`` (None: allowed): English for the
    CLI, ``shown`` in French for the console, dated in ``zone`` when the state says when."""
    hold = _hold(state, act)
    if hold is None:
        return None
    shown = _french(state, hold, act, zone)
    return RequestError("reference", state.reference, _english(hold, act), shown=shown)


def refuse(tx: Transaction, row: Any, act: Act) -> MessageState:
    """Raise the refusal of ``act`` on ``row``'s message, read in ``tx`` (where the action
    is written: a reply recorded meanwhile is seen); else the state read."""
    state = read_state(tx.conn, row)
    refused = refusal(state, act)
    if refused is not None:
        raise refused
    return state


def answered_meanwhile(state: MessageState, act: Act) -> RequestError:
    """The refusal of ``act`` when a row's guarded UPDATE finds the message answered after
    ``state`` was read in its transaction (PostgreSQL's read committed lets a reply commit
    in between)."""
    refused = refusal(replace(state, answered=True), act)
    return refused or RequestError("reference", state.reference, "answered meanwhile")


def offer(store: Store, row: Any, events: Iterable[Any], zone: ZoneInfo) -> Offer:
    """The message page's actions for ``row`` (read now), its sentences dated in ``zone``
    (``events``: the message's, with ``kind`` and ``at``: when it was closed)."""
    with store.engine.connect() as conn:
        state = read_state(conn, row)
    closings = [e.at for e in events if e.kind == EventKind.NO_REPLY_NEEDED]
    dated = replace(
        state,
        answered_at=row.first_reply_at if state.answered else None,
        closed_at=closings[-1] if closings and state.closed is not None else None,
    )
    why_not = {}
    for act in Act:
        refused = refusal(dated, act, zone)
        if refused is not None and refused.shown:
            why_not[act] = refused.shown[0].upper() + refused.shown[1:]
    return Offer(allowed(dated), why_not)


def _english(hold: Hold, act: Act) -> str:
    """The CLI's refusal, as it always read."""
    if hold is Hold.CLOSED and act is Act.CLOSE:
        return "already closed without a reply"
    return {
        Hold.ANSWERED: f"already answered: nothing to {act.value}",
        Hold.SENDING: f"a reply is on its way: nothing to {act.value}",
        Hold.CLOSED: f"closed without a reply: nothing to {act.value}",
        Hold.OPEN: f"not closed without a reply: nothing to {act.value}",
    }[hold]


def _french(state: MessageState, hold: Hold, act: Act, zone: ZoneInfo | None) -> str:
    """The refusal as an agent reads it (a clause: « Action impossible : » comes first)."""
    then = _PARTICIPLES[act]
    if hold is Hold.ANSWERED:
        when = _on(state.answered_at, zone)
        said = f"a reçu une réponse{when}" if when else "a déjà reçu une réponse"
        return f"ce courriel {said} : il ne peut plus être {then}."
    if hold is Hold.SENDING:
        return f"une réponse à ce courriel est en cours d'envoi : il ne peut plus être {then}."
    if hold is Hold.OPEN:
        return "ce courriel n'est pas classé sans réponse : il n'y a rien à rouvrir."
    when = _on(state.closed_at, zone)
    if act is Act.CLOSE:
        return f"ce courriel a été classé sans réponse{when}." if when else _ALREADY_CLOSED
    return f"ce courriel a été classé sans réponse{when} : il ne peut plus être {then}."


def _on(at: datetime | None, zone: ZoneInfo | None) -> str:
    """« le 03/12/2026 », the day in the prefecture's zone; "" when unknown."""
    if at is None or zone is None:
        return ""
    return f" le {at.astimezone(zone).strftime('%d/%m/%Y')}"
