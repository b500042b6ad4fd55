"""One mail recorded: a copy of a recorded mail (``app/copies``), or the AR decision
(``app/policy_lookups``) and what follows from it: a reference, the routing, the mails
planned (``app/acknowledge``), the row (``app/mail_row``) and the claim of its
fingerprint, the message a follow-up continues written again, the events, the mails
queued; a skipped mail read as a delivery report (``app/bounces``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbot.app.acknowledge import Plan, Received
from mailbot.app.bounces import note_bounce
from mailbot.app.copies import Copies, claim_copy, copy_detail, is_left_for_person
from mailbot.app.folders import Where
from mailbot.app.mail_row import (
    decision_and_reasons,
    decision_name,
    new_message,
    routing_columns,
    row_ar_status,
    save_row,
)
from mailbot.app.policy_lookups import Policy, PolicyLookups
from mailbot.app.recording import Direct
from mailbot.app.routing_pool import RoutingAhead
from mailbot.core.facts import mail_language, routing_input, sender_name
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.core.message import ParsedMessage
from mailbot.core.policy import ArDecision, answer_addresses
from mailbot.core.routing import RoutingDecision, RoutingInput, decide
from mailbot.core.statuses import ArStatus, Decision, EventKind
from mailbot.store import NewMessage
from mailbot.store.records import FirstCopy

log = logging.getLogger(__name__)
# The event that records each decision about a citizen's mail.
DECISION_EVENTS = {
    Decision.ACKNOWLEDGE: EventKind.AR_QUEUED,
    Decision.FOLLOW_UP: EventKind.FOLLOW_UP,
    Decision.SKIP: EventKind.SKIPPED,
}
REORIENTATION_REPLY = "automatic:reorientation"  # the detail of its reply event


@dataclass(frozen=True)
class Handling:
    """What acknowledging a mail gave: its reference, routing, language, and the mails
    to send (none when a backfill records history)."""

    reference: str | None = None
    routing: RoutingDecision | None = None
    language: str | None = None
    plan: Plan | None = None


class Deciding(Copies, PolicyLookups):
    """A mail's copy found, or its decision made and recorded with what follows."""

    def _record(
        self,
        rec: Direct,
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage,
        existing: int | None,
        ahead: RoutingAhead | None = None,
    ) -> Outcome:
        """A copy of a recorded mail, or the AR decision and what follows from it.

        A copy in this mailbox first, then the same mail handled in another of our
        mailboxes (To one, Cc the other: the same SMTP copy, same fingerprint). A copy
        there left for a person (no Return-Path: ``FirstCopy.waiting``) is this one's
        original only if this one is left for a person too; handled here (its delivery
        had a Return-Path), this one takes its key over (``claim_copy``)."""
        found = (parsed.message_id, parsed.fingerprint, parsed.content_hash)
        original = rec.duplicate(where.mailbox, *found, exclude=existing)
        if original is not None:
            return self._duplicate(rec, where, mail, parsed, original, existing)
        first = rec.first_copy(parsed.fingerprint) if parsed.fingerprint else None
        elsewhere = first is not None and first.id != existing
        if first is not None and elsewhere and not first.waiting:
            return self._duplicate(rec, where, mail, parsed, first.id, existing, copy_detail(first))
        policy = self._policy(rec, where.mailbox, mail, parsed)
        if (
            first is not None
            and elsewhere
            and is_left_for_person(*decision_and_reasons(policy.decision))
        ):
            # Left for a person there and here: one citizen's mail, counted and listed once.
            return self._duplicate(rec, where, mail, parsed, first.id, existing, copy_detail(first))
        outcome = self._decide(rec, where, mail, parsed, existing, policy, ahead, first)
        if outcome.decision == Decision.SKIP:  # a bounce of our mail? the agents must know
            note_bounce(rec, mail.raw, outcome.reasons, outcome.message_pk, mail.internaldate)
        return outcome

    def _sending(
        self, where: Where, mail: IncomingMail, decision: ArDecision
    ) -> tuple[bool, ArStatus | None]:
        """Whether what the mail is owed is sent now, and if not, why its owed AR is not
        (``Where.withheld``: a UIDVALIDITY change, a restore). A backfill (send=False)
        sends nothing, and records every owed AR as backfilled, whenever the mail came."""
        withheld = where.withheld(mail) if decision.send and self.send else None
        return self.send and withheld is None, withheld

    def _decide(
        self,
        rec: Direct,
        where: Where,
        mail: IncomingMail,
        parsed: ParsedMessage,
        existing: int | None,
        policy: Policy,
        ahead: RoutingAhead | None = None,
        first: FirstCopy | None = None,
    ) -> Outcome:
        """What follows from the AR decision: a reference, the routing, the mails, the key."""
        probe, decision, parent_pk = policy
        handling = Handling()
        send, withheld = self._sending(where, mail, decision)
        if decision.send and decision.recipient:
            handling = self._acknowledge(
                rec, where.mailbox, mail, parsed, decision.recipient, probe, ahead, send
            )
        plan = handling.plan
        row = new_message(
            where,
            mail,
            parsed,
            decision_name(decision),
            decision.reasons,
            in_reply_to=parsed.in_reply_to[0] if parsed.in_reply_to else None,
            reference=handling.reference,
            parent_id=parent_pk,
            ar_status=row_ar_status(plan, decision, send, withheld),
            ar_message_id=plan.mails[0].message_id if plan is not None else None,
            language=_language(handling, decision, parsed),
            sender_name=sender_name(parsed, self.config.policy.contact_form_relays),
            **self._addresses(parsed, decision),
            transferred=int(plan is not None and plan.transferred_to is not None),
            probe=int(probe),
            **routing_columns(handling.routing, self._own(where.mailbox), probe),
        )
        message_pk = save_row(rec, row, existing)
        claim_copy(rec, parsed, row, message_pk, first)
        if row.decision == Decision.FOLLOW_UP and parent_pk is not None:
            _written_again(rec, parent_pk, message_pk, row.received_at)
        rec.events(
            message_pk,
            (EventKind.RECEIVED, parsed.content_type),
            (_decision_event(row), ",".join(decision.reasons)),
            *_plan_events(plan),
        )
        if plan is not None:
            _queue(rec, message_pk, mail, plan)
        return Outcome(
            where.mailbox,
            mail.uid,
            row.decision,
            decision.reasons,
            handling.reference or decision.follow_up_of,
            parsed.subject,
            message_pk,
            _route_label(plan, handling.routing),
        )

    def _addresses(self, parsed: ParsedMessage, decision: ArDecision) -> dict[str, Any]:
        """The row's ``sender`` (where the AR goes) and ``answer_addresses``: the citizen's
        From and Reply-To where an agent's answer may go too, when they are not the sender;
        kept for an acknowledged mail only, whose answers are looked for (``app/sent``)."""
        if not decision.send:
            return {"sender": decision.recipient}
        policy = self.config.policy
        found = answer_addresses(parsed, policy.contact_form_relays, policy.answers_from)
        others = tuple(a for a in found if a != decision.recipient)
        return {"sender": decision.recipient, "answer_addresses": others}

    def _own(self, mailbox: str) -> str:
        return self.config.mailboxes[mailbox].service

    def _acknowledge(
        self,
        rec: Direct,
        mailbox: str,
        mail: IncomingMail,
        parsed: ParsedMessage,
        recipient: str,
        probe: bool = False,
        ahead: RoutingAhead | None = None,
        send: bool = True,
    ) -> Handling:
        """A reference, the routing and what to send (nothing when backfilling). A probe
        is the mailbox's own service's: never routed, never forwarded. ``ahead``: the
        facts already read and the decision made by the routing helper (a large batch)."""
        # The year of Paris's date of receipt, the one the AR prints: not of the zone the
        # IMAP server stamps INTERNALDATE in (on UTC, New Year's first hour was last year's).
        year = mail.internaldate.astimezone(self.calendar.zone).year
        reference = rec.reference(self.config.sender.reference_prefix, year)
        facts = ahead.facts if ahead is not None else routing_input(self.config, mailbox, parsed)
        routing: RoutingDecision | None = None
        if self.config.routing is not None and not probe:
            routing = self._routing_decision(facts, ahead)
        if not (self.send and send):
            return Handling(reference, routing, facts.language)
        received = Received(
            mailbox,
            mail.raw,
            parsed,
            mail.internaldate,
            reference,
            recipient,
            facts.language,
            mail.size,
        )
        return Handling(reference, routing, facts.language, self.planner.plan(received, routing))

    def _routing_decision(self, facts: RoutingInput, ahead: RoutingAhead | None) -> RoutingDecision:
        """The helper's decision (one started with the worker takes a mail that was not
        sent ahead too: a quarantined mail's retry), or the routing compiled here, on first
        need, decides (``IntakeSetup.routing``)."""
        pool = self.routing_pool
        if ahead is None and pool is not None and self._helper_decides() and pool.usable(1):
            ahead = pool.ahead([facts])[0]
        if ahead is not None and self._helper_decides():
            return ahead.decision(self._compiled_routing)
        return decide(facts, self._compiled_routing())


