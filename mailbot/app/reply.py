"""An agent's reply to a tracked message: a standard reply (a template the agent fills) or
a free reply (the agent's own text), previewed, then sent.

Both are signed and threaded the same way: the agent's signature (CRPA L111-2: first and
last name, function, administrative address) is checked first and a reply whose
signature would lack an element is refused, naming it; the reply goes from the mailbox
the citizen wrote to, in the thread of their message (In-Reply-To/References, ``[REF]``
in the subject), to the address the AR went to. Sending queues it with a ``reply_queued``
event; once the server accepts it, it is the reply the indicators count (``reply_sent``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from mailbot.app.message_view import service_of
from mailbot.app.outgoing import Queued, enqueue
from mailbot.app.requests import (
    REPLYING,
    AgentLookup,
    MessageRef,
    find_agent,
    once,
    owner,
    permit,
    previous,
    service_label,
    tracked_message,
)
from mailbot.config import Agent, Config
from mailbot.core.message import threading_id
from mailbot.core.statuses import ANSWERS, EventKind, OutboxKind
from mailbot.errors import (
    AnsweredMeanwhileError,
    RequestError,
    SignatureLostError,
    TemplateNotAllowedError,
)
from mailbot.mail.compose import Composer, OutgoingMail
from mailbot.render.catalogue import TemplateMeta
from mailbot.render.edited import edited_mail, lost_elements, normalised
from mailbot.render.rendering import RenderedMail
from mailbot.render.templates import Renderer
from mailbot.render.variables import agent_variables
from mailbot.store import Store, Transaction
from mailbot.store import console as stored

log = logging.getLogger(__name__)

FREE_TEMPLATE = "reponse-libre"  # the free reply: the agent's text in the standard frame
NOTICE_TEMPLATE = "notification-transfert"  # the transfer notice: sent by a transfer alone
FREE_TEXT = "texte"  # ... and the variable that holds that text
GREETING_NAME = "usager_nom"  # filled with the name the citizen's mail showed
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
SIGNATURE = ("first_name", "last_name", "function", "service", "postal_address", "phone")


@dataclass(frozen=True)
class Draft:
    """What the agent wants to send: a template and the variables they fill in, or, for a
    free reply, their own text (it goes into the ``reponse-libre`` template)."""

    template: str = FREE_TEMPLATE
    variables: Mapping[str, object] = field(default_factory=dict)
    text: str | None = None  # the agent's edit of the rendered text (None: not edited)

    @classmethod
    def standard(
        cls, template: str, variables: Mapping[str, object] | None = None, text: str | None = None
    ) -> Draft:
        return cls(template, dict(variables or {}), text)

    @classmethod
    def free(cls, text: str) -> Draft:
        """The agent's text as paragraphs the template lays out: LF line ends, no trailing
        spaces, one blank line between paragraphs."""
        lines = [
            line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        ]
        return cls(
            FREE_TEMPLATE, {FREE_TEXT: _PARAGRAPH_BREAK.sub("\n\n", "\n".join(lines)).strip()}
        )


@dataclass(frozen=True)
class Preview:
    """A mail as it would leave: its subject, text and HTML parts, and who would get it."""

    subject: str
    text: str
    html: str
    recipients: tuple[str, ...]
    edited: bool = False  # the agent changed the template's text
    attachments: tuple[str, ...] = ()  # file names, as the citizen will see them


@dataclass(frozen=True)
class Sent:
    """A request done: the outbox ids of what it queued (delivery follows), and whether
    it had been done before under the same idempotency key (then nothing new was queued,
    and ``outbox_ids`` holds the first mail the first request queued, if any)."""

    outbox_ids: tuple[int, ...]
    repeated: bool = False


def preview_of(mail: OutgoingMail, recipients: tuple[str, ...], edited: bool = False) -> Preview:
    """What the mail shows, read back from its bytes (what is seen is what is sent)."""
    parsed = mail.parsed()
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    return Preview(
        subject=str(parsed["Subject"]),
        text=text.get_content() if text is not None else "",
        html=html.get_content() if html is not None else "",
        recipients=recipients,
        edited=edited,
        attachments=tuple(part.get_filename() or "" for part in parsed.iter_attachments()),
    )


class Replies:
    """Standard and free replies to tracked messages, for the CLI and the web console."""

    def __init__(
        self, config: Config, store: Store, renderer: Renderer, agents: AgentLookup
    ) -> None:
        self.config = config
        self.store = store
        self.renderer = renderer
        self.agents = agents
        self.composer = Composer.from_config(config)

    def preview(self, agent_id: str, message: MessageRef, draft: Draft) -> Preview:
        """The reply as the citizen would get it; nothing is queued or recorded."""
        row = tracked_message(self.store, message)
        mail, edited = self._build(agent_id, row, draft)
        return preview_of(mail, (row.sender,), edited)

    def send(
        self,
        agent_id: str,
        message: MessageRef,
        draft: Draft,
        key: str | None = None,
        since: int | None = None,
    ) -> Sent:
        """Queue the reply (once per ``key``), with a ``reply_queued`` event naming the
        agent and the template. ``since``: the message's latest answer event when the
        agent's form was shown; AnsweredMeanwhileError when an answer was recorded after
        it, checked in the very transaction that queues (the message's row locked): two
        forms sent at the same instant never both reach the citizen."""
        done = previous(self.store, EventKind.REPLY_QUEUED, key, agent=agent_id)
        if done is not None:
            return Sent((done,) if done else (), repeated=True)
        row = tracked_message(self.store, message)
        mail, edited = self._build(agent_id, row, draft)
        agent = find_agent(self.config, self.agents, agent_id)
        meta = self.renderer.meta(draft.template)
        box = self.config.mailboxes[row.mailbox]
        queued = Queued.of(OutboxKind.REPLY, mail, row.sender, box.address)
        detail = json.dumps(
            {"agent": agent_id, "template": draft.template, "edited": edited}, ensure_ascii=False
        )

        def record(tx: Transaction) -> int:
            # Again where it is queued, on the service read there: moved meanwhile?
            allowed(self.config, agent_id, agent, owner(tx, row), meta)
            if since is not None and stored.events_after(tx.conn, row.id, since, ANSWERS):
                raise AnsweredMeanwhileError(row.reference or f"#{row.id}")
            (outbox_id,) = enqueue(tx, row.id, [queued])
            tx.add_event(row.id, EventKind.REPLY_QUEUED, detail)
            return outbox_id

        outbox_id, repeated = once(self.store, EventKind.REPLY_QUEUED, key, record, agent=agent_id)
        return Sent((outbox_id,) if outbox_id else (), repeated)

    def _build(self, agent_id: str, row: sa.Row[Any], draft: Draft) -> tuple[OutgoingMail, bool]:
        """The mail, and whether it carries the agent's edit of the template's text."""
        agent = find_agent(self.config, self.agents, agent_id)
        meta = self.renderer.meta(draft.template)
        allowed(self.config, agent_id, agent, row, meta)
        signature = signature_of(self.config, agent_id, agent, meta)
        if draft.template == FREE_TEMPLATE and not str(draft.variables.get(FREE_TEXT, "")).strip():
            raise RequestError(
                "text", "''", "a free reply needs its text", shown="écrivez le texte de la réponse."
            )
        variables: dict[str, object] = {
            "reference": row.reference,
            "received_at": row.received_at,
            "original_subject": row.subject,
            "agent": signature,
            "prefecture": self.config.prefecture.model_dump(),
        }
        if row.sender_name and GREETING_NAME in {*meta.required, *meta.optional}:
            variables[GREETING_NAME] = row.sender_name
        variables.update(draft.variables)
        variables.update(_listed(meta, variables))
        rendered, edited = _with_edit(
            self.renderer.render(draft.template, variables), draft.text, signature, meta
        )
        thread = thread_of(row)
        mail = self.composer.to_citizen(
            rendered,
            mailbox_address=self.config.mailboxes[row.mailbox].address,
            to=row.sender,
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            automatic=False,
            attachments=meta.attachments,
        )
        return mail, edited


class Thread(NamedTuple):
    """The In-Reply-To and References of a mail answering the citizen's."""

    in_reply_to: str | None
    references: list[str]


def thread_of(row: sa.Row[Any]) -> Thread:
    """How a mail answering the citizen's threads (RFC 5322 §3.6.4): In-Reply-To their
    Message-ID; References their mail's References (or In-Reply-To) as recorded, then its
    Message-ID (``Composer`` adds it); a row recorded before schema 0027, the Message-ID
    alone. A Message-ID longer than ``stored_id`` keeps is read as written from
    ``full_message_id``; a row holding only its hash (recorded before schema 0028, or an
    identifier no header line holds) gives none: the mail leaves without it, with a
    WARNING that names the row, not the identifier (it may hold personal data)."""
    parent = threading_id(row.full_message_id or row.message_id)
    if row.message_id and parent is None:
        log.warning(
            "message %s (%s): its Message-ID is kept as a hash only (too long for a header"
            " line, or recorded before schema 0028): the reply is threaded without it",
            row.id,
            row.reference or "no reference",
        )
    return Thread(parent, [*(row.thread_references or "").split(), *([parent] if parent else [])])


def is_reply_template(meta: TemplateMeta) -> bool:
    """A template an agent signs (it takes ``agent``), other than the free reply and the
    transfer notice (signed by the agent who transfers, sent by the transfer alone)."""
    return meta.name not in (FREE_TEMPLATE, NOTICE_TEMPLATE) and "agent" in meta.required


def allowed(config: Config, agent_id: str, agent: Agent, row: Any, meta: TemplateMeta) -> None:
    """Refuse a reply the agent may not send, whichever face asks (the console offered
    only these; ``mailbot reply`` names any agent and template): one their role may not
    send (agents.yaml's ``role``, core/permissions: a quality or admin agent replies to
    no one) or on the mail of a service that is not theirs (agents.yaml's
    ``service``/``services``): RequestError naming agent, action and service; or with a
    template other than the free reply that is no reply or whose scope (meta.yaml) keeps
    it from the message's mailbox or service (TemplateNotAllowedError, naming both).
    ``row``: the message's, or its ``owner`` as the transaction that queues reads it."""
    service = service_of(config, row)
    permit(config, agent_id, agent, REPLYING, service)
    if meta.name == FREE_TEMPLATE:
        return
    if not is_reply_template(meta) or not meta.scope.allows(mailbox=row.mailbox, service=service):
        raise TemplateNotAllowedError(
            meta.name,
            service,
            row.mailbox,
            shown=f"le modèle « {meta.title or meta.name} » ne sert pas pour les courriels du"
            f" service « {service_label(config, service)} » : choisissez un autre modèle ou"
            " écrivez une réponse libre.",
        )


def _listed(meta: TemplateMeta, variables: Mapping[str, object]) -> dict[str, list[str]]:
    """A list variable typed as text — the console's box, ``mailbot reply --var`` — as its
    items, one per line, blank lines left out (« demande-precisions »'s missing elements:
    neither face can give a list, and the template refused the text)."""
    specs = {**meta.required, **meta.optional}
    return {
        name: [line.strip() for line in value.splitlines() if line.strip()]
        for name, value in variables.items()
        if isinstance(value, str) and name in specs and specs[name].type == "list"
    }


def _with_edit(
    rendered: RenderedMail, text: str | None, signature: Mapping[str, object], meta: TemplateMeta
) -> tuple[RenderedMail, bool]:
    """The agent's edit in place of the rendered text, if they changed it (whether they
    did is part of the record). Refused when it is empty or lost part of the signature the
    rendered text held (SignatureLostError naming the elements): the agent's text is data,
    never a template."""
    if text is None or normalised(text) == normalised(rendered.text):
        return rendered, False
    if not normalised(text).strip():
        raise RequestError(
            "text", "''", "the edited text is empty", shown="le texte de la réponse est vide."
        )
    spec = meta.required.get("agent") or meta.optional.get("agent")
    wanted = spec.fields if spec is not None and spec.fields else SIGNATURE
    elements = {name: str(signature.get(name) or "") for name in wanted}
    lost = lost_elements(rendered.text, text, elements)
    if lost:
        raise SignatureLostError(lost)
    return edited_mail(rendered, text), True


def missing_signature(config: Config, agent: Agent, meta: TemplateMeta) -> list[str]:
    """The signature's elements the template needs and the agent's profile lacks."""
    signature = agent_variables(agent, config)
    spec = meta.required.get("agent") or meta.optional.get("agent")
    wanted = spec.fields if spec is not None and spec.fields else SIGNATURE
    return [name for name in wanted if not str(signature.get(name) or "").strip()]


def signature_of(
    config: Config, agent_id: str, agent: Agent, meta: TemplateMeta
) -> dict[str, object]:
    """The ``agent`` mapping that signs a mail of ``meta``'s template (a reply, an agent's
    transfer notice); RequestError naming what lacks (and where to add it) when it would
    be incomplete: mailbot never sends a citizen an incomplete signature."""
    signature = agent_variables(agent, config)
    missing = missing_signature(config, agent, meta)
    if missing:
        where = ", ".join(f"agent.{name}" for name in missing)
        raise RequestError(
            "agent",
            agent_id,
            f"the signature lacks {where} (agents.yaml for the agent, rules.yaml for the "
            f"service {agent.service}): no mail to a citizen is sent without it",
            shown="votre signature est incomplète : aucun courriel n'est envoyé à un usager"
            " sans elle ; demandez à l'administrateur de mailbot de compléter votre profil"
            " ou celui de votre service.",
        )
    return signature
