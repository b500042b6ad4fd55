"""What the message page's answer section needs: the standard replies that fit (the
suggested one first, filtered by a search), the chosen one's variables, pre-filled, and
whether the agent's signature is complete (else sending is refused, naming what lacks)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from mailbot.app import answer_form
from mailbot.app.reply import FREE_TEMPLATE, Replies, missing_signature
from mailbot.errors import MailbotError
from mailbot.render.catalogue import TemplateMeta
from mailbot.web.access import current_agent
from mailbot.web.authz import Action
from mailbot.web.backend import agents, backend

SIGNATURE_LABELS = {
    "first_name": "prénom",
    "last_name": "nom",
    "function": "fonction",
    "service": "nom du service",
    "postal_address": "adresse postale du service",
    "phone": "téléphone du service",
    "website": "site internet du service",
}


def signature_gaps(request: Request, meta: TemplateMeta) -> list[str]:
    """The signature's missing elements, in French (empty: complete)."""
    app = backend(request)
    principal = current_agent(request)
    agent = agents(request)(principal.agent_id)
    if agent is None:
        return ["profil d'agent (agents.yaml)"]
    return [SIGNATURE_LABELS.get(m, m) for m in missing_signature(app.config, agent, meta)]


def allowed_templates(request: Request, row: Any, service: str) -> dict[str, TemplateMeta]:
    """The templates this message may be answered with (standard ones and the free one)."""
    app = backend(request)
    names = [c.name for c in answer_form.choices(app.renderer, row.mailbox, service, None)]
    return {name: app.renderer.meta(name) for name in [*names, FREE_TEMPLATE]}


def rendered_text(request: Request, row: Any, meta: TemplateMeta, filled: dict[str, str]) -> str:
    """The text the form's values give, rendered by the sending code, to fill the textarea
    the agent may edit ("" while it cannot be rendered: a required variable is empty)."""
    app = backend(request)
    replies = Replies(app.config, app.store, app.renderer, agents(request))
    try:
        draft = answer_form.draft_of(meta, filled)
        return replies.preview(current_agent(request).agent_id, row.id, draft).text
    except MailbotError:
        return ""


def answer_context(
    request: Request,
    row: Any,
    service: str,
    state: int,
    values: dict[str, str] | None = None,
    invalid: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The answer section's context (``{"answer": None}`` when the agent may not reply);
    ``invalid`` the refused form's errors, by the id of the input they are about."""
    if not current_agent(request).can(Action.REPLY, service):
        return {"answer": None}
    app = backend(request)
    search = request.query_params.get("recherche", "")[:200]
    options = answer_form.choices(app.renderer, row.mailbox, service, row.category, search)
    every = allowed_templates(request, row, service)
    wanted = (values or {}).get("modele") or request.query_params.get("modele", "")
    name = wanted if wanted in every and wanted != FREE_TEMPLATE else ""
    if not name:
        suggested = [c.name for c in options if c.suggested] or [c.name for c in options]
        name = suggested[0] if suggested else ""
    meta = every[name] if name else None
    free = every[FREE_TEMPLATE]
    filled = answer_form.prefilled(meta, row) if meta else {}
    filled.update({k: v for k, v in (values or {}).items() if k != "modele"})
    if meta is not None and answer_form.EDITED not in filled:
        text = rendered_text(request, row, meta, filled)
        filled.update({answer_form.EDITED: text, answer_form.BASE: text})
    return {
        "answer": {
            "options": options,
            "search": search,
            "chosen": meta,
            "fields": answer_form.fields(meta) if meta else [],
            "free_fields": answer_form.fields(free),
            "filled": filled,
            "gaps": signature_gaps(request, meta or free),
            "state": state,
            "invalid": invalid or {},
        }
    }
