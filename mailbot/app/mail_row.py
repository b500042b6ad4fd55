"""The row a mail becomes (``new_message``), whatever was decided: its columns from the
parsed mail, the decision, the routing (``routing_columns``) and the AR's status; its
insert, or a retried row's update (``save_row``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mailbot.app.acknowledge import Plan
from mailbot.app.folders import Where
from mailbot.app.recording import Direct
from mailbot.core.incoming import IncomingMail
from mailbot.core.message import ParsedMessage, parent_thread
from mailbot.core.policy import ArDecision
from mailbot.core.routing import RoutingDecision
from mailbot.core.statuses import ArStatus, Decision
from mailbot.store import NewMessage


def _content_hash(where: Where, mail: IncomingMail, parsed: ParsedMessage | None) -> str:
    """The mail's hash; for a mail the server would not read, a hash of its location, not
    of its (unknown) bytes, so that it never equals another mail's (sha256 of b"" would be
    every other unread mail's, and an empty mail's: found as their duplicate)."""
    if parsed is not None:
        return parsed.content_hash
    if mail.refused:
        location = f"unread:{where.mailbox}/{where.folder}/{where.uidvalidity}/{mail.uid}"
        return hashlib.sha256(location.encode()).hexdigest()
    return hashlib.sha256(mail.raw).hexdigest()


def new_message(
    where: Where,
    mail: IncomingMail,
    parsed: ParsedMessage | None,
    decision: Decision,
    reasons: tuple[str, ...],
    **decided: Any,
) -> NewMessage:
    """The one row recorded about a mail, whatever was decided (``decided``: the columns a
    decision fills). ``parsed`` is None when even parsing failed (quarantine)."""
    return NewMessage(
        mailbox=where.mailbox,
        folder=where.folder,
        uidvalidity=where.uidvalidity,
        uid=mail.uid,
        message_id=parsed.message_id if parsed else None,
        content_hash=_content_hash(where, mail, parsed),
        fingerprint=parsed.fingerprint if parsed else None,
        received_at=mail.internaldate,
        sender=decided.pop("sender", None),
        subject=parsed.subject if parsed else "",
        in_reply_to=decided.pop("in_reply_to", None),
        decision=decision,
        reasons=reasons,
        size=max(len(mail.raw), mail.size),
        defects=(*(parsed.defects if parsed else ()), *mail.defects),
        thread_references=_thread_references(parsed),
        **decided,
    )


def _thread_references(parsed: ParsedMessage | None) -> str | None:
    """What a reply's References continue (RFC 5322 §3.6.4), bounded: Message-IDs only."""
    ids = parent_thread(parsed.references, parsed.in_reply_to) if parsed else ()
    return " ".join(ids) or None


def save_row(rec: Direct, row: NewMessage, existing: int | None) -> int:
    if existing is None:
        return rec.record(row)
    rec.tx.update_message(existing, row)
    return existing


# One encoder for every row: ``json.dumps`` with an option builds one per call (~7 µs).
_ROUTING_JSON = json.JSONEncoder(ensure_ascii=False)


def routing_columns(
    routing: RoutingDecision | None, own: str, probe: bool = False
) -> dict[str, Any]:
    """The row's routing columns. A weak decision ("to check") keeps the mail at its
    mailbox's own service; the suggestion is kept in the routing JSON. A probe is the
    mailbox's own service's."""
    if probe:
        return {"service": own}
    if routing is None:
        return {}
    matched = [{"rule": hit.rule, "detail": hit.detail} for hit in routing.rule_hits if hit.matched]
    recorded: dict[str, object] = {"hits": matched, "scores": dict(routing.scores)}
    if routing.model:  # the model's view, and its combination with the rules
        recorded |= {"model": routing.model, "confidence": dict(routing.confidence)}
    if routing.to_check:
        recorded |= {
            "to_check": True,
            "suggested": {"service": routing.service, "reorient": routing.reorient},
        }
    return {
        "service": routing.recorded_service(own),
        "category": routing.category,
        "priority": routing.priority,
        "reorient": None if routing.to_check else routing.reorient,
        "routing": _ROUTING_JSON.encode(recorded),
        "to_check": int(routing.to_check),
    }


def row_ar_status(
    plan: Plan | None, decision: ArDecision, send: bool, withheld: ArStatus | None
) -> ArStatus:
    if plan is not None:
        return ArStatus.PENDING
    if decision.send and not send:
        return withheld or ArStatus.BACKFILL
    return ArStatus.NONE


def decision_and_reasons(decision: ArDecision) -> tuple[Decision, tuple[str, ...]]:
    return decision_name(decision), decision.reasons


def decision_name(decision: ArDecision) -> Decision:
    if decision.send:
        return Decision.ACKNOWLEDGE
    if decision.follow_up_of:
        return Decision.FOLLOW_UP
    return Decision.SKIP
