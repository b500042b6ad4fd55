"""A citizen's message answered outside mail — by phone, at the counter, by letter — marked
so by an agent, with the reason: it counts as the reply at that time (the delay and the
"answered" figures), with no signature to check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from mailbot.app.message_view import service_of
from mailbot.app.requests import (
    MARKING_ANSWERED,
    AgentLookup,
    MessageRef,
    find_agent,
    find_message,
    once,
    permit,
    permit_again,
    previous,
)
from mailbot.config import Config
from mailbot.core.answers import AnsweredHow
from mailbot.core.clock import Clock, utcnow
from mailbot.core.statuses import Decision, EventKind
from mailbot.errors import RequestError
from mailbot.store import UNHANDLED_REASONS, Store, Transaction

__all__ = ["Answered", "AnsweredHow", "mark_answered"]  # AnsweredHow: where it always was


@dataclass(frozen=True)
class Answered:
    """The answer recorded; ``first``: it is now the message's first reply (an earlier
    reply keeps counting otherwise). ``repeated``: the same request was done before."""

    reference: str
    first: bool
    repeated: bool = False


def mark_answered(
    config: Config,
    store: Store,
    agents: AgentLookup,
    agent_id: str,
    message: MessageRef,
    how: AnsweredHow,
    reason: str,
    at: datetime | None = None,
    key: str | None = None,
    clock: Clock = utcnow,
) -> Answered:
    """Record that ``agent_id`` answered the citizen's ``message`` by ``how`` at ``at``
    (default: now), with the reason; once per ``key``. Refused (RequestError naming the
    agent, the action and the service) when their role or services do not let them
    answer the message's service's mail: the console's rule, for every face."""
    agent = find_agent(config, agents, agent_id)
    row = find_message(store, message)
    permit(config, agent_id, agent, MARKING_ANSWERED, service_of(config, row))
    name = row.reference or f"#{row.id}"
    if previous(store, EventKind.ANSWERED_ELSEWHERE, key, agent=agent_id) is not None:
        return Answered(name, first=False, repeated=True)
    unhandled = row.decision == Decision.QUARANTINE or (
        row.decision == Decision.SKIP and row.reasons == UNHANDLED_REASONS
    )
    if row.decision != Decision.ACKNOWLEDGE and not unhandled:
        raise RequestError(
            "reference",
            name,
            "not a citizen's message (nothing to answer)",
            shown="ce courriel n'est pas le message d'un usager : il n'y a rien à y répondre.",
        )
    if not reason.strip():
        raise RequestError(
            "reason",
            "''",
            "say how the question was settled",
            shown="indiquez comment la question a été réglée.",
        )
    when = at or clock()
    if when.tzinfo is None or when < row.received_at or when > clock():
        raise RequestError(
            "at",
            when.isoformat(),
            "between the message's receipt and now, with a zone",
            shown="la date de la réponse doit se situer entre la réception du courriel et"
            " maintenant.",
        )
    detail = {"how": AnsweredHow(how).value, "agent": agent_id, "reason": reason.strip()}

    def record(tx: Transaction) -> int:
        permit_again(tx, config, agent_id, agent, MARKING_ANSWERED, row)  # moved meanwhile?
        said = json.dumps(detail, ensure_ascii=False)
        tx.record_reply(row.id, when, None, said, EventKind.ANSWERED_ELSEWHERE)
        return 0

    _, repeated = once(store, EventKind.ANSWERED_ELSEWHERE, key, record, agent=agent_id)
    first = row.first_reply_at is None or row.first_reply_at > when
    return Answered(name, first and not repeated, repeated)
