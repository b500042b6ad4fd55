"""What mailbot sends about one acknowledged mail, decided by its routing.

* handled by the mailbox's own service: the AR;
* routed to another service: **one** mail to the citizen that is both the AR and the
  transfer notice, plus a forward of the original to the service's configured addresses
  (of its header alone, said so in the note, for a huge mail read only in part);
* for another administration: one re-orientation reply (it acknowledges receipt too).

An AR of a request the prefecture declared to give rise to an implicit decision
(``routing.implicit_decisions``, by service and category) also says what silence will
mean and when (CRPA L112-11); nothing declared, nothing said.

Which paragraphs are translated, and how, is the templates' business (their meta.yaml and
templates/i18n/): the renderer is given the citizen's language and does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailbot.app.outgoing import Queued, Transfer, forwards
from mailbot.config import Config
from mailbot.core.message import ParsedMessage
from mailbot.core.routing import RoutingDecision, implicit_decision
from mailbot.core.statuses import OutboxKind
from mailbot.mail.compose import Composer
from mailbot.render.templates import Renderer
from mailbot.render.variables import implicit_decision_variables, message_variables

REORIENTATION_TEMPLATE = "reorientation"


@dataclass(frozen=True)
class Plan:
    mails: tuple[Queued, ...]  # the mail to the citizen first
    transferred_to: str | None
    reoriented_to: str | None


@dataclass(frozen=True)
class Received:
    """The acknowledged mail, as the plan needs it."""

    mailbox: str
    raw: bytes
    parsed: ParsedMessage
    received_at: datetime
    reference: str
    recipient: str  # the citizen's address, as the policy chose it
    language: str | None
    # The mail's size on its server, larger than ``raw`` when only the start of a huge mail
    # was read (``IncomingMail.size``): its forward then carries its header alone.
    size: int = 0


class Planner:
    """Plans the mails about one acknowledged message."""

    def __init__(self, config: Config, renderer: Renderer, composer: Composer) -> None:
        self.config = config
        self.renderer = renderer
        self.composer = composer

    def plan(self, mail: Received, routing: RoutingDecision | None) -> Plan:
        if (
            routing is not None
            and routing.reorient
            and not routing.to_check
            and self.config.routing
        ):
            return self._reorientation(mail, routing.reorient)
        service = self.config.services.get(routing.service) if routing else None
        transferred = bool(
            routing is not None and routing.transfer_allowed and service and service.addresses
        )
        handled_by = routing.service if transferred and routing is not None else None
        variables = self._variables(mail, handled_by)
        if handled_by is not None:
            variables["transferred"] = True
        if routing is not None and self.config.routing is not None:
            own = self.config.mailboxes[mail.mailbox].service
            declared = implicit_decision(self.config.routing, own, routing)
            if declared is not None:  # CRPA L112-11: what silence will mean, said in the AR
                variables["implicit_decision"] = implicit_decision_variables(declared)
        template = self.config.mailboxes[mail.mailbox].ar_template
        ar = self._citizen_mail(mail, template, variables)
        if handled_by is None or routing is None:
            return Plan((ar,), None, None)
        transfer = Transfer(
            mail.mailbox,
            mail.reference,
            mail.parsed.subject,
            mail.received_at,
            mail.recipient,
            handled_by,
            routing.category,
        )
        return Plan(
            (ar, *forwards(self.config, self.composer, transfer, mail.raw, mail.size)),
            handled_by,
            None,
        )

    def _reorientation(self, mail: Received, target: str) -> Plan:
        assert self.config.routing is not None
        variables = self._variables(mail)
        # Its id too: the translations name the target by it (templates/i18n, targets:).
        variables["target"] = {
            **self.config.routing.reorientation[target].model_dump(),
            "id": target,
        }
        reply = self._citizen_mail(mail, REORIENTATION_TEMPLATE, variables)
        return Plan((reply,), None, target)

    def _variables(self, mail: Received, service: str | None = None) -> dict[str, object]:
        return message_variables(
            self.config,
            mail.mailbox,
            reference=mail.reference,
            received_at=mail.received_at,
            original_subject=mail.parsed.subject,
            service=service,
        )

    def _citizen_mail(self, mail: Received, template: str, variables: dict[str, object]) -> Queued:
        built = self.composer.to_citizen(
            self.renderer.render_once(template, variables, language=mail.language),
            mailbox_address=self.config.mailboxes[mail.mailbox].address,
            to=mail.recipient,
            in_reply_to=mail.parsed.message_id,
            references=mail.parsed.references,
        )
        return Queued.of(OutboxKind.AR, built, mail.recipient, self.config.sender.envelope_from)
