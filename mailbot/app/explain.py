"""Why mailbot would do what it does with a message: AR decision and routing, no side effect.

Used by `mailbot explain` and by the routing accuracy test, so that what is measured is
exactly what agents see.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mailbot.config import Config
from mailbot.core.facts import compiled_routing, policy_context, routing_input
from mailbot.core.message import parse_message
from mailbot.core.policy import ArDecision, decide_ar
from mailbot.core.routing import CompiledRouting, RoutingDecision, decide, implicit_decision
from mailbot.mail.relay_auth import RelayVerifier

__all__ = ["Explanation", "compiled_routing", "explain", "format_text", "guess_mailbox"]


@dataclass(frozen=True)
class Implicit:
    """The declaration an AR follows: for which service and category, what silence means
    (``acceptation`` or ``rejet``) and after how many months from the receipt."""

    service: str
    category: str
    decision: str
    months: int


@dataclass(frozen=True)
class Explanation:
    mailbox: str
    subject: str
    language: str | None
    ar: ArDecision
    routing: RoutingDecision | None
    # The model's complaint head: the bar it must reach for the complaint category, and the
    # one at which it gives that category alone (issue 13); None without a model.
    complaint_model_min: float | None = None
    complaint_model_sure: float | None = None
    # What the AR says the silence of the administration will mean (CRPA L112-11), as
    # declared for the service and category the mail is recorded under
    # (routing.implicit_decisions); None when nothing is declared for them, or no AR.
    implicit_decision: Implicit | None = None

    def as_dict(self) -> dict[str, Any]:
        routing = self.routing
        return {
            "mailbox": self.mailbox,
            "subject": self.subject,
            "language": self.language,
            "ar": self.ar.send,
            "ar_reasons": list(self.ar.reasons),
            "ar_notes": list(self.ar.notes),
            "service": routing.service if routing else None,
            "category": routing.category if routing else None,
            "priority": routing.priority if routing else None,
            "reorient": routing.reorient if routing else None,
            "actions": routing.actions if routing else [],
            "scores": dict(routing.scores) if routing else {},
            "rule_hits": [
                {"rule": hit.rule, "matched": hit.matched, "detail": hit.detail}
                for hit in (routing.rule_hits if routing else ())
            ],
            # issue 13: the model's top three per head, how sure, and a weak decision held
            "model": _model_part(routing, self.complaint_model_min, self.complaint_model_sure),
            "to_check": routing.to_check if routing else False,
            "implicit_decision": (
                dataclasses.asdict(self.implicit_decision) if self.implicit_decision else None
            ),
        }


def _model_part(
    routing: RoutingDecision | None, complaint_min: float | None, complaint_sure: float | None
) -> dict[str, Any] | None:
    if routing is None or not routing.model:
        return None
    gated = "complaint" in routing.confidence
    return {
        **{head: [[label, p] for label, p in top] for head, top in routing.model.items()},
        "confidence": dict(routing.confidence),
        "complaint_model_min": complaint_min if gated else None,
        "complaint_model_sure": complaint_sure if gated else None,
        "strong": list(routing.strong),
    }


def explain(
    config: Config, routing: CompiledRouting | None, mailbox: str, raw: bytes
) -> Explanation:
    relays = config.policy.contact_form_relays
    parsed = RelayVerifier(relays).verify(raw, parse_message(raw))
    ar = decide_ar(parsed, policy_context(config, mailbox))
    facts = routing_input(config, mailbox, parsed)
    decision = decide(facts, routing) if routing else None
    settings = routing.config.model if routing else None
    low, sure = (
        (settings.complaint_model_min, settings.complaint_model_sure) if settings else (None, None)
    )
    return Explanation(
        mailbox,
        parsed.subject,
        facts.language,
        ar,
        decision,
        low,
        sure,
        _implicit(config, mailbox, decision) if ar.send else None,
    )


def _implicit(config: Config, mailbox: str, decision: RoutingDecision | None) -> Implicit | None:
    """The implicit decision the AR announces, as the planner (app/acknowledge) finds it."""
    if decision is None or config.routing is None:
        return None
    own = config.mailboxes[mailbox].service
    declared = implicit_decision(config.routing, own, decision)
    if declared is None:
        return None
    service = decision.recorded_service(own)
    return Implicit(service, decision.category, declared.decision, declared.delay)


def guess_mailbox(config: Config, raw: bytes) -> str:
    """The mailbox a stray .eml was sent to, from its To/Cc; the first mailbox otherwise."""
    parsed = parse_message(raw)
    addressed = {*parsed.to, *parsed.cc, *parsed.resent_to}
    for name, box in config.mailboxes.items():
        if addressed & set(box.own_addresses):
            return name
    return next(iter(config.mailboxes))


def _model_lines(e: dict[str, Any]) -> list[str]:
    model = e["model"]
    if not model:
        return []
    lines = []
    for head in ("service", "category", "reorient"):
        if head in model:
            top = ", ".join(f"{label} {p:.0%}" for label, p in model[head])
            lines.append(f"  model:    {head}: {top}")
    sure = model["confidence"]
    if "complaint" in sure:
        lines.append(_complaint_line(sure["complaint"], model))
    lines.append(
        f"  combined: service {sure.get('service', 0):.0%}, category {sure.get('category', 0):.0%}"
        + (f"   strong rule: {', '.join(model['strong'])}" if model["strong"] else "")
    )
    if e["to_check"]:
        lines.append(
            "  TO CHECK: the decision is weak; the mail stays with the mailbox's own service"
            " (no transfer, no re-orientation) for an agent to check"
        )
    return lines


def _implicit_lines(e: dict[str, Any]) -> list[str]:
    declared = e["implicit_decision"]
    if declared is None:
        return []
    where = f"routing.implicit_decisions.{declared['service']}.{declared['category']}"
    return [
        f"  implicit: {declared['decision']} after {declared['months']} month(s) from receipt"
        f" ({where}; said in the AR)"
    ]


def _complaint_line(probability: float, model: dict[str, Any]) -> str:
    """What the complaint head's probability allows: the category, or not, or alone."""
    low, high = model["complaint_model_min"], model["complaint_model_sure"]
    if high is not None and probability >= high:
        verdict = f"at least {high:.0%}: the category is reclamation"
    elif probability >= low:
        verdict = f"at least {low:.0%}: the category may be reclamation"
    else:
        verdict = f"below {low:.0%}: the category cannot be reclamation"
    return f"  model:    complaint: {probability:.0%} ({verdict})"


def format_text(path: str, explanation: Explanation) -> str:
    e = explanation.as_dict()
    lines = [
        f"{path}",
        f"  mailbox:  {e['mailbox']}   language: {e['language'] or '?'}",
        f"  AR:       {'yes' if e['ar'] else 'no'} ({', '.join(e['ar_reasons'])})",
        *(f"            {note}" for note in e["ar_notes"]),
        f"  service:  {e['service']}   category: {e['category']}   priority: {e['priority']}",
        f"  actions:  {', '.join(e['actions'])}",
        f"  scores:   {', '.join(f'{k}={v}' for k, v in e['scores'].items()) or '-'}",
        *_model_lines(e),
        *_implicit_lines(e),
        "  rules:",
    ]
    for hit in e["rule_hits"]:
        mark = "✔" if hit["matched"] else "·"
        detail = f"  ({hit['detail']})" if hit["detail"] else ""
        lines.append(f"    {mark} {hit['rule']}{detail}")
    return "\n".join(lines)
