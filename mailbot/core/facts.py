"""The pure modules' inputs, from the configuration and a parsed mail: the policy's
context, the routing's facts, the citizen's name. Shared by the intake and ``explain``,
so that what ``mailbot explain`` shows is what the intake decides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailbot.config import REORIENT_SERVICE, Config, ContactFormRelay
from mailbot.core.language import detect_language
from mailbot.core.message import BODY_TEXT_LIMIT, SUBJECT_LIMIT, ParsedMessage
from mailbot.core.policy import PolicyContext, reply_address
from mailbot.core.relays import recognised_relay
from mailbot.core.routing import CompiledRouting, RoutingInput, compile_routing, form_fields
from mailbot.core.routing_text import routing_text
from mailbot.errors import ConfigError

if TYPE_CHECKING:  # numpy: loaded with the model only (a routing helper may load it instead)
    from mailbot.core.classifier import Classifier

ROUTING_BODY_LIMIT = BODY_TEXT_LIMIT  # characters of body the routing rules read


def compiled_routing(config: Config) -> CompiledRouting | None:
    if config.routing is None:
        return None
    from mailbot.core.classifier import load as load_model

    own = {name: box.service for name, box in config.mailboxes.items()}
    # The classifier is a static file of numbers (no pickle), loaded once like the
    # language models.
    model = load_model(config.routing.model.file) if config.routing.model else None
    if model is not None:
        _check_model_labels(config, model)
    return compile_routing(config.routing, own, config.organisation.general_service, model)


def _check_model_labels(config: Config, model: Classifier) -> None:
    """ConfigError when the model names a service, category or re-orientation target
    that rules.yaml does not (a model trained for another configuration, or one renamed
    since): it would route mail to a label nothing handles. A label rules.yaml has and
    the model lacks is fine: the rules alone can give it until the next training."""
    assert config.routing is not None
    known = {
        "service": {*config.services, REORIENT_SERVICE},
        "category": set(config.routing.categories),
        "reorient": set(config.routing.reorientation),
    }
    stacks = model.meta.get("stack") or {}
    for head, allowed in known.items():
        said = set(model.heads[head].classes) if head in model.heads else set()
        said |= {str(c) for c in stacks.get(head, {}).get("classes", ())}
        unknown = sorted(said - allowed)
        if unknown:
            raise ConfigError(
                str(model.path),
                head,
                f"the routing model knows {', '.join(unknown)}, which rules.yaml does not"
                f" (known: {', '.join(sorted(allowed))}): train a model for this"
                " configuration (mailbot routing train) or name another routing.model.file",
            )


def routing_input(config: Config, mailbox: str, parsed: ParsedMessage) -> RoutingInput:
    """The facts rules test, from a parsed mail (language detected here, once).

    The text is bounded (the subject by the parser, the body here): routing and language
    detection cost in proportion to what they read.
    """
    relays = config.policy.contact_form_relays
    relayed = recognised_relay(parsed, relays) is not None
    fields = form_fields(parsed.body_text) if relayed else {}
    # Routing reads the citizen's own text; the form's Objet only through form_field rules.
    text = routing_text(parsed.body_text[:ROUTING_BODY_LIMIT], relayed_form=relayed)
    subject = "" if text.from_form else parsed.subject[:SUBJECT_LIMIT]
    return RoutingInput(
        mailbox=mailbox,
        subject=subject,
        body=text.own,
        sender=reply_address(parsed, relays) or parsed.from_address,
        language=mail_language(parsed),
        has_attachment=parsed.has_attachments,
        form_fields=fields,
        quoted=text.quoted,
    )


def mail_language(parsed: ParsedMessage) -> str | None:
    """The language the citizen wrote in, from the subject and the start of the body: what
    the AR is translated into, and what the console marks the citizen's text with."""
    return detect_language(f"{parsed.subject[:SUBJECT_LIMIT]}\n{parsed.body_text[:2000]}")


def sender_name(parsed: ParsedMessage, relays: Sequence[ContactFormRelay]) -> str | None:
    """The citizen's name as their mail client shows it, when it looks like a name."""
    name = parsed.from_name
    relay = recognised_relay(parsed, relays)
    if relay is not None and parsed.from_address == relay.address:
        name = parsed.reply_to_names[0] if parsed.reply_to_names else ""
    name = name.strip().strip("\"'")
    if not name or "@" in name or not any(c.isalpha() for c in name):
        return None
    return name


def policy_context(
    config: Config, mailbox: str, recent_ars: int = 0, thread_reference: str | None = None
) -> PolicyContext:
    """The policy's view of the configuration, plus the facts the database supplied."""
    box = config.mailboxes[mailbox]
    policy = config.policy
    return PolicyContext(
        mailbox_address=box.address,
        mailbox_aliases=frozenset(box.aliases),
        require_addressed=box.require_addressed,
        own_addresses=frozenset(config.own_addresses),
        message_id_domain=config.sender.message_id_domain,
        loop_header_value=config.sender.loop_header_value,
        contact_form_relays=policy.contact_form_relays,
        extra_system_senders=tuple(policy.extra_system_senders),
        recent_ars_to_recipient=recent_ars,
        max_ars_per_window=policy.rate_limit.max_per_sender,
        known_thread_reference=thread_reference,
        from_without_return_path=policy.answers_from,
    )