def _written_again(rec: Direct, parent_pk: int, message_pk: int, received_at: datetime) -> None:
    """The citizen wrote again about ``parent_pk`` (the follow-up ``message_pk``): one more
    relance while it is unanswered, and a message an agent closed as needing no reply is
    reopened (back in the queue, the alerts and the figures: left closed, nobody would see
    the relance). After an answer it is no relance and the answer still counts, but it is
    mail for an agent to read (the citizen contests a re-orientation, sends the documents
    asked for, or thanks): the message is back in its service's queue as new mail from the
    citizen (``written_again_at``) until an agent replies again or marks it read. Thanks
    are not told apart by their text: the agent clears them in one click."""
    rec.tx.count_relance(parent_pk, received_at)
    if rec.tx.reopen_closed(parent_pk):
        detail = json.dumps({"follow_up": message_pk})
        rec.events(parent_pk, (EventKind.REOPENED, detail))
    elif rec.tx.mark_written_again(parent_pk, received_at):
        detail = json.dumps({"follow_up": message_pk, "answered": True})
        rec.events(parent_pk, (EventKind.REOPENED, detail))


def log_outcome(outcome: Outcome) -> None:
    """One line per mail, at DEBUG: the poller logs one summary per batch at INFO."""
    log.debug(
        "message",
        extra={
            "mailbox": outcome.mailbox,
            "uid": outcome.uid,
            "reference": outcome.reference or "-",
            "decision": outcome.decision,
            "reason": ",".join(outcome.reasons),
        },
    )


