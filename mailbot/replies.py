"""What mailbot sends about one acknowledged mail, decided by its routing.

* handled by the mailbox's own service: the AR;
* routed to another service: **one** mail to the citizen that is both the AR and the
  transfer notice, plus a forward of the original to the service's configured addresses;
* for another administration: one re-orientation reply (it acknowledges receipt too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from mailbot.config import Config, ServiceConfig
from mailbot.forward import build_forward, cover_note
from mailbot.message import ParsedMessage
from mailbot.render import Renderer, answer_deadline, ar_variables, build_email, date_fr
from mailbot.routing import RoutingDecision
from mailbot.translations import Translation


@dataclass(frozen=True)
class Queued:
    kind: str  # "ar" (AR, AR + transfer notice, or re-orientation) or "forward"
    recipient: str
    envelope_from: str
    message_id: str
    raw: bytes


@dataclass(frozen=True)
class Plan:
    mails: tuple[Queued, ...]
    transferred_to: str | None
    reoriented_to: str | None


def _service_variables(service: ServiceConfig, fallback_email: str) -> dict[str, object]:
    return {
        "name": service.name,
        "postal_address": service.postal_address,
        "phone": service.phone,
        "hours": service.hours,
        "website": service.website,
        "email": service.email or (service.addresses[0] if service.addresses else fallback_email),
    }


class Replies:
    """Plans the mails about one acknowledged message.

    Which paragraphs are translated, and how, is the templates' business (their meta.yaml
    and templates/i18n/): the renderer is given the citizen's language and does the rest.
    ``translations`` is accepted for callers that load them; the renderer has its own.
    """

    def __init__(
        self,
        config: Config,
        renderer: Renderer,
        translations: Mapping[str, Translation] | None = None,
    ) -> None:
        self.config = config
        self.renderer = renderer

    def plan(
        self,
        mailbox: str,
        raw: bytes,
        parsed: ParsedMessage,
        received_at: datetime,
        reference: str,
        recipient: str,
        routing: RoutingDecision | None,
        language: str | None = "fr",
    ) -> Plan:
        if (
            routing is not None
            and routing.reorient
            and not routing.to_check
            and self.config.routing
        ):
            target = self.config.routing.reorientation[routing.reorient]
            variables: dict[str, object] = {
                "reference": reference,
                "received_at": received_at,
                "original_subject": parsed.subject,
                "target": target.model_dump(),
                "prefecture": self.config.prefecture.model_dump(),
            }
            reply = self._citizen_mail(
                mailbox, parsed, recipient, "reorientation", variables, language
            )
            return Plan((reply,), None, routing.reorient)
        variables = ar_variables(
            self.config,
            mailbox,
            reference=reference,
            received_at=received_at,
            original_subject=parsed.subject,
        )
        service = self.config.services.get(routing.service) if routing else None
        transfer = routing is not None and routing.transfer_allowed and service is not None
        box = self.config.mailboxes[mailbox]
        transferred = bool(transfer and service is not None and service.addresses)
        if transferred and service is not None:
            variables["service"] = _service_variables(service, box.address)
            variables["transferred"] = True
        if transferred and service is not None:
            ar = self._citizen_mail(
                mailbox, parsed, recipient, box.ar_template, variables, language
            )
            assert routing is not None
            forwards = tuple(
                self._forward(mailbox, raw, parsed, received_at, reference, recipient, routing, to)
                for to in service.addresses
            )
            return Plan((ar, *forwards), routing.service, None)
        template = self.config.mailboxes[mailbox].ar_template
        return Plan(
            (self._citizen_mail(mailbox, parsed, recipient, template, variables, language),),
            None,
            None,
        )

    def _citizen_mail(
        self,
        mailbox: str,
        parsed: ParsedMessage,
        recipient: str,
        template: str,
        variables: dict[str, object],
        language: str | None,
    ) -> Queued:
        box = self.config.mailboxes[mailbox]
        sender = self.config.sender
        mail = build_email(
            self.renderer.render(template, variables, language=language),
            from_address=box.address,
            from_name=sender.from_name,
            to=recipient,
            message_id_domain=sender.message_id_domain,
            in_reply_to=parsed.message_id,
            references=parsed.references,
            loop_header_value=sender.loop_header_value,
        )
        return Queued(
            "ar", recipient, sender.envelope_from, str(mail["Message-ID"]), mail.as_bytes()
        )

    def _forward(
        self,
        mailbox: str,
        raw: bytes,
        parsed: ParsedMessage,
        received_at: datetime,
        reference: str,
        citizen: str,
        routing: RoutingDecision,
        to: str,
    ) -> Queued:
        box = self.config.mailboxes[mailbox]
        sender = self.config.sender
        note = cover_note(
            reference=reference,
            received_at=date_fr(received_at, timezone=self.config.timezone),
            deadline=date_fr(
                answer_deadline(received_at, self.config.timezone),
                timezone=self.config.timezone,
                style="date",
            ),
            service_name=self.config.services[routing.service].name,
            citizen=citizen,
            mailbox_address=box.address,
            category=routing.category,
            tracking_address=sender.tracking_address,
        )
        message_id, forward = build_forward(
            raw,
            reference=reference,
            subject=parsed.subject,
            note=note,
            from_address=box.address,
            from_name=sender.from_name,
            to=to,
            reply_to=citizen,
            message_id_domain=sender.message_id_domain,
            loop_header_value=sender.loop_header_value,
            date=datetime.now(UTC),
        )
        return Queued("forward", to, box.address, message_id, forward)