def _queue(rec: Direct, message_pk: int, mail: IncomingMail, plan: Plan) -> None:
    if plan.reoriented_to:
        # Answered by mailbot on receipt: a 0-day delay, whenever the mail is processed.
        rec.replied(message_pk, mail.internaldate, REORIENTATION_REPLY)
    rec.queue(message_pk, plan.mails)


def _route_label(plan: Plan | None, routing: RoutingDecision | None) -> str:
    if plan is not None and plan.transferred_to:
        return f"→ {plan.transferred_to}"
    if plan is not None and plan.reoriented_to:
        return f"↪ {plan.reoriented_to}"
    if routing is not None and routing.to_check:
        return f"? {routing.service} (to check)"
    return routing.service if routing else ""


def _plan_events(plan: Plan | None) -> list[tuple[EventKind, str]]:
    if plan is None:
        return []
    found = []
    if plan.transferred_to:
        found.append((EventKind.TRANSFERRED, plan.transferred_to))
    if plan.reoriented_to:
        # Answered at once by mailbot: counted as an automatic reply with a 0-day delay.
        found.append((EventKind.REORIENTED, plan.reoriented_to))
    return found


def _decision_event(row: NewMessage) -> EventKind:
    """The event of the decision; for a mail acknowledged by the database lost before a
    restore, the AR it presumably sent (the console's thread says so, not « préparé »)."""
    if row.ar_status == ArStatus.RESTORED:
        return EventKind.AR_PRESUMED_SENT
    return DECISION_EVENTS[row.decision]


def _language(handling: Handling, decision: ArDecision, parsed: ParsedMessage) -> str | None:
    """The language acknowledging detected; a follow-up's detected too (it gets no AR, but
    the console shows its subject to agents and marks it with its language, RGAA 8.7)."""
    if handling.language is None and decision.follow_up_of:
        return mail_language(parsed)
    return handling.language
